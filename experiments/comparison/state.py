"""What the stages of a comparison share: the preset, the output directory, the
data and posterior, the key, and the records of the stages run so far."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import numpy as np

from weightspace import samplers
from weightspace.experiments import methods
from weightspace.experiments.comparison.settings import key_number


@dataclasses.dataclass
class Run:
    """What the stages share."""

    preset: Any
    out: Path
    data: Any
    post: Any
    key: Any
    progress: bool
    smoke: bool
    header: dict = dataclasses.field(default_factory=dict)
    records: dict = dataclasses.field(default_factory=dict)

    def run_dir(self, method: str) -> Path:
        return self.out / "runs" / method

    def relative(self, path: Path) -> str:
        """`path` relative to OUT, so an output directory can be moved."""
        return str(Path(path).relative_to(self.out))

    def stage_key(self, stage: str):
        return jax.random.fold_in(self.key, key_number(stage))

    def settings(self, method: str):
        """The settings of a registered method with a settings class of its own."""
        return self.preset.settings(method)

    def ok(self, stage: str) -> bool:
        return self.records.get(stage, {}).get("status") == "ok"

    def template(self):
        return jax.eval_shape(self.post.init, jax.random.key(0))

    def trace(self, method: str):
        """The finished run of a sampling method (memory-mapped)."""
        return samplers.load(self.run_dir(method), template=self.template())

    def predictions(self, method: str) -> np.ndarray:
        """(chain, draw, n_test, k) test-set probabilities of a method's draws."""
        read = methods.REGISTRY[method].predictions
        return read(self) if read is not None else self.trace(method).predictions

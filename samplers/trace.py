"""`Trace`: the draws of a sampler run, with leading (chain, draw) axes."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import jax
import numpy as np

from weightspace.leaf_names import leaf_name

# Our stat names -> ArviZ's conventional sample_stats names.
_ARVIZ_STATS = {"accept_prob": "acceptance_rate", "is_divergent": "diverging",
                "logdensity": "lp", "num_steps": "n_steps", "step_size": "step_size",
                "energy_error": "energy_error", "is_accepted": "is_accepted"}


@dataclasses.dataclass(frozen=True)
class Trace:
    """Draws of `num_chains` chains.

    positions: pytree like the sampled position, leaves (chain, draw, ...).
    predictions: (chain, draw, n_eval, ...) outputs on eval inputs (class
        probabilities, or predictive means for regression), or None.
    stats: dict of (chain, draw) arrays: accept_prob, is_accepted,
        is_divergent, energy_error, num_steps, step_size, logdensity.
    info: run facts (step sizes after warmup, trajectory length, run_dir, ...).
    Arrays are numpy (memory-mapped when loaded from a run directory).
    """

    positions: Any
    stats: dict
    predictions: Any = None
    info: dict = dataclasses.field(default_factory=dict)

    @property
    def num_chains(self) -> int:
        return int(np.shape(jax.tree.leaves(self.positions)[0])[0])

    @property
    def num_draws(self) -> int:
        return int(np.shape(jax.tree.leaves(self.positions)[0])[1])

    def __repr__(self) -> str:
        leaves = jax.tree.leaves(self.positions)
        size = sum(int(np.prod(np.shape(x)[2:])) for x in leaves)
        pred = ("" if self.predictions is None
                else f", predictions {tuple(np.shape(self.predictions))}")
        return (f"Trace({self.num_chains} chains x {self.num_draws} draws of "
                f"{size:,} weights{pred})")

    def to_arviz(self):
        """ArviZ InferenceData (arviz 0.x) or DataTree (arviz 1.x) with groups
        posterior (one variable per leaf, named by its key path),
        sample_stats, and predictions when present."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            import arviz as az
        posterior = {leaf_name(path): np.asarray(x) for path, x in
                     jax.tree_util.tree_leaves_with_path(self.positions)}
        stats = {_ARVIZ_STATS.get(k, k): np.asarray(v) for k, v in self.stats.items()}
        groups = {"posterior": posterior, "sample_stats": stats}
        if self.predictions is not None:
            groups["predictions"] = {"predictions": np.asarray(self.predictions)}
        if int(az.__version__.split(".")[0]) >= 1:
            return az.from_dict(groups)
        return az.from_dict(**groups)

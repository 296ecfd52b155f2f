"""The settings of a comparison: its stages (the registered methods, then the
analyses), the preset it runs (with smoke and overrides applied), its data, and
the output directory check that refuses to resume a run of other settings."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from weightspace import data as data_lib
from weightspace.experiments import presets as presets_lib
from weightspace.experiments import methods
from weightspace.jsonio import jsonable, read_json

FORMAT = 1
ANALYSES = ("rhat", "metrics", "llc", "report")
METRICS = ("accuracy", "nll", "ece", "brier", "agreement_vs_hmc", "total_variation_vs_hmc")
FIGURES = {"rhat": "rhat.png", "reliability": "reliability.png",
           "nll_vs_samples": "nll_vs_samples.png"}
# The methods compare has always run, in their order: with the analyses they keep
# the stage keys 0-9 they have always had (see key_number).
BUILT_IN = ("hmc", "sgd", "deep_ensemble", "sgld", "csghmc", "mfvi")
# The order in which the llc stage visits the built-in methods' positions.
LLC_ORDER = ("sgd", "deep_ensemble", "hmc")


def stages() -> tuple[str, ...]:
    """Every stage, in the order they run: the registered methods, then the analyses."""
    return (*methods.names(), *ANALYSES)


def key_number(stage: str) -> int:
    """The number a stage's key folds in: the built-in methods and the analyses
    keep 0-9, methods registered later follow from 10 in their order, so adding a
    method changes no other stage's draws."""
    later = tuple(m for m in methods.names() if m not in BUILT_IN)
    return (*BUILT_IN, *ANALYSES, *later).index(stage)


def llc_methods() -> tuple[str, ...]:
    """The methods at whose positions the llc stage estimates LLCs."""
    named = [m for m in methods.names() if methods.REGISTRY[m].llc_positions is not None]
    return (*(m for m in LLC_ORDER if m in named), *(m for m in named if m not in LLC_ORDER))


def needs(stage: str) -> tuple[str, ...]:
    """Stages `stage` cannot run without (it is skipped when one did not finish)."""
    if stage == "rhat":
        return ("hmc",)
    return methods.REGISTRY[stage].needs if stage in methods.REGISTRY else ()


def uses(stage: str) -> tuple[str, ...]:
    """Stages whose results `stage` reads when they are there. A record is
    resumed only when its needs and uses had the same statuses."""
    if stage == "metrics":
        return methods.names()
    if stage == "llc":
        return llc_methods()
    if stage == "report":
        return stages()[:-1]
    return ()


class CompareError(ValueError):
    """Bad input to `compare` (names the argument and what is allowed)."""


def _flat(tree: dict, prefix: str = "") -> dict:
    """{"preset": {"hmc": {"num_samples": 4}}} -> {"preset.hmc.num_samples": 4}."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_out(out, config: dict) -> Path:
    """`out` as a Path if it is new, empty, or an output directory of compare
    with the same settings (compare.json equal to `config`)."""
    if not isinstance(out, (str, os.PathLike)) or not str(out):
        raise CompareError(f"out={out!r} is not allowed: it must be a directory path")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CompareError(f"out={str(out)!r} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        stored = read_json(out / "compare.json", default=None)
        if stored is None:
            raise CompareError(f"out={str(out)!r} is neither empty nor an output directory of "
                               f"compare (no compare.json): choose a new or empty directory")
        stored, current = _flat(stored), _flat(json.loads(json.dumps(jsonable(config))))
        differ = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
        if differ:
            raise CompareError(
                f"out={str(out)!r} holds a comparison with other settings (compare.json "
                f"differs in {', '.join(differ)}): rerun with the stored settings to resume, "
                f"or choose another out")
    return out


def resolve_preset(preset, smoke: bool, overrides):
    """The Preset to run: `preset` (a name or a Preset), shrunk by smoke, then
    with `overrides` ({"hmc.num_samples": 20, ...}) applied."""
    try:
        p = presets_lib.get(preset)
    except ValueError as err:
        raise CompareError(str(err)) from None
    if not isinstance(smoke, bool):
        raise CompareError(f"smoke={smoke!r} is not allowed: it must be True or False")
    if smoke:
        p = presets_lib.smoke(p)
    if overrides:
        try:
            p = presets_lib.override(p, dict(overrides))
        except ValueError as err:
            raise CompareError(str(err)) from None
    return p


def load_data(p, seed: int, data_dir, mesh):
    """The preset's classification dataset, its test set cut to p.data.n_test rows."""
    ds = data_lib.load(p.data.name, seed=seed, data_dir=data_dir, n_train=p.data.n_train,
                       mesh=mesh, **dict(p.data.options))
    if ds.num_classes is None:
        raise CompareError(f"preset {p.name!r}: dataset {p.data.name!r} is a regression "
                           f"task; compare reports classification metrics (accuracy, NLL, "
                           f"ECE, Brier) and needs a classification dataset")
    if p.data.n_test is not None and p.data.n_test < len(ds.x_test):
        ds = dataclasses.replace(ds, x_test=ds.x_test[:p.data.n_test],
                                 y_test=ds.y_test[:p.data.n_test])
    return ds

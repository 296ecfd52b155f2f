"""The methods `compare` runs: one registry entry each.

A method is a stage of the comparison that samples (or trains) on the preset's
posterior into its own run directory and returns a JSON-ready result; the
analysis stages after it (rhat, metrics, llc, report) read its predictions and,
where it says so, estimate LLCs at its positions. Adding a sampler to `compare`
is one `register(Method(...))` call beside the sampler's module: the stage list,
results.json, the methods table, the figures, `--set NAME.FIELD=...` and
`--smoke` all read this registry. The built-in methods (hmc, sgd,
deep_ensemble, sgld, csghmc, mfvi) are registered by
weightspace.experiments.comparison.stages, in this order, before any other.

    @dataclasses.dataclass(frozen=True)
    class MALASettings:
        num_samples: int = 100
        step_size: float = 1e-4

    def stage(run):          # run: comparison.state.Run
        s = run.settings("mala")
        trace = mala(run.post, run.stage_key("mala"), step_size=s.step_size, ...,
                     eval_x=run.data.x_test, run_dir=run.run_dir("mala"))
        return {"run_dir": run.relative(run.run_dir("mala")), ...}

    register(Method("mala", "MALA", stage, settings=MALASettings,
                    smoke=lambda s: dataclasses.replace(s, num_samples=4)))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any

MEMBERS = ("draws", "chains")


@dataclasses.dataclass(frozen=True)
class Method:
    """A method of `compare`.

    name: its stage, its key in results.json, its run directory OUT/runs/NAME
        and its `--set NAME.FIELD=VALUE` prefix.
    label: its name in tables and figures.
    run: the stage, run(run: comparison.state.Run) -> JSON-ready result. It
        samples with run.post into run.run_dir(name) (so a killed stage resumes),
        with the key run.stage_key(name) and eval_x=run.data.x_test.
    settings: a frozen dataclass of its settings, whose defaults apply to every
        preset unless a preset gives its own (Preset.method_settings); None for the
        built-in methods, whose settings are fields of Preset (hmc, sgd, ...).
    smoke: settings -> settings for `--smoke` (a handful of steps); required
        with `settings`.
    needs: stages it cannot run without (mfvi starts at the SGD solution); it
        is skipped, with the reason, when one of them did not finish.
    members: what its running ensemble adds one at a time in nll_vs_samples:
        "draws" (a sampler's draws, all chains at once) or "chains" (a deep
        ensemble's members).
    predictions: run -> (chain, draw, n_test, classes) test probabilities; None
        reads those of the run directory's Trace.
    llc_positions: run -> [(chain, draw), ...] where the llc stage estimates
        the local learning coefficient; None: nowhere.
    """

    name: str
    label: str
    run: Callable[[Any], dict]
    settings: type | None = None
    smoke: Callable[[Any], Any] | None = None
    needs: tuple[str, ...] = ()
    members: str = "draws"
    predictions: Callable[[Any], Any] | None = None
    llc_positions: Callable[[Any], list[tuple[int, int]]] | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"name={self.name!r} is not allowed: it must be an identifier "
                             f"(it names a stage, a directory and a --set prefix)")
        if not callable(self.run):
            raise TypeError(f"run must be callable (the stage); got {self.run!r}")
        if self.members not in MEMBERS:
            raise ValueError(f"members={self.members!r} is not allowed: choose one of "
                             f"{MEMBERS}")
        if self.settings is not None:
            if not (isinstance(self.settings, type) and dataclasses.is_dataclass(self.settings)):
                raise TypeError(f"settings must be a dataclass type; got {self.settings!r}")
            if self.smoke is None:
                raise ValueError(f"method {self.name!r} has settings but no smoke: "
                                 f"--smoke must be able to shrink every method")


REGISTRY: dict[str, Method] = {}
# The analysis stages and the fields of Preset that are not methods' settings.
RESERVED = ("rhat", "metrics", "llc", "report", "name", "description", "network", "data",
            "prior_variance", "temperature", "ensemble", "method_settings")


def register(method: Method, *, replace: bool = False) -> Method:
    """Add `method` to the registry (after those already there); with replace,
    a method of the same name is replaced in its place."""
    if not isinstance(method, Method):
        raise TypeError(f"method must be a Method; got {type(method).__name__}")
    if method.name in RESERVED:
        raise ValueError(f"name={method.name!r} is not allowed: it is a stage or preset "
                         f"field of compare ({', '.join(RESERVED)})")
    if method.name in REGISTRY and not replace:
        raise ValueError(f"a method named {method.name!r} is registered already (pass "
                         f"replace=True to replace it)")
    missing = [n for n in method.needs if n not in REGISTRY and n != method.name]
    if missing:
        raise ValueError(f"method {method.name!r} needs {missing}, which are not registered "
                         f"(register them first)")
    REGISTRY[method.name] = method
    return method


def unregister(name: str) -> None:
    """Remove a registered method (one a script or test added)."""
    REGISTRY.pop(name, None)


def names() -> tuple[str, ...]:
    """The registered methods, in the order compare runs them."""
    return tuple(REGISTRY)


class _Live(Mapping):
    """A read-only view of the registry, computed when read (so a method
    registered later is in it)."""

    def __init__(self, value: Callable[[Method], Any]):
        self._value = value

    def __getitem__(self, name):
        return self._value(REGISTRY[name])

    def __iter__(self) -> Iterator[str]:
        return iter(REGISTRY)

    def __len__(self) -> int:
        return len(REGISTRY)

    def index(self, name: str) -> int:
        return names().index(name)

    def __repr__(self) -> str:
        return repr(dict(self))


# The names and labels of the registered methods, as they were before the registry
# (a tuple-like of names and a dict of labels), read live.
METHODS = _Live(lambda m: m)
LABELS = _Live(lambda m: m.label)

"""Presets of `weightspace compare`: the dataset, network, prior and every
method's settings, as frozen dataclasses.

The defaults of the settings classes are the CIFAR-10 column of Izmailov et al.
2021, Table 3 (DESIGN.md), each cited where it is set; `quick` overrides them
for a 2-core CPU. `smoke(preset)` shrinks any preset to a handful of steps on a
few rows, every stage still running, so tests prove a preset is wired end to
end. `override(preset, {"hmc.num_samples": 20})` changes single fields.

Step sizes and learning rates are in the units of the library: HMC, SGLD and
SGHMC step on the full-data log posterior; `sgd` and `mfvi` learning rates are
on the per-example loss -log p(w | D) / N, so the paper's SGD learning rate
3e-7 on the summed objective is 3e-7 * N here.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import numbers
import typing
from typing import Any

from weightspace import models
from weightspace.experiments import methods as methods_lib

CIFAR10_TRAIN = 50_000   # training rows of CIFAR-10 (tfds "train" split)
IMDB_TRAIN = 25_000      # training rows of IMDB reviews
MNIST_TRAIN = 60_000     # training rows of MNIST


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """name: a name of ws.data.NAMES (a classification dataset).
    n_train: keep a seeded random subset of this many training rows (None: all).
    n_test: evaluate on the first n_test test rows (None: all).
    options: dataset options of ws.data.load as (name, value) pairs, e.g.
        (("vocab_size", 20000), ("max_len", 400)) for imdb_reviews."""

    name: str = "digits"
    n_train: int | None = None
    n_test: int | None = None
    options: tuple = ()


@dataclasses.dataclass(frozen=True)
class HMCSettings:
    num_chains: int = 3                 # Izmailov et al. 2021, Table 3: 3 chains
    num_samples: int = 240              # Table 3: 240 samples per chain (CIFAR-10)
    num_warmup: int = 50                # Table 3: 50 burn-in iterations
    warmup: str = "no_metropolis"       # Table 3: no Metropolis correction in burn-in
    step_size: float | None = 1e-5      # Table 3 (None: found and adapted in warmup)
    trajectory_length: float | None = None  # None: (pi/2) sqrt(T prior_variance), Izmailov et al.
    max_num_steps: int = 100_000        # the paper's trajectory is ~70,000 steps of 1e-5
    thin: int = 1


@dataclasses.dataclass(frozen=True)
class SGDSettings:
    """Also the members of the deep ensemble. learning_rate is on the per-example
    loss; prior_variance None uses the preset's, else 1 / weight decay."""

    num_epochs: int = 500               # Table 3: 500 epochs
    batch_size: int = 80                # Table 3: batch 80
    learning_rate: float = 3e-7 * CIFAR10_TRAIN  # Table 3: 3e-7 on the summed objective
    momentum: float = 0.9               # Table 3: momentum 0.9
    schedule: str = "cosine"            # Table 3: cosine
    prior_variance: float | None = 1 / 10  # Table 3: weight decay 10


@dataclasses.dataclass(frozen=True)
class EnsembleSettings:
    num_members: int = 50               # Table 3: 50 SGD models


@dataclasses.dataclass(frozen=True)
class SGLDSettings:
    """Epochs are converted to transitions with the run's steps per epoch."""

    num_chains: int = 5                 # Table 3: 5 chains
    num_samples: int = 900              # Table 3: 900 samples per chain
    burnin_epochs: float = 1000         # Table 3: 1,000 burn-in epochs
    thin_epochs: float = 10             # Table 3: (10,000 - 1,000 epochs) / 900 samples
    step_size: float = 1e-6             # Table 3: step 1e-6, constant
    batch_size: int = 80                # Table 3: batch 80


@dataclasses.dataclass(frozen=True)
class CyclicalSettings:
    """Cyclical SGHMC (Zhang et al. 2020); not in Izmailov et al.'s Table 3."""

    num_chains: int = 3
    num_cycles: int = 10
    cycle_epochs: float = 50            # Zhang et al. 2020: 200 epochs over 4 cycles
    samples_per_cycle: int = 3          # Zhang et al. 2020: 3 samples per cycle
    step_size: float = 1e-6             # SGLD's step size of Table 3
    exploration: float = 0.8            # ws.samplers.cyclical's default
    friction: float = 0.1               # ws.samplers.sghmc's default (momentum 0.9)
    batch_size: int = 80                # Table 3: batch 80


@dataclasses.dataclass(frozen=True)
class MFVISettings:
    num_epochs: int = 300               # Table 3: 300 epochs
    batch_size: int = 80                # Table 3: batch 80
    learning_rate: float = 1e-4         # Table 3: Adam 1e-4, cosine
    init_scale: float = 0.1             # Table 3: variance initialized at 1e-2
    num_samples: int = 50               # Table 3: 50 predictive samples


@dataclasses.dataclass(frozen=True)
class MAMSSettings:
    """Metropolis-adjusted microcanonical sampling (ws.samplers.mams) from the
    network's initializer; not in Izmailov et al. 2021."""

    num_chains: int = 3
    num_samples: int = 240              # as HMC's Table 3 (CIFAR-10)
    num_warmup: int = 1000              # tuning transitions (ws.samplers.mams)
    thin: int = 1
    target_accept: float = 0.9          # Robnik, Cohn-Gordon and Seljak 2025
    preconditioning: str = "none"       # ws.samplers.mams's default
    max_num_steps: int = 1000
    step_size: float | None = None      # None: tuned in warmup
    L: float | None = None              # None: tuned in warmup
    num_adjusted_warmup: int | None = None  # None: ws.samplers.mams's default


@dataclasses.dataclass(frozen=True)
class MILESettings:
    """Chains started from deep-ensemble members (ws.samplers.mile; Sommer et
    al. 2025). The members train with the preset's SGD settings (sgd.*) for
    ensemble_epochs; the chains run `sampler` from them."""

    sampler: str = "mclmc"              # Sommer et al. 2025: MCLMC
    num_chains: int = 3
    num_samples: int = 240
    num_warmup: int = 1000
    thin: int = 20
    preconditioning: str = "none"       # ws.samplers.mclmc's default
    ensemble_epochs: int | None = None  # None: the preset's sgd.num_epochs
    step_size: float | None = None
    L: float | None = None


@dataclasses.dataclass(frozen=True)
class LLCSettings:
    """ws.slt.llc at the SGD solution, every deep-ensemble member and, per HMC
    chain, the draws `hmc_draws` (indices, negative from the end)."""

    num_chains: int = 4                 # ws.slt.llc's default
    num_draws: int = 200                # ws.slt.llc's default
    num_burnin: int = 100               # ws.slt.llc's default
    step_size: float = 1e-4             # ws.slt.llc's default; calibrate per network
    localization: float = 100.0         # Lau et al. 2023's gamma
    batch_size: int | None = None       # None: full batch
    hmc_draws: tuple = (-1,)            # the last draw of each chain


@dataclasses.dataclass(frozen=True)
class Preset:
    """Everything `weightspace compare` runs. network: a ws.models network
    description; prior_variance, temperature: the posterior every method
    targets (SGD may use its own prior variance, its weight decay).
    method_settings: ((name, settings), ...) for registered methods that keep
    their settings in a class of their own (ws.experiments.methods.Method); a
    method not named there runs with its class's defaults."""

    name: str
    description: str
    network: Any
    prior_variance: float
    data: DataSettings = DataSettings()
    temperature: float = 1.0
    hmc: HMCSettings = HMCSettings()
    sgd: SGDSettings = SGDSettings()
    ensemble: EnsembleSettings = EnsembleSettings()
    sgld: SGLDSettings = SGLDSettings()
    csghmc: CyclicalSettings = CyclicalSettings()
    mfvi: MFVISettings = MFVISettings()
    llc: LLCSettings = LLCSettings()
    method_settings: tuple = ()

    def __post_init__(self):
        _check(self)

    def settings(self, method: str):
        """The settings of a registered method with a settings class
        (ws.experiments.methods): this preset's (method_settings), else the
        class's defaults."""
        entry = methods_lib.REGISTRY.get(method)
        if entry is None or entry.settings is None:
            raise ValueError(f"method={method!r} is not a registered method with settings of "
                             f"its own; those are: {', '.join(_extra_methods()) or 'none'}")
        given = dict(self.method_settings).get(method)
        return entry.settings() if given is None else given

    def to_dict(self) -> dict:
        """JSON-ready: nested dicts; the network as {"type": class name, fields};
        then every registered method's settings under its name."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "method_settings":
                continue
            if f.name == "network":
                value = {"type": type(value).__name__, **_plain(value)}
            elif dataclasses.is_dataclass(value):
                value = _plain(value)
            out[f.name] = value
        for method in _extra_methods():
            out[method] = _plain(self.settings(method))
        return out


def _extra_methods() -> tuple[str, ...]:
    """Registered methods whose settings are not fields of Preset."""
    return tuple(m.name for m in methods_lib.REGISTRY.values() if m.settings is not None)


def _plain(obj) -> dict:
    """A dataclass's fields as JSON values (tuples as lists)."""
    def conv(v):
        if isinstance(v, (tuple, list)):
            return [conv(x) for x in v]
        return v
    return {f.name: conv(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


# ------------------------------------------------------------------ checks

def _check(p: Preset) -> None:
    """Errors at construction, naming the field."""
    def positive(name, value, integer=False, allow_none=False):
        if value is None and allow_none:
            return
        kind = numbers.Integral if integer else numbers.Real
        if isinstance(value, bool) or not isinstance(value, kind) \
                or not (math.isfinite(value) and value > 0):
            raise ValueError(f"preset {p.name!r}: {name}={value!r} is not allowed: it must "
                             f"be a {'positive int' if integer else 'finite number > 0'}")

    positive("prior_variance", p.prior_variance)
    positive("temperature", p.temperature)
    if p.hmc.num_chains < 2:
        raise ValueError(f"preset {p.name!r}: hmc.num_chains={p.hmc.num_chains} is not "
                         f"allowed: R-hat needs at least 2 chains (the paper runs 3)")
    for section in ("hmc", "sgld", "csghmc"):
        positive(f"{section}.num_chains", getattr(p, section).num_chains, integer=True)
    positive("hmc.num_samples", p.hmc.num_samples, integer=True)
    positive("hmc.step_size", p.hmc.step_size, allow_none=True)
    positive("hmc.trajectory_length", p.hmc.trajectory_length, allow_none=True)
    for section in ("sgd", "sgld", "csghmc", "mfvi"):
        positive(f"{section}.batch_size", getattr(p, section).batch_size, integer=True)
    positive("sgd.learning_rate", p.sgd.learning_rate)
    positive("sgd.prior_variance", p.sgd.prior_variance, allow_none=True)
    positive("ensemble.num_members", p.ensemble.num_members, integer=True)
    positive("sgld.step_size", p.sgld.step_size)
    positive("sgld.thin_epochs", p.sgld.thin_epochs)
    positive("csghmc.step_size", p.csghmc.step_size)
    positive("csghmc.cycle_epochs", p.csghmc.cycle_epochs)
    positive("csghmc.num_cycles", p.csghmc.num_cycles, integer=True)
    positive("mfvi.learning_rate", p.mfvi.learning_rate)
    positive("llc.step_size", p.llc.step_size)
    if p.data.n_test is not None:
        positive("data.n_test", p.data.n_test, integer=True)
    for pair in p.method_settings:
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)
                and dataclasses.is_dataclass(pair[1])):
            raise ValueError(f"preset {p.name!r}: method_settings={p.method_settings!r} must "
                             f"be ((method name, settings dataclass), ...) pairs")
    if not all(isinstance(i, numbers.Integral) for i in p.llc.hmc_draws):
        raise ValueError(f"preset {p.name!r}: llc.hmc_draws={p.llc.hmc_draws!r} must be a "
                         f"tuple of draw indices")


# ------------------------------------------------------------------ the presets

QUICK = Preset(
    name="quick",
    description="MLP(256, 256) on the embedded digits data, every method at a size "
                "that finishes in under 10 minutes on a 2-core CPU",
    network=models.MLP((256, 256), 10),
    prior_variance=1 / 5,               # Table 3 (CIFAR): 1/5
    data=DataSettings("digits"),
    # The paper's trajectory, (pi/2) sqrt(1/5) = 0.70, takes ~550 leapfrog steps
    # per transition here (README: 15 minutes for 3 x 100 draws); 0.2, with the
    # step size adapted to 80% acceptance (~0.0025: ~80 steps), takes ~3 minutes.
    hmc=HMCSettings(num_chains=3, num_samples=60, num_warmup=30, warmup="adapt",
                    step_size=None, trajectory_length=0.2, max_num_steps=400),
    sgd=SGDSettings(num_epochs=30, batch_size=80, learning_rate=0.05,
                    prior_variance=None),
    ensemble=EnsembleSettings(num_members=5),
    sgld=SGLDSettings(num_chains=3, num_samples=30, burnin_epochs=50, thin_epochs=1,
                      step_size=1e-4, batch_size=80),
    csghmc=CyclicalSettings(num_chains=3, num_cycles=4, cycle_epochs=12,
                            samples_per_cycle=3, step_size=3e-4, batch_size=80),
    # Adam at 1e-4 barely moves the 85,002 scales from 0.1 in 20 epochs; 1e-2 does.
    mfvi=MFVISettings(num_epochs=20, batch_size=80, learning_rate=1e-2, num_samples=30),
    # ws.slt.calibrate on an SGD solution here: 3e-6..3e-5 have not settled after
    # 200 burn-in steps (5, 10, 17), 1e-4 and 3e-4 agree (23.6, 23.4) and 1e-4
    # keeps MALA acceptance above 0.9.
    llc=LLCSettings(num_chains=2, num_draws=200, num_burnin=200, step_size=1e-4,
                    batch_size=256),
    # A few thousand gradients per chain each (HMC above: about 10,000), so that
    # the preset stays under 10 minutes; benchmarks/efficiency.py compares the
    # samplers at equal budgets.
    method_settings=(
        ("mams", MAMSSettings(num_samples=30, num_warmup=400, num_adjusted_warmup=20)),
        ("mile", MILESettings(num_samples=60, num_warmup=400, thin=20))),
)

PAPER_CIFAR10 = Preset(
    name="paper-cifar10",
    description="Izmailov et al. 2021 on CIFAR-10: ResNet-20-FRN, Table 3's settings "
                "(meant for TPU pods)",
    network=models.ResNet20FRN(10),
    prior_variance=1 / 5,               # Table 3: 1/5
    data=DataSettings("cifar10"),
)

PAPER_IMDB = Preset(
    name="paper-imdb",
    description="Izmailov et al. 2021 on IMDB: CNN-LSTM, Table 3's settings (meant for "
                "TPU pods)",
    network=models.CNNLSTM(vocab_size=20000, num_outputs=2),
    prior_variance=1 / 40,              # Table 3: 1/40
    data=DataSettings("imdb_reviews", options=(("vocab_size", 20000), ("max_len", 400))),
    hmc=HMCSettings(num_samples=400),   # Table 3: 3 x 400
    sgd=SGDSettings(learning_rate=3e-7 * IMDB_TRAIN,  # Table 3: lr 3e-7
                    prior_variance=1 / 3),            # Table 3: weight decay 3
    sgld=SGLDSettings(step_size=1e-5),  # Table 3: step 1e-5
    csghmc=CyclicalSettings(step_size=1e-5),
)

PAPER_MNIST = Preset(
    name="paper-mnist",
    description="MLP(256, 256) on MNIST (269,322 weights) with the CIFAR-10 column of "
                "Table 3, which has no MNIST column (meant for TPU pods)",
    network=models.MLP((256, 256), 10),
    prior_variance=1 / 5,
    data=DataSettings("mnist"),
    sgd=SGDSettings(learning_rate=3e-7 * MNIST_TRAIN),
)

PRESETS: dict[str, Preset] = {p.name: p for p in
                              (QUICK, PAPER_CIFAR10, PAPER_IMDB, PAPER_MNIST)}


def get(name) -> Preset:
    """The preset called `name`, or `name` itself when it is a Preset."""
    if isinstance(name, Preset):
        return name
    if not isinstance(name, str) or name not in PRESETS:
        raise ValueError(f"unknown preset={name!r}; the presets are: "
                         f"{', '.join(PRESETS)} (or pass a Preset)")
    return PRESETS[name]


# ------------------------------------------------------------------ smoke

SMOKE_TRAIN = 32   # training rows under smoke
SMOKE_TEST = 16    # test rows under smoke
SMOKE_MAX_LEN = 32  # IMDB review length under smoke
# Network sizes under smoke, for the networks that have these fields: the same
# architecture (layers, normalization, recurrence) at a fraction of the cost.
# ResNet20FRN: one block per stage (ResNet-8): XLA on CPU compiles the SG-MCMC
# steps of the full depth in about a minute each.
SMOKE_NETWORK = {"vocab_size": 200, "embedding_dim": 16, "num_filters": 8,
                 "hidden_size": 16, "width": 4, "blocks_per_stage": 1}


def smoke(preset) -> Preset:
    """`preset` at a handful of steps on SMOKE_TRAIN training and SMOKE_TEST test
    rows, its network narrowed and a ResNet made shallower (SMOKE_NETWORK): the
    same dataset, network design, prior and modes (HMC warmup kind, schedules),
    every stage running."""
    p = get(preset)
    options = dict(p.data.options)
    network = dataclasses.replace(p.network, **{k: v for k, v in SMOKE_NETWORK.items()
                                                if hasattr(p.network, k)})
    if "vocab_size" in options or hasattr(network, "vocab_size"):
        options.update(vocab_size=network.vocab_size, max_len=SMOKE_MAX_LEN)
    data = dataclasses.replace(p.data, n_train=min(SMOKE_TRAIN, p.data.n_train or
                                                   SMOKE_TRAIN),
                               n_test=SMOKE_TEST, options=tuple(sorted(options.items())))
    batch = 8
    hmc_step = p.hmc.step_size if p.hmc.step_size is not None else 1e-3
    return dataclasses.replace(
        p, name=f"{p.name} (smoke)", description=f"{p.description}; --smoke",
        network=network, data=data,
        # One leapfrog step per transition; 4 draws, the fewest R-hat takes.
        hmc=dataclasses.replace(p.hmc, num_samples=4, num_warmup=1,
                                trajectory_length=hmc_step, max_num_steps=1),
        sgd=dataclasses.replace(p.sgd, num_epochs=1, batch_size=batch),
        ensemble=dataclasses.replace(p.ensemble, num_members=2),
        sgld=dataclasses.replace(p.sgld, num_chains=2, num_samples=2, burnin_epochs=0.25,
                                 thin_epochs=0.25, batch_size=batch),
        # 4 steps per epoch: one cycle of 5 steps, 4 exploring and 1 sampling.
        csghmc=dataclasses.replace(p.csghmc, num_chains=2, num_cycles=1, cycle_epochs=1.25,
                                   samples_per_cycle=1, batch_size=batch),
        mfvi=dataclasses.replace(p.mfvi, num_epochs=1, batch_size=batch, num_samples=2),
        llc=dataclasses.replace(p.llc, num_chains=2, num_draws=2, num_burnin=1,
                                batch_size=batch if p.llc.batch_size is not None else None),
        # registered methods shrink themselves (Method.smoke)
        method_settings=tuple((m, methods_lib.REGISTRY[m].smoke(p.settings(m)))
                              for m in _extra_methods()),
    )


# ------------------------------------------------------------------ overrides

_SECTIONS = ("data", "hmc", "sgd", "ensemble", "sgld", "csghmc", "mfvi", "llc")
_TOP = ("prior_variance", "temperature")


def fields() -> list[str]:
    """The names `override` accepts: "prior_variance", "hmc.num_samples", ...,
    and those of registered methods with settings ("mala.step_size")."""
    out = list(_TOP)
    hints = typing.get_type_hints(Preset)
    for section in _SECTIONS:
        out += [f"{section}.{f.name}" for f in dataclasses.fields(hints[section])]
    for method in _extra_methods():
        out += [f"{method}.{f.name}"
                for f in dataclasses.fields(methods_lib.REGISTRY[method].settings)]
    return out


def parse_value(text: str):
    """A --set value: a Python literal (20, 1e-4, None, (1, 2), "adapt"), or else
    the text itself as a string."""
    if text.strip().lower() in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def override(preset, changes: dict) -> Preset:
    """A copy of `preset` with fields changed: {"hmc.num_samples": 20,
    "prior_variance": 0.1}; the names are those of `fields()`."""
    p = get(preset)
    allowed = fields()
    for name, value in changes.items():
        if name not in allowed:
            raise ValueError(f"unknown preset field {name!r} in overrides; the fields are: "
                             f"{', '.join(allowed)}")
        if "." in name and name.split(".")[0] in _extra_methods():
            method, field = name.split(".")
            part = p.settings(method)
            value = _coerce(name, value, typing.get_type_hints(type(part))[field])
            pairs = dict(p.method_settings)
            pairs[method] = dataclasses.replace(part, **{field: value})
            p = dataclasses.replace(p, method_settings=tuple(pairs.items()))
        elif "." in name:
            section, field = name.split(".")
            part = getattr(p, section)
            value = _coerce(name, value, typing.get_type_hints(type(part))[field])
            p = dataclasses.replace(p, **{section: dataclasses.replace(part, **{field:
                                                                                value})})
        else:
            value = _coerce(name, value, typing.get_type_hints(Preset)[name])
            p = dataclasses.replace(p, **{name: value})
    return p


def _coerce(name: str, value, hint):
    """value checked against the field's type hint (int -> float where a float is
    expected, lists -> tuples)."""
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if value is None:
        if optional:
            return None
        raise ValueError(f"{name}=None is not allowed: it must be a {base.__name__}")
    if base is float and isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    if base is int and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if base is tuple and isinstance(value, (tuple, list)):
        return tuple(value)
    if base is tuple and isinstance(value, numbers.Integral):
        return (int(value),)
    if base is str and isinstance(value, str):
        return value
    if base is Any:
        return value
    raise ValueError(f"{name}={value!r} is not allowed: it must be a "
                     f"{getattr(base, '__name__', base)}{' or None' if optional else ''}")

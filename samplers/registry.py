"""The samplers by name: one entry per sampler, read by the command line
(`weightspace sample --sampler NAME` and its flags) and by anything else that
picks a sampler by name.

Adding a sampler is its module (a kernel and an `Algorithm`, run through
`driver.sample`) plus one `register(Entry(...))` here or in the user's own code;
the command line builds its flags from the entries, so nothing else changes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from weightspace.samplers import baselines, schedules, sgmcmc
from weightspace.samplers.hmc import MASS_MATRICES, WARMUPS, hmc

KINDS = ("positive_int", "nonnegative_int", "positive_float", "nonnegative_float", "str")


@dataclasses.dataclass(frozen=True)
class Option:
    """One knob of a sampler as the command line offers it.

    flag: the command line's name (`--flag-with-dashes`); argument: the
    sampler's keyword it sets (None: `Entry.arguments` uses it); kind: how the
    command line parses it (one of KINDS); default: the command line's default
    (None: the sampler's own); required: the command line needs it."""

    flag: str
    argument: str | None
    kind: str = "str"
    help: str = ""
    default: Any = None
    choices: tuple | None = None
    required: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Option {self.flag!r}: kind={self.kind!r} is not one of "
                             f"{', '.join(KINDS)}")


@dataclasses.dataclass(frozen=True)
class Entry:
    """A sampler by name.

    sample(target, key, *, num_chains, eval_x, run_dir, checkpoint_every,
        progress, **arguments) -> Trace.
    options: its knobs (an Option may be shared by several entries).
    checkpoint_every: the command line's default.
    arguments(values, given) -> extra keyword arguments from the option values
        by flag (defaults filled in) and the set of flags the user gave (e.g. a
        schedule object from --cycle-length); raises ValueError with a one-line
        message for options that do not go together.
    """

    name: str
    sample: Callable
    summary: str
    options: tuple[Option, ...]
    checkpoint_every: int
    arguments: Callable[[dict, set], dict] = lambda values, given: {}

    def keyword_arguments(self, values: dict, given: set) -> dict:
        """The sampler's keyword arguments from option values by flag (None
        values are left out: the sampler's own default applies)."""
        kwargs = {o.argument: values[o.flag] for o in self.options
                  if o.argument is not None and values.get(o.flag) is not None}
        kwargs.update(self.arguments(values, given))
        return kwargs


SAMPLERS: dict[str, Entry] = {}


def register(entry: Entry) -> Entry:
    """Add (or replace) a sampler by its name."""
    if not isinstance(entry, Entry):
        raise TypeError(f"register takes a ws.samplers.registry.Entry, got {entry!r}")
    SAMPLERS[entry.name] = entry
    return entry


# -- options shared by several samplers -----------------------------------------

SAMPLES = Option("samples", "num_samples", "positive_int", "draws kept per chain",
                 default=100)
WARMUP = Option("warmup", "num_warmup", "nonnegative_int",
                "warmup (burn-in) transitions", default=50)  # Izmailov et al. 2021: 50
THIN = Option("thin", "thin", "positive_int", "transitions per kept draw", default=1)
STEP_SIZE = Option("step_size", "step_size", "positive_float", "step size")
BATCH_SIZE = Option("batch_size", "batch_size", "positive_int", "rows per minibatch",
                    default=80)  # Izmailov et al. 2021 (SGD and SGLD baselines)
CYCLE_LENGTH = Option("cycle_length", None, "positive_int",
                      "transitions per cycle of a cyclical cosine schedule (Zhang et al. "
                      "2020); without it the step size is constant")
SAMPLES_PER_CYCLE = Option("samples_per_cycle", "samples_per_cycle", "positive_int",
                           "draws per cycle's sampling stage", default=1)


def _schedule_arguments(values: dict, given: set) -> dict:
    """--cycle-length turns the step size into a cyclical schedule."""
    if values["cycle_length"] is None:
        if "samples_per_cycle" in given:
            raise ValueError(f"--samples-per-cycle {values['samples_per_cycle']} needs "
                             f"--cycle-length (a cyclical step-size schedule)")
        return {}
    if "thin" in given:
        raise ValueError(f"--thin {values['thin']} is not used with --cycle-length: draws "
                         f"are --samples-per-cycle evenly spaced steps of each cycle")
    return {"schedule": schedules.cyclical(values["step_size"], values["cycle_length"]),
            "step_size": None}


def _sgmcmc_options(*extra: Option) -> tuple[Option, ...]:
    return (SAMPLES, WARMUP, THIN, dataclasses.replace(STEP_SIZE, required=True),
            BATCH_SIZE, *extra, CYCLE_LENGTH, SAMPLES_PER_CYCLE)


register(Entry(
    "hmc", hmc, "full-batch HMC", checkpoint_every=10, options=(
        SAMPLES, WARMUP, THIN,
        dataclasses.replace(STEP_SIZE, help="step size (warmup adapt: its start; default "
                                            "Hoffman and Gelman's heuristic)"),
        Option("warmup_mode", "warmup", help="adapt: dual averaging; fixed; no_metropolis: "
               "fixed, every proposal accepted in warmup (Izmailov et al. 2021)",
               default="adapt", choices=WARMUPS),
        Option("trajectory_length", "trajectory_length", "positive_float",
               "default (pi/2) sqrt(temperature * prior variance)"),
        Option("max_steps", "max_num_steps", "positive_int", "leapfrog steps per "
               "trajectory at most", default=1000),
        Option("target_accept", "target_accept", "positive_float",
               "dual averaging's acceptance target", default=0.8),  # Stan's
        Option("mass_matrix", "mass_matrix", default="identity",
               choices=MASS_MATRICES))))

register(Entry(
    "sgld", sgmcmc.sgld, "stochastic gradient Langevin dynamics (pSGLD with "
    "--preconditioner rmsprop)", checkpoint_every=100,
    options=_sgmcmc_options(Option("preconditioner", "preconditioner",
                                   choices=("rmsprop",), help="pSGLD (Li et al. 2016)")),
    arguments=_schedule_arguments))

register(Entry(
    "sghmc", sgmcmc.sghmc, "stochastic gradient HMC (cyclical with --cycle-length)",
    checkpoint_every=100,
    options=_sgmcmc_options(Option("friction", "friction", "positive_float",
                                   "in (0, 1]; 1 - friction is the momentum")),
    arguments=_schedule_arguments))

register(Entry(
    "sgd", baselines.sgd, "the MAP by minibatch SGD (one draw per chain)",
    checkpoint_every=1, options=(
        BATCH_SIZE,
        Option("epochs", "num_epochs", "positive_int", "required", required=True),
        Option("learning_rate", "learning_rate", "positive_float",
               "on the per-example loss", required=True),
        Option("optimizer", "optimizer", default="sgd", choices=("sgd", "adam")),
        Option("momentum", "momentum", "nonnegative_float", default=0.9),  # Izmailov 2021
        Option("lr_schedule", "schedule", default="cosine",  # Izmailov et al. 2021
               choices=("cosine", "constant")))))

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
from weightspace.samplers.mams import TARGET_ACCEPT, mams
from weightspace.samplers.mclmc import DESIRED_ENERGY_VAR, PRECONDITIONINGS, mclmc
from weightspace.samplers.mile import SAMPLERS as MILE_SAMPLERS
from weightspace.samplers.mile import mile
from weightspace.samplers.replica_exchange import replica_exchange

KINDS = ("positive_int", "nonnegative_int", "positive_float", "nonnegative_float", "str",
         "int_list")


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

SAMPLES = Option("samples", "num_samples", "positive_int", "kept draws per chain",
                 default=100)
WARMUP = Option("warmup", "num_warmup", "nonnegative_int",
                "warmup (hmc) or burn-in (sgld, sghmc) transitions",
                default=50)  # Izmailov et al. 2021: 50 burn-in iterations
THIN = Option("thin", "thin", "positive_int", "keep every this many transitions",
              default=1)
STEP_SIZE = Option("step_size", "step_size", "positive_float",
                   "the step size (required; with --cycle-length the largest of the "
                   "cyclical schedule)", required=True)
BATCH_SIZE = Option("batch_size", "batch_size", "positive_int",
                    "rows per minibatch (Izmailov et al. 2021)",
                    default=80)  # Izmailov et al. 2021 (SGD and SGLD baselines)
CYCLE_LENGTH = Option("cycle_length", None, "positive_int",
                      "cyclical step sizes (Zhang et al. 2020) with cycles of this many "
                      "transitions")
SAMPLES_PER_CYCLE = Option("samples_per_cycle", "samples_per_cycle", "positive_int",
                           "draws per cycle with --cycle-length", default=1)


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
    return (SAMPLES, WARMUP, THIN, STEP_SIZE, BATCH_SIZE, *extra, CYCLE_LENGTH,
            SAMPLES_PER_CYCLE)


register(Entry(
    "hmc", hmc, "full-batch HMC (the default)", checkpoint_every=10, options=(
        SAMPLES, WARMUP, THIN,
        dataclasses.replace(STEP_SIZE, help="the initial step size (default: found during "
                                            "warmup)", required=False),
        Option("warmup_mode", "warmup", default="adapt", choices=WARMUPS),
        Option("trajectory_length", "trajectory_length", "positive_float",
               "default (pi/2) sqrt(temperature * prior variance)"),
        Option("max_steps", "max_num_steps", "positive_int",
               "cap on leapfrog steps per trajectory", default=1000),
        Option("target_accept", "target_accept", "positive_float",
               default=0.8),  # Stan's
        Option("mass_matrix", "mass_matrix", default="identity",
               choices=MASS_MATRICES))))

register(Entry(
    "sgld", sgmcmc.sgld, "minibatch SG-MCMC: Langevin dynamics", checkpoint_every=100,
    options=_sgmcmc_options(Option("preconditioner", "preconditioner",
                                   choices=("rmsprop",),
                                   help="rmsprop is pSGLD (Li et al. 2016)")),
    arguments=_schedule_arguments))

register(Entry(
    "sghmc", sgmcmc.sghmc, "minibatch SG-MCMC: HMC with friction",
    checkpoint_every=100,
    options=_sgmcmc_options(Option("friction", "friction", "positive_float",
                                   "friction in (0, 1] (default 0.1)")),
    arguments=_schedule_arguments))

def _checked_checkpoints(values: dict, given: set) -> dict:
    """--epochs with --save-every or --save-at, checked before a run starts."""
    baselines.checkpoint_plan(values["epochs"], values.get("save_every"),
                              values.get("save_at"))
    return {}


register(Entry(
    "sgd", baselines.sgd, "one SGD run per chain, a deep ensemble: each chain's one draw "
    "is its solution",
    checkpoint_every=1, arguments=_checked_checkpoints, options=(
        BATCH_SIZE,
        Option("epochs", "num_epochs", "positive_int", required=True),
        Option("learning_rate", "learning_rate", "positive_float",
               "the initial learning rate on the per-example loss", required=True),
        Option("optimizer", "optimizer", "str", "sgd is with momentum", default="sgd",
               choices=("sgd", "adam")),
        Option("momentum", "momentum", "nonnegative_float", "Izmailov et al. 2021",
               default=0.9),  # Izmailov et al. 2021 (SGD baselines)
        Option("lr_schedule", "schedule", "str", "Izmailov et al. 2021", default="cosine",
               choices=("cosine", "constant")),
        Option("save_every", "save_every", "positive_int",
               "keep each member's parameters every this many epochs as its draws (it "
               "must divide --epochs; the last is the solution): the checkpoints that "
               "`weightspace llc --run RUN --checkpoints all` estimates"),
        Option("save_at", "save_at", "int_list",
               "instead of --save-every, keep each member's parameters after these "
               "epochs (comma-separated, increasing, the last --epochs), e.g. "
               "1,2,4,8,16,32"))))


_MICROCANONICAL = (
    SAMPLES,
    dataclasses.replace(WARMUP, help="tuning transitions (at least 100 unless --step-size "
                                     "and --L are given with --preconditioning none)",
                        default=1000),
    THIN,
    dataclasses.replace(STEP_SIZE, help="a fixed step size (default: tuned in warmup)",
                        required=False),
    Option("L", "L", "positive_float", "a fixed momentum decoherence length, in whitened "
                                       "units (default: tuned in warmup)"),
    Option("preconditioning", "preconditioning", default="none",
           choices=PRECONDITIONINGS))

register(Entry(
    "mclmc", mclmc, "microcanonical Langevin Monte Carlo (unadjusted; Robnik et al. 2023)",
    checkpoint_every=100, options=(
        *_MICROCANONICAL,
        Option("desired_energy_var", "desired_energy_var", "positive_float",
               "energy-error variance per dimension the step size is tuned to",
               default=DESIRED_ENERGY_VAR))))

register(Entry(
    "mams", mams, "Metropolis-adjusted microcanonical sampling (Robnik et al. 2025)",
    checkpoint_every=10, options=(
        *_MICROCANONICAL,
        Option("target_accept", "target_accept", "positive_float",
               default=TARGET_ACCEPT),  # Robnik, Cohn-Gordon and Seljak 2025
        Option("max_steps", "max_num_steps", "positive_int",
               "cap on integrator steps per trajectory", default=1000),
        Option("adjusted_warmup", "num_adjusted_warmup", "nonnegative_int",
               "the last warmup transitions, MAMS's, which tune the step size (default: "
               "a tenth of --warmup when the step size is tuned); the rest are MCLMC's"))))


def _mile_arguments(values: dict, given: set) -> dict:
    """The ensemble's training settings and the chains' sampler."""
    return {"sampler": values["chain_sampler"],
            "ensemble": {"num_epochs": values["ensemble_epochs"],
                         "learning_rate": values["ensemble_learning_rate"],
                         "batch_size": values["batch_size"]}}


register(Entry(
    "mile", mile, "MCLMC or MAMS chains started from deep-ensemble members (Sommer et al. "
    "2025)", checkpoint_every=100, options=(
        *_MICROCANONICAL,
        Option("chain_sampler", None, "str", "the chains' sampler", default="mclmc",
               choices=tuple(MILE_SAMPLERS)),
        Option("ensemble_epochs", None, "positive_int", "SGD epochs per member",
               required=True),
        Option("ensemble_learning_rate", None, "positive_float",
               "the members' initial learning rate on the per-example loss", required=True),
        dataclasses.replace(BATCH_SIZE, argument=None, help="the members' minibatch rows")),
    arguments=_mile_arguments))


register(Entry(
    "replica_exchange", replica_exchange, "replica exchange (parallel tempering) with HMC "
    "or MAMS moves, the prior as the hottest rung (Syed et al. 2021's non-reversible swaps)",
    checkpoint_every=10, options=(
        SAMPLES,
        dataclasses.replace(WARMUP, help="transitions that tune each rung's step size and "
                                         "the ladder (at least 50, or 0 with --step-size)",
                            default=200),
        THIN,
        dataclasses.replace(STEP_SIZE, help="every rung's first step size (default: "
                                            "found in warmup; fixed with --warmup 0)",
                            required=False),
        Option("temperatures", "num_temperatures", "positive_int",
               "rungs per chain (each chain runs this many replicas)", default=8),
        Option("min_beta", "min_beta", "nonnegative_float",
               "the hottest rung's inverse temperature (default 0: the prior)"),
        Option("moves", "moves", "str", "each replica's move between swaps",
               default="hmc", choices=("hmc", "mams")),
        Option("trajectory_length", "trajectory_length", "positive_float",
               "at rung 0; default (pi/2) sqrt(temperature * prior variance), times "
               "sqrt(weights) for MAMS"),
        Option("max_steps", "max_num_steps", "positive_int",
               "cap on integrator steps per trajectory", default=1000),
        Option("target_accept", "target_accept", "positive_float",
               "every rung's acceptance target (default 0.8 for HMC, 0.9 for MAMS)"))))

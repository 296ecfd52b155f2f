"""Do the samplers weight basins by their mass? The study on targets whose
basin masses are known exactly, and on a small network whose masses come
from a validated reference.

For each target family, each barrier height and each sampler, chains start
from the prior and run. The families: `ws.slt.basin_target`'s "quartic" (a
quadratic and a quartic minimum) and "crossing" (a point and a normal
crossing of two lines), whose barrier is n K at the saddle, so raising it is
raising the sample size n; and "network", `ws.slt.network_basin_target`'s
one-unit tanh network on a bump teacher (its basins: the unit fits the left
or the right edge), whose knob is the number of times its 16 rows are
counted (n = 16 x knob), its reference shares from importance sampling with
their standard error. Then

- the basin diagnostic (`ws.diagnostics.basins`) gives each basin's pooled
  share, its Monte Carlo error, the crossings and the verdict;
- the share's error against the exact one says whether the sampler weighted
  the basins by their mass (|error| <= TOLERANCE, the issue's 0.02);
- per-coordinate rank R-hat says whether R-hat would have flagged the failure
  (fraction of coordinates above 1.01);
- the cost is counted in gradients of the full log density.

A figure draws the degenerate basin's share against the barrier per sampler,
with the exact curve; the report states, from those numbers, which samplers
weight basins by mass at which barriers and whether each failure was flagged.

    study = ws.experiments.basins("quick", out="basins")
    print(study)            # the table, then the verdict per sampler
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from pathlib import Path
from typing import Callable

import jax
import numpy as np

from weightspace.checks import choice, positive_float
from weightspace.diagnostics.basins import basins as basin_report
from weightspace.diagnostics.summary import gradient_cost
from weightspace.diagnostics.rhat import rhat
from weightspace.experiments.tables import fixed_width
from weightspace.jsonio import is_writer, write_json
from weightspace.slt.basins import FACTORS, basin_target
from weightspace.slt.network_basins import network_basin_target
from weightspace.samplers.hmc import hmc
from weightspace.samplers.mams import mams
from weightspace.samplers.replica_exchange import replica_exchange
from weightspace.samplers.sgmcmc import sgld

TOLERANCE = 0.02   # |share - exact| within which a sampler weights basins by mass
RHAT_FLAG = 1.01   # Vehtari et al. 2021's threshold for a coordinate not mixed
FORMAT = 1
DPI = 120
SAMPLERS = ("hmc", "sgld", "mams", "replica_exchange", "replica_exchange_mams")
FAMILIES = ("quartic", "crossing", "network")
LABELS = {"hmc": "HMC", "sgld": "SGLD", "mams": "MAMS", "replica_exchange": "replica exchange",
          "replica_exchange_mams": "replica exchange (MAMS)"}
# Full-batch SGLD's step in units of 1/n (n = barrier / K(saddle)): the
# Langevin step is stable while step x curvature < 2, and the factors'
# curvature at their minima grows as n (at most about 90 n, on the crossing's
# axes near |v| = 3), so step = SGLD_STEP / n keeps it below 0.2 everywhere.
SGLD_STEP = 2e-3


@dataclasses.dataclass(frozen=True)
class BasinSettings:
    """One study's settings (a preset).

    families: target families (`ws.slt.basin_target` factors, and "network").
    num_factors: factors per product family's target (the dimension is
        num_factors x the factor's dimension).
    barriers: barrier heights of the product families, in units of the log
        density.
    network_repeats: the network's knob, n / 16 (its rows counted this often).
    samplers: names in SAMPLERS.
    num_chains, num_warmup, num_samples: per chain (SGLD: warmup and kept
        draws are sgld_thin steps each).
    sgld_thin: SGLD's steps per kept draw.
    rungs: replica exchange's temperatures.
    replica_thin: replica exchange's transitions per kept draw (each costs
        `rungs` trajectories; its basin indicator at temperature 1 changes
        only as replicas travel the ladder).
    replica_trajectory: replica exchange's trajectory length at rung 0 (the
        swaps carry the replicas between basins; short trajectories buy more
        swaps per gradient); with MAMS moves, times sqrt(d).
    """

    families: tuple = ("quartic", "crossing", "network")
    num_factors: dict = dataclasses.field(default_factory=lambda: {"quartic": 100,
                                                                   "crossing": 50})
    barriers: tuple = (1.0, 4.0, 16.0)
    network_repeats: tuple = (1.0, 4.0, 8.0)
    samplers: tuple = SAMPLERS[:4]
    num_chains: int = 4
    num_warmup: int = 400
    num_samples: int = 800
    sgld_thin: int = 20
    rungs: int = 32
    replica_thin: int = 10
    replica_trajectory: float = 0.5


PRESETS = {
    "quick": BasinSettings(),
    # The benchmark's scale: 1,000 factors, longer chains (an hour or more here).
    "full": BasinSettings(num_factors={"quartic": 1000, "crossing": 500},
                          barriers=(1.0, 2.0, 4.0, 8.0, 16.0, 32.0),
                          network_repeats=(1.0, 2.0, 4.0, 8.0, 16.0), samplers=SAMPLERS,
                          num_warmup=2000,
                          num_samples=4000, sgld_thin=100, rungs=128, replica_thin=5),
}


@dataclasses.dataclass
class BasinStudy:
    """`basins(...)`'s result: one row per (family, barrier, sampler), the
    exact curves, the verdict in words and the paths written."""

    settings: BasinSettings
    rows: list
    exact_curves: dict
    verdict: str
    paths: dict

    HEAD = ("family", "barrier", "sampler", "basin", "exact", "sampled", "error",
            "MC error", "crossings", "basin diagnostic", "R-hat > 1.01", "gradients",
            "seconds")

    def _cells(self) -> list:
        return [(r["family"], _knob_text(r["family"], r["barrier"], short=True),
                 LABELS[r["sampler"]], r["names"][0],
                 f"{r['exact'][0]:.4f}" + (f" ± {r['exact_standard_error'][0]:.4f}"
                                           if r["exact_standard_error"][0] else ""),
                 f"{r['shares'][0]:.4f}", f"{r['error'][0]:+.4f}",
                 f"{r['standard_error'][0]:.4f}", f"{r['crossings']:,}",
                 _verdict_word(r), f"{r['rhat_flagged']:.0%}", f"{r['grad_evals']:,.0f}",
                 f"{r['seconds']:.0f}") for r in self.rows]

    def table(self) -> str:
        return fixed_width(self.HEAD, self._cells(), left=(0, 1, 2, 3, 9))

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.HEAD) + " |", "|" + "---|" * len(self.HEAD)]
        lines += ["| " + " | ".join(c) + " |" for c in self._cells()]
        return "\n".join(lines)

    def __str__(self) -> str:
        return (f"Basin 0's share against its exact value (the network's: importance "
                f"sampling, ± its standard error); a sampler weights basins by mass where "
                f"|error| <= {TOLERANCE}\n{self.table()}\n\n{self.verdict}")


def _knobs(settings: BasinSettings, family: str) -> tuple:
    return settings.network_repeats if family == "network" else settings.barriers


def _knob_text(family: str, knob: float, short: bool = False) -> str:
    if family == "network":
        return f"n=16x{knob:g}"
    return f"{knob:g}" if short else f"barrier {knob:g}"


def _verdict_word(row) -> str:
    return {True: "by start", False: "by mass", None: "too short"}[row["weighted_by_start"]]


def run_case(family: str, barrier: float, sampler: str, settings: BasinSettings,
             key) -> dict:
    """One sampler on one target; the row of the study's table. For the
    network, `barrier` is the knob n / 16."""
    target = _target(family, barrier, settings.num_factors.get(family, 1))
    init_key, run_key = jax.random.split(key)
    init = target.init(init_key, settings.num_chains)
    common = dict(init=init, num_chains=settings.num_chains, progress=False)
    start = time.perf_counter()
    extra = {}
    if sampler == "hmc":
        trace = hmc(target.logdensity, run_key, num_warmup=settings.num_warmup,
                    num_samples=settings.num_samples, **common)
    elif sampler == "mams":
        trace = mams(target.logdensity, run_key, num_warmup=settings.num_warmup,
                     num_samples=settings.num_samples, **common)
    elif sampler == "sgld":
        # Full batch: one "row" of data, the whole log density as its estimate.
        step = SGLD_STEP / _scale(target)
        trace = sgld(lambda q, batch: target.logdensity(q), run_key,
                     data=np.zeros((1, 1), np.float32), batch_size=1, step_size=step,
                     num_warmup=settings.num_warmup * settings.sgld_thin,
                     num_samples=settings.num_samples, thin=settings.sgld_thin, **common)
        extra = {"step_size": step}
    else:
        # MAMS's length is in the isokinetic velocity's units: sqrt(d) times HMC's.
        mams_moves = sampler == "replica_exchange_mams"
        length = settings.replica_trajectory * (
            math.sqrt(sum(np.size(x[0]) for x in jax.tree.leaves(init))) if mams_moves else 1)
        trace = replica_exchange(target.logdensity, run_key, reference=target.logprior,
                                 num_temperatures=settings.rungs,
                                 num_warmup=settings.num_warmup,
                                 num_samples=settings.num_samples,
                                 thin=settings.replica_thin, trajectory_length=length,
                                 moves="mams" if mams_moves else "hmc", **common)
        extra = {"swap_rate_min": float(np.min(trace.info["swap_rate"])),
                 "round_trips": int(np.sum(trace.info["round_trips"]))}
    seconds = time.perf_counter() - start
    report = basin_report(trace, assign=target.assign, names=target.basins,
                          exact=target.shares)
    r = np.asarray(rhat(jax.tree.leaves(trace.positions)[0]))
    exact, exact_se = _shares(target)
    return {"family": family, "barrier": float(barrier), "sampler": sampler,
            "num_factors": getattr(target, "num_factors", 1), "names": list(target.basins),
            "exact": exact.tolist(), "exact_standard_error": exact_se.tolist(),
            "shares": report.pooled.tolist(),
            "error": report.error.tolist(), "standard_error": report.standard_error.tolist(),
            "chain_shares": report.shares.tolist(), "crossings": int(report.crossings.sum()),
            "flagged": report.flagged, "no_crossing": report.no_crossing,
            "ess_per_chain": report.ess_per_chain,
            "weighted_by_start": report.weighted_by_start, "verdict": report.verdict,
            "rhat_flagged": float(np.mean(~(r <= RHAT_FLAG))),
            "grad_evals": float(gradient_cost(trace)["total_grad_evals"]),
            "seconds": seconds, **extra}


@functools.lru_cache(maxsize=64)
def _target(family: str, knob: float, num_factors: int = 1):
    if family == "network":
        return network_basin_target(repeats=knob)
    return basin_target(family, num_factors=num_factors, barrier=knob)


def _scale(target) -> float:
    """n of the target: the product targets' barrier / K(saddle); the
    network's rows x repeats / noise^2 (its likelihood's precision)."""
    if hasattr(target, "scale"):
        return target.scale
    return target.repeats * target.num_data / target.noise ** 2


def _shares(target) -> tuple[np.ndarray, np.ndarray]:
    """The exact shares (standard error 0), or the network's reference and its
    standard error."""
    if hasattr(target, "reference"):
        return target.reference
    return target.shares, np.zeros_like(target.shares)


def exact_curve(family: str, knobs) -> np.ndarray:
    """Basin 0's exact (network: reference) share at each barrier (knob)."""
    return np.array([_shares(_target(family, float(k)))[0][0] for k in knobs])


def verdict(rows: list) -> str:
    """Which samplers weight basins by mass at which barriers, and whether the
    failures were flagged, in words computed from the rows."""
    lines = []
    for family in dict.fromkeys(r["family"] for r in rows):
        at = "n = 16 x" if family == "network" else "barrier(s)"
        lines.append(f"{family}:")
        for sampler in dict.fromkeys(r["sampler"] for r in rows):
            case = [r for r in rows if r["family"] == family and r["sampler"] == sampler]
            if not case:
                continue
            good = [r for r in case if abs(r["error"][0]) <= TOLERANCE]
            bad = [r for r in case if abs(r["error"][0]) > TOLERANCE]
            text = (f"  {LABELS[sampler]}: weights basins by mass at "
                    + (f"{at} {_barriers(good)}" if good else "none"))
            if bad:
                worst = max(bad, key=lambda r: abs(r["error"][0]))
                flagged = [r for r in bad if r["weighted_by_start"]]
                short = [r for r in bad if r["weighted_by_start"] is None]
                missed = [r for r in bad if r["weighted_by_start"] is False]
                by_rhat = [r for r in bad if r["rhat_flagged"] > 0.05]
                # Within 3 Monte Carlo errors, where the diagnostic does not say
                # "by start" (then the error is the spread of stuck chains).
                noisy = [r for r in bad if abs(r["error"][0]) <= 3 * r["standard_error"][0]
                         and not r["weighted_by_start"]]
                text += (f"; not at {_barriers(bad)} (worst error {worst['error'][0]:+.3f} "
                         f"at {worst['barrier']:g}"
                         + (f"; at {_barriers(noisy)} within 3 of its Monte Carlo errors, "
                            f"too noisy to tell by the share alone" if noisy else "")
                         + "); the basin diagnostic flags "
                         f"{_barriers(flagged)}"
                         + (f", calls {_barriers(short)} too short to tell" if short else "")
                         + (f" and passes {_barriers(missed)}" if missed else "")
                         + f"; R-hat (over 5% of coordinates above {RHAT_FLAG}) flags "
                           f"{_barriers(by_rhat)}")
            false_alarms = [r for r in good if r["weighted_by_start"]]
            if false_alarms:
                text += (f"; the diagnostic also flags {_barriers(false_alarms)}, where "
                         f"the pooled share is within {TOLERANCE} but the chains disagree")
            lines.append(text)
    return "\n".join(lines)


def _barriers(rows) -> str:
    return ", ".join(f"{r['barrier']:g}" for r in rows) if rows else "none"


def plot(rows: list, exact_curves: dict):
    """Basin 0's share (the product targets' degenerate basin, the network's
    left edge) against the barrier, one panel per family."""
    import matplotlib.pyplot as plt

    families = list(exact_curves)
    fig, axes = plt.subplots(1, len(families), figsize=(5.2 * len(families), 4), squeeze=False)
    for ax, family in zip(axes[0], families):
        x, y = exact_curves[family]
        network = family == "network"
        ax.plot(x, y, color="k", lw=1.5, label="reference" if network else "exact")
        samplers = list(dict.fromkeys(r["sampler"] for r in rows))
        for i, sampler in enumerate(samplers):
            case = [r for r in rows if r["family"] == family and r["sampler"] == sampler]
            b = np.array([r["barrier"] for r in case]) * (1 + 0.04 * (i - len(samplers) / 2))
            ax.errorbar(b, [r["shares"][0] for r in case],
                        yerr=[2 * r["standard_error"][0] for r in case], marker="o", ms=4,
                        lw=1, capsize=2, label=LABELS[sampler], color=f"C{i}")
        ax.set_xscale("log")
        if network:
            ax.set_xlabel("n / 16 (the rows counted this often)")
            ax.set_ylabel("share of the left-edge basin")
            ax.set_title("network: one tanh unit, left against right edge")
            ax.set_ylim(-0.05, 1.05)  # a share; chains in different basins make wide bars
        else:
            lam = FACTORS[family].llc
            ax.set_xlabel("barrier (n K at the saddle; grows with n)")
            ax.set_ylabel("share of the degenerate basin")
            ax.set_title(f"{family}: LLC {lam[0][0]} (degenerate) against {lam[1][0]}")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def basins(preset: str | BasinSettings = "quick", out=None, *, samplers=None,
           barriers=None, families=None, seed: int = 0,
           progress: Callable[[str], None] | None = print) -> BasinStudy:
    """Run the study (module docstring) and, with `out`, write basins.json,
    basins.md and basins.png there.

    preset: "quick" (about 10 minutes on 2 CPU cores), "full", or settings.
    samplers, barriers, families: override the preset's (barriers: of the
        product families; the network keeps its knob).
    progress: called with a line per finished case (None: silent).
    """
    settings = preset if isinstance(preset, BasinSettings) else PRESETS[
        choice("preset", preset, tuple(PRESETS))]
    if samplers is not None:
        samplers = tuple(choice("samplers", s, SAMPLERS) for s in samplers)
        settings = dataclasses.replace(settings, samplers=samplers)
    if families is not None:
        families = tuple(choice("families", f, FAMILIES) for f in families)
        settings = dataclasses.replace(settings, families=families)
    if barriers is not None:
        barriers = tuple(positive_float("barriers", b) for b in barriers)
        settings = dataclasses.replace(settings, barriers=barriers)
    cases = [(f, b) for f in settings.families for b in _knobs(settings, f)]
    keys = jax.random.split(jax.random.key(seed), len(cases) * len(settings.samplers))
    rows, i = [], 0
    for family, barrier in cases:
        for sampler in settings.samplers:
            rows.append(run_case(family, barrier, sampler, settings, keys[i]))
            i += 1
            if progress is not None:
                r = rows[-1]
                progress(f"{family} {_knob_text(family, barrier)} {LABELS[sampler]}: "
                         f"{r['names'][0]} share {r['shares'][0]:.4f} (exact "
                         f"{r['exact'][0]:.4f}), {_verdict_word(r)}, {r['seconds']:.0f} s")
    curves = {}
    for f in settings.families:
        knobs = _knobs(settings, f)
        grid = np.geomspace(min(knobs) / 2, max(knobs) * 2, 13 if f != "network" else 7)
        curves[f] = (grid, exact_curve(f, grid))
    study = BasinStudy(settings, rows, curves, verdict(rows), {})
    if out is not None:
        out = Path(out)
        study.paths = {"json": out / "basins.json", "table": out / "basins.md",
                       "figure": out / "basins.png"}
    if out is not None and is_writer():  # process 0 of a multi-process job
        out.mkdir(parents=True, exist_ok=True)
        write_json(study.paths["json"], {
            "format": FORMAT, "settings": dataclasses.asdict(settings), "rows": rows,
            "exact_curves": {f: {"barrier": c[0].tolist(), "degenerate_share": c[1].tolist()}
                             for f, c in curves.items()},
            "verdict": study.verdict})
        study.paths["table"].write_text(study.markdown() + "\n\n" + study.verdict + "\n")
        fig = plot(rows, curves)
        fig.savefig(study.paths["figure"], dpi=DPI)
        import matplotlib.pyplot as plt
        plt.close(fig)
    return study

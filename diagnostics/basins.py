"""Do the chains weight basins by their mass, or by where they started?

Per-coordinate R-hat passes a coordinate whose chains all fell into the same
basin, right or wrong, and chains that never cross a barrier report the
shares they fell into during warmup. `basins` looks at basin labels instead:
for every basin variable (a coordinate of a product target, or the network
as a whole) it counts each chain's crossings and tests whether the chains'
shares of each basin agree within Monte Carlo error.

The test: for basin b of variable v, each chain's share p_c is a mean of the
indicator 1{label = b} over N draws. Its Monte Carlo variance is W tau / N,
with W the indicator's within-chain variance and tau its integrated
autocorrelation time, both pooled over chains around each chain's own mean
(Geyer's initial monotone sequence, Geyer 1992), so chains that disagree do
not inflate the yardstick they are measured with. Then
chi2 = sum_c (p_c - pbar)^2 / (W tau / N) has C - 1 degrees of freedom under
agreement; a variable is flagged when chains that never crossed sit in
different basins, or when chi2's p-value is below `alpha` / (variables x
basins) (Bonferroni: over the whole report, a false alarm at most `alpha` of
the time). Chains that never crossed, all in the same basin, are no evidence
either way (the other basin may hold little mass), but a run in which no
variable was crossed at all is flagged as a whole.

The yardstick is only as good as tau's estimate, which is biased low when a
chain holds few effective draws of the indicator: on 1,000 quartic factors at
a barrier of 2, full-batch SGLD's chains (about 11 effective draws each)
gave chi2 a median of 3.8 where 2.4 is expected. A variable whose chains hold
fewer than MIN_ESS effective draws each (N / tau) is therefore not tested; when
most variables are like that, the verdict is that the run is too short to
tell (`weighted_by_start` None).

Labels come from the target (`assign`, e.g. `ws.slt.basin_target`'s) or are
given directly as integers (chain, draw) or (chain, draw, variable).
Assigning draws of a network to basins (clustering aligned draws and
checking the loss barrier between them) is not built yet.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from weightspace.checks import probability

ALPHA = 0.01  # the report's false-alarm rate under agreement
MIN_ESS = 50   # effective draws per chain below which a variable is not tested


@dataclasses.dataclass(frozen=True)
class BasinReport:
    """`basins(...)`'s result.

    names: basin names (label i is names[i]).
    shares: (chain, basin) each chain's share, pooled over variables.
    pooled: (basin,) all chains and variables.
    standard_error: (basin,) Monte Carlo standard error of `pooled` (the larger
        of the within-chain estimate and the spread of the chains' shares).
    crossings: (chain,) label changes between consecutive draws, all variables.
    never_crossed: (chain,) fraction of variables in which that chain never crossed.
    flagged: fraction of variables flagged (chains that never crossed sitting
        in different basins, or chains disagreeing beyond Monte Carlo error).
    no_crossing: fraction of variables that no chain crossed.
    untested: fraction of variables crossed but with fewer than MIN_ESS
        effective draws per chain, so not tested for agreement.
    ess_per_chain: median over variables of the basin indicators' effective
        draws per chain (N / tau).
    exact, error: (basin,) the exact shares when given, and pooled - exact.
    weighted_by_start: the verdict (None: too few effective draws to tell);
        `verdict` says it in words.
    """

    names: tuple
    shares: np.ndarray
    pooled: np.ndarray
    standard_error: np.ndarray
    crossings: np.ndarray
    never_crossed: np.ndarray
    flagged: float
    no_crossing: float
    untested: float
    ess_per_chain: float
    num_variables: int
    exact: np.ndarray | None
    error: np.ndarray | None
    weighted_by_start: bool | None
    verdict: str

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.tolist() if isinstance(v, np.ndarray) else v
        return out

    def __str__(self) -> str:
        rows = [f"basins ({self.num_variables:,} variable(s), a median of "
                f"{self.ess_per_chain:.0f} effective draws per chain): {self.verdict}"]
        head = "  ".join(f"{n:>12}" for n in self.names)
        rows.append(f"{'share':<14}{head}")
        for c, s in enumerate(self.shares):
            rows.append(f"{'chain ' + str(c):<14}" + "  ".join(f"{x:12.4f}" for x in s)
                        + f"   crossings {int(self.crossings[c]):,}")
        rows.append(f"{'pooled':<14}" + "  ".join(
            f"{x:12.4f}" for x in self.pooled))
        rows.append(f"{'+/- (MC)':<14}" + "  ".join(
            f"{x:12.4f}" for x in self.standard_error))
        if self.exact is not None:
            rows.append(f"{'exact':<14}" + "  ".join(f"{x:12.4f}" for x in self.exact))
        return "\n".join(rows)


def _autocorrelation_time(x: np.ndarray) -> np.ndarray:
    """Integrated autocorrelation time of x (chain, draw, k), pooled over
    chains around each chain's own mean (Geyer's initial monotone sequence);
    NaN where the within-chain variance is 0."""
    num_chains, n = x.shape[:2]
    centred = x - x.mean(axis=1, keepdims=True)
    size = 1 << int(np.ceil(np.log2(2 * n)))
    f = np.fft.rfft(centred, n=size, axis=1)
    acov = np.fft.irfft(f * np.conj(f), n=size, axis=1)[:, :n].mean(axis=0) / n  # (n, k)
    var0 = acov[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = acov / var0
    pairs = n // 2
    sums = rho[0:2 * pairs:2] + rho[1:2 * pairs:2]         # (pairs, k)
    positive = np.cumprod(sums > 0, axis=0).astype(bool)   # initial positive sequence
    monotone = np.minimum.accumulate(np.where(positive, sums, np.inf), axis=0)
    total = np.where(positive, monotone, 0.0).sum(axis=0)
    tau = np.maximum(-1.0 + 2.0 * total, 1.0)
    return np.where(var0 > 0, tau, np.nan)


def _labels_of(labels_or_positions, assign: Callable | None) -> np.ndarray:
    labels = np.asarray(labels_or_positions if assign is None
                        else assign(getattr(labels_or_positions, "positions",
                                            labels_or_positions)))
    if labels.ndim == 2:
        labels = labels[..., None]
    if labels.ndim != 3 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"basin labels must be integers shaped (chain, draw) or (chain, "
                         f"draw, variable); got dtype {labels.dtype}, shape {labels.shape}")
    if labels.shape[0] < 2 or labels.shape[1] < 4:
        raise ValueError(f"basins needs at least 2 chains of 4 draws; got labels shaped "
                         f"{labels.shape}")
    if labels.min() < 0:
        raise ValueError(f"basin labels must be >= 0; got {labels.min()}")
    return labels


def basins(labels_or_trace, *, assign: Callable | None = None, names=None, exact=None,
           alpha: float = ALPHA) -> BasinReport:
    """Each basin's share per chain and pooled, crossings, and whether the
    chains weight basins by where they started (module docstring).

    labels_or_trace: integer labels (chain, draw[, variable]), or a Trace (or
        positions with leading (chain, draw) axes) when `assign` is given.
    assign: positions -> labels (chain, draw[, variable]), e.g.
        `ws.slt.basin_target(...).assign`.
    names: basin names (default "0", "1", ...; a target's `basins`). One name
        says there is one basin: nothing to weigh, never flagged (unnamed
        labels that never leave one basin are flagged: another basin may
        exist that no chain found).
    exact: the exact share of each basin, when known (a target's `shares`).
    alpha: false-alarm rate of the whole report when chains agree.
    """
    alpha = probability("alpha", alpha)
    labels = _labels_of(labels_or_trace, assign)
    one_basin = names is not None and len(tuple(names)) == 1
    num_chains, num_draws, num_variables = labels.shape
    k = int(labels.max()) + 1
    if names is not None:
        names = tuple(str(n) for n in names)
        if len(names) < k:
            raise ValueError(f"names={names!r} names {len(names)} basins but the labels "
                             f"go up to {k - 1}")
        k = len(names)
    else:
        names = tuple(str(i) for i in range(k))
    if exact is not None:
        exact = np.asarray(exact, np.float64)
        if exact.shape != (k,) or not np.isclose(exact.sum(), 1.0, atol=1e-6):
            raise ValueError(f"exact must hold one share per basin ({k}) summing to 1; "
                             f"got {exact.tolist()}")

    onehot = labels[..., None] == np.arange(k)                   # (C, N, V, K)
    per_chain = onehot.mean(axis=1)                              # (C, V, K)
    changes = labels[:, 1:] != labels[:, :-1]                    # (C, N-1, V)
    crossed = changes.any(axis=1)                                # (C, V)
    crossings = changes.sum(axis=(1, 2))
    no_crossing = ~crossed.any(axis=0)                           # (V,)

    indicator = onehot.reshape(num_chains, num_draws, -1).astype(np.float64)
    tau = _autocorrelation_time(indicator).reshape(num_variables, k)
    within = indicator.var(axis=1).mean(axis=0).reshape(num_variables, k)
    chain_var = within * tau / num_draws                         # (V, K)
    spread = per_chain - per_chain.mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        chi2 = (spread ** 2).sum(axis=0) / chain_var              # (V, K)
    from scipy import stats  # slow to import; only this test needs it

    # Basins no chain visited for this variable carry no evidence either way.
    visited = per_chain.sum(axis=0) > 0
    pvalue = np.where(visited & np.isfinite(chi2), stats.chi2.sf(chi2, num_chains - 1), 1.0)
    known = visited & np.isfinite(tau)
    ess = np.where(known, num_draws / np.where(known, tau, 1.0), np.inf).min(axis=1)
    ess = np.where(np.isinf(ess), np.nan, ess)  # (V,): NaN where no chain moved
    tested = ~no_crossing & (ess >= MIN_ESS)
    untested = ~no_crossing & ~tested
    disagree = tested & (pvalue < alpha / (num_variables * k)).any(axis=1)
    # Chains that never crossed, sitting in different basins: each kept its
    # start. Chains that never crossed, all in one basin, are no evidence
    # either way (a basin of small mass may simply not have been visited),
    # unless no variable was crossed at all (below).
    stuck_in = ((~crossed)[..., None] & onehot[:, 0]).sum(axis=0)  # (V, K)
    apart = (stuck_in > 0).sum(axis=1) >= 2
    flagged = no_crossing if no_crossing.all() else apart | disagree
    median_ess = float(np.nanmedian(ess)) if np.isfinite(ess).any() else 0.0

    pooled = per_chain.mean(axis=(0, 1))
    within_se = np.sqrt(np.nansum(np.where(np.isfinite(chain_var), chain_var, 0.0), axis=0)
                        / num_chains) / num_variables
    between_se = per_chain.mean(axis=1).std(axis=0, ddof=1) / np.sqrt(num_chains)
    standard_error = np.maximum(within_se, between_se)
    by_start = bool(flagged.any())
    if one_basin:  # the caller says there is one basin (e.g. assign_basins found one)
        flagged = np.zeros_like(flagged)
        by_start = False
        verdict = f"a single basin ({names[0]}): every draw is in it, nothing to weigh"
    elif no_crossing.all():
        verdict = ("basins weighted by where chains started: no chain crossed between "
                   "basins, so each share is where the chains fell during warmup")
    elif by_start:
        verdict = (f"basins weighted by where chains started: {no_crossing.mean():.1%} of "
                   f"the variables no chain crossed, chains that never crossed sit in "
                   f"different basins in {apart.mean():.1%} and the chains disagree "
                   f"beyond Monte Carlo error in {disagree.mean():.1%}")
    elif untested.mean() > 0.5:
        by_start = None
        verdict = (f"too few effective draws to tell: the chains cross, but hold a median "
                   f"of {median_ess:.0f} effective draws each of the basin indicators "
                   f"(at least {MIN_ESS} are needed to test their agreement); run longer")
    else:
        verdict = (f"chains agree on the basins' shares within Monte Carlo error "
                   f"({int(crossings.sum()):,} crossings)")
    return BasinReport(
        names=names, shares=per_chain.mean(axis=1), pooled=pooled,
        standard_error=standard_error, crossings=crossings,
        never_crossed=(~crossed).mean(axis=1), flagged=float(flagged.mean()),
        no_crossing=float(no_crossing.mean()), untested=float(untested.mean()),
        ess_per_chain=median_ess, num_variables=num_variables, exact=exact,
        error=None if exact is None else pooled - exact, weighted_by_start=by_start,
        verdict=verdict)

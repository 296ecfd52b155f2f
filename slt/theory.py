"""Learning coefficients known in closed form, the references LLC estimates are
checked against.

- `regular(d)`: a regular model with d parameters has lambda = d / 2.
- `rrr(M, H, N, r)`: reduced-rank regression y = B A x, A (H x M), B (N x H),
  true product of rank r (Aoyagi and Watanabe 2005, "Stochastic complexities
  of reduced rank regression in Bayesian estimation", Main Theorem).
- `dln(widths, r)`: deep linear network x -> W_L ... W_1 x with layer widths
  (H_1 = input, ..., H_{L+1} = output), true product of rank r (Aoyagi 2024,
  "Consideration on the learning efficiency of multiple-layered neural
  networks with linear units", Neural Networks 172, Main Theorem).
All with the true parameter inside the model and a prior positive there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

from weightspace.checks import nonnegative_int, positive_int


def regular(d: int) -> float:
    """d / 2 for a regular model with d parameters."""
    return nonnegative_int("d", d) / 2


def rrr(M: int, H: int, N: int, r: int) -> float:
    """Reduced-rank regression: input dimension M, hidden (rank bound) H,
    output dimension N, true rank r <= min(M, H, N). Aoyagi and Watanabe's
    four cases:

    - N + r > M + H:  (H M - H r + N r) / 2
    - M + r > N + H:  (H N - H r + M r) / 2
    - H + r > M + N:  M N / 2
    - otherwise:      (2 (H + r)(M + N) - (M - N)^2 - (H + r)^2) / 8,
                      plus 1/8 when M + H + N + r is odd.
    """
    M, H, N = (positive_int(n, v) for n, v in (("M", M), ("H", H), ("N", N)))
    r = nonnegative_int("r", r)
    if r > min(M, H, N):
        raise ValueError(f"r={r} exceeds min(M, H, N) = {min(M, H, N)}")
    if M + H < N + r:
        return (H * M - H * r + N * r) / 2
    if N + H < M + r:
        return (H * N - H * r + M * r) / 2
    if M + N < H + r:
        return M * N / 2
    value = 2 * (H + r) * (M + N) - (M - N) ** 2 - (H + r) ** 2
    return (value + (M + H + N + r) % 2) / 8


def _dln_subset(m: list[int]) -> list[int]:
    """Aoyagi's subset S of the M_j = H_j - r: the smallest values (so max over S
    < min over the rest) with ell = |S| - 1 >= 1, sum_S >= ell * max_S and, when
    the rest is not empty, sum_S < ell * min(rest)."""
    ordered = sorted(m)
    for size in range(2, len(ordered) + 1):
        subset, rest = ordered[:size], ordered[size:]
        ell, total = size - 1, sum(ordered[:size])
        if rest and not subset[-1] < rest[0]:
            continue
        if total >= ell * subset[-1] and (not rest or total < ell * rest[0]):
            return subset
    raise ValueError(f"no subset satisfies Aoyagi's conditions for M = {m}")


def dln(widths: Sequence[int], r: int) -> float:
    """Deep linear network with widths (input, hidden..., output) and a true
    product matrix of rank r <= min(widths).

    With M_j = H_j - r and Aoyagi's subset S (`_dln_subset`), ell = |S| - 1,
    s = sum_S M_j, k = ceil(s / ell) and a = s - (k - 1) ell:

        lambda = (-r^2 + r (H_1 + H_{L+1})) / 2 + a (ell - a) / (4 ell)
                 - ell (ell - 1) / 4 * (s / ell)^2 + 1/2 sum_{i < j in S} M_i M_j.
    """
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence) \
            or len(widths) < 2:
        raise ValueError(f"widths must be (input, ..., output), at least two positive "
                         f"ints; got widths={widths!r}")
    h = [positive_int("widths entry", w) for w in widths]
    r = nonnegative_int("r", r)
    if r > min(h):
        raise ValueError(f"r={r} exceeds the narrowest width {min(h)} of widths={widths!r}")
    subset = _dln_subset([w - r for w in h])
    ell, s = len(subset) - 1, sum(subset)
    k = math.ceil(Fraction(s, ell))
    a = s - (k - 1) * ell
    pairs = sum(subset[i] * subset[j] for i in range(len(subset))
                for j in range(i + 1, len(subset)))
    value = (Fraction(-r * r + r * (h[0] + h[-1]), 2) + Fraction(a * (ell - a), 4 * ell)
             - Fraction(ell * (ell - 1), 4) * Fraction(s, ell) ** 2 + Fraction(pairs, 2))
    return float(value)

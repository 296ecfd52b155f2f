"""Known learning coefficients: cases worked by hand, and the deep-linear formula
agreeing with reduced-rank regression and with regular models where they meet."""

import itertools

import pytest

from weightspace.slt import theory


def test_regular_is_half_the_dimension():
    assert theory.regular(10) == 5.0
    assert theory.regular(0) == 0.0


@pytest.mark.parametrize("M,H,N,r,expected", [
    # Case 1, M + H + N + r = 14 even: (2*4*10 - 0 - 16) / 8 = 8.
    (5, 3, 5, 1, 8.0),
    # Case 1, 5 + 2 + 5 + 1 = 13 odd: (2*3*10 - 0 - 9 + 1) / 8 = 6.5.
    (5, 2, 5, 1, 6.5),
    # M + H < N + r: 2 + 1 < 4 + 1: (1*2 - 1*1 + 4*1) / 2 = 2.5.
    (2, 1, 4, 1, 2.5),
    # N + H < M + r: 2 + 1 < 4 + 1: (1*2 - 1*1 + 4*1) / 2 = 2.5.
    (4, 1, 2, 1, 2.5),
    # M + N < H + r: 1 + 2 < 4 + 1: M N / 2 = 1.
    (1, 4, 2, 1, 1.0),
    # r = 0, case 1: 3+3+3+0 = 9 odd: (2*3*6 - 0 - 9 + 1) / 8 = 3.5.
    (3, 3, 3, 0, 3.5),
])
def test_reduced_rank_regression_cases_worked_by_hand(M, H, N, r, expected):
    assert theory.rrr(M, H, N, r) == expected


def test_deep_linear_worked_by_hand():
    # widths (5, 3, 5), r = 1: M_j = (4, 2, 4); S = all (a pair would need 4 < 4);
    # ell = 2, s = 10, k = 5, a = 2: 4.5 + 0 - 12.5 + 16 = 8.
    assert theory.dln((5, 3, 5), 1) == 8.0
    # widths (3, 4, 4, 3), r = 1: M_j sorted (2, 2, 3, 3). S = {2, 2} fails
    # (sum 4 < 1 * 3 is false), {2, 2, 3} fails (3 < 3 is false), S = all:
    # ell = 3, s = 10 >= 3 * 3; k = 4, a = 1. term1 = (-1 + 6) / 2 = 2.5,
    # term2 = 1 * 2 / 12, term3 = -6/4 * (10/3)^2 = -50/3, pairs = 2*2 + 4*(2*3)
    # + 3*3 = 37 -> 18.5; lambda = 4.5.
    assert theory.dln((3, 4, 4, 3), 1) == pytest.approx(4.5)


def test_a_one_layer_network_is_regular():
    for d_in, d_out in itertools.product(range(1, 6), repeat=2):
        full = min(d_in, d_out)
        assert theory.dln((d_in, d_out), full) == theory.regular(d_in * d_out)


def test_two_layer_deep_linear_equals_reduced_rank_regression():
    for M, H, N in itertools.product(range(1, 7), repeat=3):
        for r in range(0, min(M, H, N) + 1):
            assert theory.dln((M, H, N), r) == pytest.approx(theory.rrr(M, H, N, r)), \
                (M, H, N, r)


def test_learning_coefficients_stay_below_half_the_parameter_count():
    for widths in [(4, 6, 5, 3), (3, 5, 5, 5, 2), (6, 2, 6, 2), (5, 8, 8, 5)]:
        d = sum(a * b for a, b in zip(widths, widths[1:]))
        for r in range(0, min(widths) + 1):
            value = theory.dln(widths, r)
            assert 0 <= value <= d / 2, (widths, r, value)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="r=4"):
        theory.rrr(3, 3, 3, 4)
    with pytest.raises(ValueError, match="widths="):
        theory.dln((3,), 1)
    with pytest.raises(ValueError, match="r=3"):
        theory.dln((3, 2, 3), 3)
    with pytest.raises(ValueError, match="d="):
        theory.regular(-1)

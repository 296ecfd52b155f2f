"""R-hat and ESS: equal to arviz, to the BDA3 formulas, and well-behaved on pytrees."""

import re
import warnings

import jax
import numpy as np
import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # arviz 0.23 announces 1.0 on import
    import arviz as az

from weightspace.diagnostics.ess import ess
from weightspace.diagnostics.rhat import rhat, rhat_summary

ARVIZ_0 = az.__version__.startswith("0.")


def arviz_diagnostic(name: str, arr: np.ndarray, method: str) -> np.ndarray:
    """arviz's rhat/ess of a (chain, draw, ...) array, on 0.23 or 1.x."""
    fn = getattr(az, name)
    if ARVIZ_0:
        return np.asarray(fn(az.convert_to_dataset({"x": arr}), method=method)["x"].values)
    extra = {"prob": (0.05, 0.95)} if method == "tail" else {}  # 1.x has no default
    return np.asarray(fn(arr, method=method, chain_axis=0, draw_axis=1, **extra))


def mixing_cases() -> dict:
    """Random and non-mixing draws, (chain, draw, variable), odd draw counts included."""
    rng = np.random.default_rng(20261122)
    shifted = rng.normal(size=(4, 60, 6))
    shifted[2] += 1.0
    stuck = rng.normal(size=(3, 81, 5))
    stuck[1] = 0.25  # one chain constant at a value
    walk = np.cumsum(rng.normal(size=(3, 120, 5)), axis=1) * 0.1  # autocorrelated
    return {"random": rng.normal(size=(4, 101, 8)),
            "shifted_means": shifted,
            "stuck_chain": stuck,
            "discrete_with_ties": rng.integers(0, 4, size=(3, 51, 7)).astype(np.float64),
            "random_walk": walk}


def float64_cases() -> dict:
    """mixing_cases plus heavy tails, where a float32 pass was 3e-4 off arviz."""
    rng = np.random.default_rng(20261206)
    return {**mixing_cases(),
            "cauchy": rng.standard_cauchy(size=(4, 200, 6)) * 1e3,
            "student_t2": rng.standard_t(2, size=(3, 151, 5))}


@pytest.mark.parametrize("case", list(float64_cases()))
@pytest.mark.parametrize("x64", [False, True])
def test_float64_rhat_and_ess_equal_arviz_to_1e12_without_global_x64(case, x64):
    draws = float64_cases()[case]
    with jax.enable_x64(x64):
        ours = rhat(draws, method="rank")
        ours_ess = {m: ess(draws, method=m) for m in ("bulk", "tail")}
    np.testing.assert_allclose(ours, arviz_diagnostic("rhat", draws, "rank"), rtol=0,
                               atol=1e-12)
    for method, value in ours_ess.items():
        np.testing.assert_allclose(value, arviz_diagnostic("ess", draws, method), rtol=1e-12)


@pytest.mark.parametrize("case", list(mixing_cases()))
def test_rank_rhat_equals_arviz_to_1e4_in_float32(case):
    draws = mixing_cases()[case].astype(np.float32)
    ours = rhat(draws, method="rank")
    np.testing.assert_allclose(ours, arviz_diagnostic("rhat", draws, "rank"), rtol=0, atol=1e-4)


@pytest.mark.parametrize("case", list(mixing_cases()))
@pytest.mark.parametrize("method", ["bulk", "tail"])
def test_ess_within_1_percent_of_arviz(case, method):
    draws = mixing_cases()[case].astype(np.float32)
    np.testing.assert_allclose(ess(draws, method=method),
                               arviz_diagnostic("ess", draws, method), rtol=0.01)


def bda3_rhat(chains: np.ndarray) -> float:
    """BDA3 eq. 11.3-11.4 for one variable, chains: (M, N)."""
    m, n = chains.shape
    b = n / (m - 1) * np.sum((chains.mean(axis=1) - chains.mean()) ** 2)
    w = np.mean([np.sum((c - c.mean()) ** 2) / (n - 1) for c in chains])
    var_plus = (n - 1) / n * w + b / n
    return np.sqrt(var_plus / w)


def test_split_and_classic_rhat_equal_the_bda3_formulas():
    draws = np.array([[1.0, 2.0, 0.5, 3.0, 2.5, 1.5, 9.0],
                      [2.0, 2.2, 1.8, 2.4, 1.6, 2.0, 2.1],
                      [0.0, 4.0, 1.0, 3.0, 2.0, 5.0, 1.0]])[:, :, None]
    # Split: halves of 3 draws, the middle (4th) draw dropped.
    halves = np.concatenate([draws[:, :3, 0], draws[:, 4:, 0]])
    with jax.enable_x64(True):
        np.testing.assert_allclose(rhat(draws, method="split"), [bda3_rhat(halves)], rtol=1e-12)
        np.testing.assert_allclose(rhat(draws, method="classic"), [bda3_rhat(draws[..., 0])],
                                   rtol=1e-12)


def test_constant_variable_gives_nan_rhat_and_full_ess_as_arviz():
    draws = np.ones((3, 20, 1))
    with np.errstate(invalid="ignore"):  # arviz divides 0 by 0
        reference = arviz_diagnostic("rhat", draws, "rank")
    assert np.isnan(reference[0]) and np.isnan(rhat(draws)[0])
    np.testing.assert_array_equal(ess(draws), arviz_diagnostic("ess", draws, "bulk"))


def test_each_leaf_of_a_mixed_precision_pytree_is_computed_in_its_own_dtype():
    cases = float64_cases()
    tree = {"f64": cases["student_t2"], "f32": cases["random"].astype(np.float32),
            "more_f64": cases["cauchy"][:3]}
    together = rhat({k: v[:3, :100] for k, v in tree.items()})
    for name, leaf in tree.items():
        np.testing.assert_array_equal(together[name], rhat(leaf[:3, :100]))
    together_ess = ess({k: v[:3, :100] for k, v in tree.items()}, method="tail")
    np.testing.assert_array_equal(together_ess["f32"], ess(tree["f32"][:3, :100], method="tail"))


def test_pytree_in_pytree_out():
    rng = np.random.default_rng(1)
    tree = {"w": rng.normal(size=(3, 40, 2, 5)).astype(np.float32),
            "b": [rng.normal(size=(3, 40)).astype(np.float32),
                  rng.normal(size=(3, 40, 4)).astype(np.float32)]}
    for fn in (rhat, ess):
        out = fn(tree)
        assert jax.tree_util.tree_structure(out) == jax.tree_util.tree_structure(tree)
        shapes = jax.tree_util.tree_map(np.shape, out)
        assert shapes == {"w": (2, 5), "b": [(), (4,)]}
        assert all(leaf.dtype == np.float64 for leaf in jax.tree_util.tree_leaves(out))
        np.testing.assert_array_equal(out["w"], fn(tree["w"]))


def test_nan_is_isolated_to_its_variable():
    draws = np.random.default_rng(2).normal(size=(3, 40, 4)).astype(np.float32)
    clean = {"rhat": rhat(draws), "ess": ess(draws)}
    draws[1, 7, 2] = np.nan
    for name, out in (("rhat", rhat(draws)), ("ess", ess(draws))):
        assert np.isnan(out[2])
        np.testing.assert_array_equal(np.delete(out, 2), np.delete(clean[name], 2))


@pytest.mark.parametrize("shape", [(1, 40, 3), (3, 3, 2), (40,)])
def test_fewer_than_2_chains_or_4_draws_raise_naming_the_shape(shape):
    with pytest.raises(ValueError, match=r"draws.*" + re.escape(str(shape))):
        rhat(np.zeros(shape))


def test_ess_rejects_fewer_than_4_draws_and_unknown_methods():
    with pytest.raises(ValueError, match=r"draws\['a'\].*\(2, 3\)"):
        ess({"a": np.zeros((2, 3))})
    with pytest.raises(ValueError, match="method"):
        rhat(np.zeros((2, 8)), method="bulk")


def test_chunked_equals_unchunked():
    rng = np.random.default_rng(3)
    tree = [rng.normal(size=(3, 30, 7)).astype(np.float32),
            rng.integers(0, 3, size=(3, 30, 2, 3)).astype(np.float32)]
    for fn, kwargs in ((rhat, {}), (rhat, {"method": "split"}), (ess, {"method": "tail"})):
        whole = fn(tree, **kwargs)
        for chunk_size in (1, 4, 10):
            for a, b in zip(fn(tree, chunk_size=chunk_size, **kwargs), whole):
                np.testing.assert_array_equal(a, b)


def test_rhat_summary_pools_leaves_and_counts_nan_as_not_below():
    values = {"a": np.array([1.0, 1.005, np.nan]), "b": np.array([[1.05, 1.2]])}
    summary = rhat_summary(values)
    assert summary["count"] == 5 and summary["nan_count"] == 1
    assert summary["fraction_below"] == {1.1: 3 / 5, 1.01: 2 / 5}
    expected = np.quantile([1.0, 1.005, 1.05, 1.2], [0.5, 0.9, 0.99, 1.0])
    np.testing.assert_allclose(list(summary["quantiles"].values()), expected)

"""Permutation alignment: aligned draws compute the same function, exact
relabellings are undone, and aligned R-hat separates relabelled chains from
chains in different basins."""

import jax
import numpy as np
import pytest
from flax import nnx

import weightspace as ws

NETWORKS = {
    "mlp": (ws.models.MLP((7, 5), 3), (4,), "float"),
    "deep_linear": (ws.models.DeepLinear((4, 6, 5, 3)), (4,), "float"),
    "lenet5": (ws.models.LeNet5(3), (16, 16, 2), "float"),
    "resnet20frn": (ws.models.ResNet20FRN(3, width=4), (8, 8, 3), "float"),
    "resnet8frn": (ws.models.ResNet20FRN(3, width=4, blocks_per_stage=1), (8, 8, 3),
                   "float"),
    "cnn_lstm": (ws.models.CNNLSTM(vocab_size=30, num_outputs=2, embedding_dim=6,
                                   num_filters=5, kernel_size=3, pool_size=2,
                                   hidden_size=4), (12,), "tokens"),
}


def _init(network, input_shape, seed):
    module = network.build(input_shape, rngs=nnx.Rngs(seed))
    graphdef, state = nnx.split(module, nnx.Param)
    params = nnx.to_pure_dict(state)
    # Non-zero biases and norm parameters, so every permuted leaf carries signal.
    # Drawn flat and reshaped: the same numbers (threefry counts elements in
    # row-major order), but one quick compile per leaf size instead of a slow one
    # per multi-dimensional shape.
    keys = iter(jax.random.split(jax.random.key(100 + seed), 200))
    params = jax.tree.map(
        lambda w: np.asarray(w + 0.3 * jax.random.normal(next(keys), (w.size,)).reshape(w.shape)),
        params)
    return graphdef, state, params


def _apply(graphdef, state, params, x):
    nnx.replace_by_pure_dict(state, params)
    return np.asarray(nnx.merge(graphdef, state)(x))


def _inputs(kind, input_shape, seed=0):
    rng = np.random.default_rng(seed)
    if kind == "tokens":
        return rng.integers(0, 30, size=(6, *input_shape)).astype(np.int32)
    return rng.normal(size=(6, *input_shape)).astype(np.float32)


def _stack(draws):
    """[[chain 0 draws], [chain 1 draws]] of param dicts -> leaves (chain, draw, ...)."""
    return jax.tree.map(lambda *xs: np.stack(xs).reshape(len(draws), len(draws[0]),
                                                          *np.shape(xs[0])),
                        *[d for chain in draws for d in chain])


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_aligned_draws_compute_the_same_outputs(name):
    network, input_shape, kind = NETWORKS[name]
    graphdef, state, _ = _init(network, input_shape, 0)
    draws = [[_init(network, input_shape, 2 * c + d)[2] for d in range(2)] for c in range(2)]
    positions = _stack(draws)
    aligned, perms = ws.diagnostics.align_permutations(positions, network,
                                                       return_permutations=True)
    assert jax.tree.structure(aligned) == jax.tree.structure(positions)
    x = _inputs(kind, input_shape)
    moved = False
    for c in range(2):
        for d in range(2):
            raw = jax.tree.map(lambda w, c=c, d=d: w[c, d], positions)
            new = jax.tree.map(lambda w, c=c, d=d: w[c, d], aligned)
            np.testing.assert_allclose(_apply(graphdef, state, new, x),
                                       _apply(graphdef, state, raw, x),
                                       rtol=2e-5, atol=2e-5)
            moved |= any(not np.array_equal(p[c, d], np.arange(p.shape[-1]))
                         for p in perms.values())
    # Independent random networks are not already aligned with each other.
    assert moved
    # The reference draw (chain 0, last draw) is left as it is.
    for p in perms.values():
        np.testing.assert_array_equal(p[0, -1], np.arange(p.shape[-1]))
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a[0, -1], b[0, -1]),
                 aligned, positions)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_a_relabelled_copy_is_aligned_back_exactly(name):
    """Aligning network A to an unrelated network B gives A relabelled; aligning
    that copy to A must give back A exactly."""
    network, input_shape, _ = NETWORKS[name]
    a = _init(network, input_shape, 0)[2]
    b = _init(network, input_shape, 1)[2]
    one = lambda tree: jax.tree.map(lambda w: w[None, None], tree)
    relabelled = jax.tree.map(lambda w: w[0, 0],
                              ws.diagnostics.align_permutations(one(a), network, reference=b))
    assert not all(np.array_equal(x, y) for x, y in
                   zip(jax.tree.leaves(relabelled), jax.tree.leaves(a)))
    back = ws.diagnostics.align_permutations(one(relabelled), network, reference=a)
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(x[0, 0], y), back, a)


def _relabel_mlp(params, perms):
    """An MLP's params with hidden units of layer i relabelled by perms[i] (unit
    j of the result is unit perms[i][j] of the input)."""
    out = jax.tree.map(np.array, params)
    for i, p in enumerate(perms):
        out["layers"][i]["kernel"] = out["layers"][i]["kernel"][:, p]
        out["layers"][i]["bias"] = out["layers"][i]["bias"][p]
        out["layers"][i + 1]["kernel"] = out["layers"][i + 1]["kernel"][p, :]
    return out


def _chain(center, rng, num_draws, scale):
    return [jax.tree.map(lambda w: w + scale * rng.normal(size=w.shape), center)
            for _ in range(num_draws)]


def test_relabelled_chains_get_aligned_rhat_near_one_but_other_basins_do_not():
    network = ws.models.MLP((16, 16), 3)
    _, _, w0 = _init(network, (8,), 0)
    _, _, w1 = _init(network, (8,), 1)
    rng = np.random.default_rng(0)
    perms = [rng.permutation(16), rng.permutation(16)]
    num_draws, scale = 100, 0.05
    same_basin = _stack([_chain(w0, rng, num_draws, scale),
                         _chain(_relabel_mlp(w0, perms), rng, num_draws, scale)])
    raw = ws.diagnostics.rhat_summary(ws.diagnostics.rhat(same_basin))
    aligned_positions, found = ws.diagnostics.align_permutations(
        same_basin, network, return_permutations=True)
    aligned = ws.diagnostics.rhat_summary(ws.diagnostics.rhat(aligned_positions))
    # Relabelled units' chain means are far apart against a within-chain sd of
    # 0.05, so the chains do not overlap; rank R-hat of two fully separated
    # chains is bounded (about 1.8 with 2 chains split in 4), so "large" is > 1.5.
    assert raw["quantiles"][0.5] > 1.5
    assert raw["fraction_below"][1.1] < 0.2
    # Aligned, both chains are draws around the same weights. With 2 chains x
    # 100 draws of independent noise, rank R-hat above 1.1 has probability
    # well below 1e-3 per weight.
    assert aligned["fraction_below"][1.1] == 1.0
    assert aligned["quantiles"][1.0] < 1.1
    # Chain 1's draws are mapped back by the inverse relabelling.
    for i, p in enumerate(perms):
        assert np.all(found[f"layers.{i}"][1] == np.argsort(p))
        assert np.all(found[f"layers.{i}"][0] == np.arange(16))

    other_basin = _stack([_chain(w0, rng, num_draws, scale),
                          _chain(w1, rng, num_draws, scale)])
    apart = ws.diagnostics.rhat_summary(ws.diagnostics.rhat(
        ws.diagnostics.align_permutations(other_basin, network)))
    assert apart["quantiles"][0.5] > 1.5
    assert apart["fraction_below"][1.1] < 0.2


def test_loaded_runs_with_string_keys_and_posteriors_are_accepted(digits):
    network = ws.models.MLP((6,), 10)
    post = ws.models.posterior(network, digits, prior_variance=0.2)
    params = jax.tree.map(np.asarray, post.init())
    as_loaded = {"layers": {str(k): v for k, v in params["layers"].items()}}
    positions = jax.tree.map(lambda w: np.stack([w, w])[:, None], as_loaded)
    aligned = ws.diagnostics.align_permutations(positions, post)
    assert set(aligned["layers"]) == {"0", "1"}
    jax.tree.map(np.testing.assert_array_equal, aligned, positions)


def test_bad_arguments_are_named():
    network = ws.models.MLP((4,), 2)
    _, _, w = _init(network, (3,), 0)
    positions = jax.tree.map(lambda x: np.stack([x, x])[:, None], w)
    with pytest.raises(TypeError, match="network="):
        ws.diagnostics.align_permutations(positions, "mlp")
    with pytest.raises(ValueError, match="names leaf 'layers.7.kernel'"):
        ws.diagnostics.align_permutations(positions, {"h": [("layers.7.kernel", 0)]})
    with pytest.raises(ValueError, match="different sizes"):
        ws.diagnostics.align_permutations(
            positions, {"h": [("layers.0.kernel", 0), ("layers.0.kernel", 1)]})
    with pytest.raises(ValueError, match="cannot be viewed"):
        ws.diagnostics.align_permutations(positions, {"h": [("layers.0.kernel", 0, (5, 5))]})
    with pytest.raises(ValueError, match="reference="):
        ws.diagnostics.align_permutations(positions, network, reference=(2, 0))
    with pytest.raises(ValueError, match="max_sweeps="):
        ws.diagnostics.align_permutations(positions, network, max_sweeps=0)
    with pytest.raises(ValueError, match=r"\(chain, draw, ...\)"):
        ws.diagnostics.align_permutations({"a": np.zeros((2, 3)), "b": np.zeros((3, 3))},
                                          {})

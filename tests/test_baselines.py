"""Baselines: SGD (the MAP), deep ensembles, mean-field VI.

Run as a script, this file is the worker of the kill-and-resume test:
    python test_baselines.py RUN_DIR
"""

import functools
import json
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import weightspace as ws
from weightspace.leaf_names import named_leaves

# Weak prior (weight decay 1 / (10 N) per example) and a large learning rate: members
# end in different places, so the ensemble has something to average; with
# prior_variance 1/5 the members' test predictions nearly coincide and the
# ensemble's NLL gain is within the spread between runs.
PRIOR_VARIANCE = 10.0
SETTINGS = {"num_epochs": 10, "batch_size": 64, "learning_rate": 0.3}


@pytest.fixture(scope="module")
def post(digits):
    return ws.models.posterior(ws.models.MLP((256, 256), 10), digits,
                               prior_variance=PRIOR_VARIANCE)


@pytest.fixture(scope="module")
def sgd_run(post, digits):
    return ws.samplers.sgd(post, jax.random.key(0), eval_x=digits.x_test, progress=False, **SETTINGS)


@pytest.fixture(scope="module")
def small_post():
    data = ws.data.load("digits", n_train=300)
    return ws.models.posterior(ws.models.MLP((8,), 10), data, prior_variance=0.2)


def test_sgd_on_the_digits_mlp_reaches_95_percent_test_accuracy(sgd_run, digits):
    assert sgd_run.num_chains == 1 and sgd_run.num_draws == 1
    assert sgd_run.positions["layers"][0]["kernel"].shape == (1, 1, 64, 256)
    assert sgd_run.predictions.shape == (1, 1, len(digits.y_test), 10)
    probs = sgd_run.predictions[0, 0]
    assert ws.diagnostics.accuracy(probs, digits.y_test) >= 0.95
    for name in ("loss", "nll", "learning_rate"):
        assert sgd_run.stats[name].shape == (1, 1) and np.isfinite(sgd_run.stats[name]).all()
    assert sgd_run.stats["nll"][0, 0] < 0.05  # the training set is fitted


def test_a_five_member_deep_ensemble_has_lower_test_nll_than_one_sgd_run(post, sgd_run,
                                                                         digits):
    trace = ws.samplers.deep_ensemble(post, jax.random.key(0), 5, eval_x=digits.x_test, progress=False,
                          **SETTINGS)
    assert trace.num_chains == 5 and trace.num_draws == 1
    assert trace.predictions.shape == (5, 1, len(digits.y_test), 10)
    kernels = trace.positions["layers"][0]["kernel"][:, 0]
    assert all(not np.allclose(kernels[i], kernels[j])
               for i in range(5) for j in range(i + 1, 5))  # independent members
    ensemble = ws.diagnostics.nll(ws.diagnostics.ensemble_predictive(trace), digits.y_test)
    single = ws.diagnostics.nll(sgd_run.predictions[0, 0], digits.y_test)
    assert ensemble < single


def test_mfvi_at_the_sgd_solution_draws_with_the_fitted_scales_and_normalized_predictive(
        post, sgd_run, digits):
    params = jax.tree.map(lambda w: w[0, 0], sgd_run.positions)
    trace = ws.samplers.mfvi(post, jax.random.key(1), init=params, num_epochs=2, batch_size=64,
                 num_samples=20, eval_x=digits.x_test, progress=False)
    assert trace.num_chains == 1 and trace.num_draws == 20
    assert trace.predictions.shape == (1, 20, len(digits.y_test), 10)
    np.testing.assert_allclose(trace.predictions.sum(-1), 1.0, atol=1e-5)
    assert np.isfinite(trace.info["elbo_loss"]).all() and len(trace.info["elbo_loss"]) == 2
    assert trace.stats["loss"].shape == (1, 20)

    draws = named_leaves(trace.positions)
    loc = named_leaves(trace.info["loc"])
    scale = named_leaves(trace.info["scale"])
    mode = named_leaves(params)
    z = []
    for name, x in draws.items():
        x = np.asarray(x[0])
        assert all(not np.array_equal(x[i], x[j]) for i in range(20) for j in range(i))
        assert not np.allclose(x, np.asarray(mode[name])[None])
        # 2 epochs of Adam at 1e-4 move the scales little from init_scale = 0.1
        summary = trace.info["scale_summary"][name]
        assert 0.09 < summary["min"] <= summary["mean"] <= summary["max"] < 0.11
        z.append(((x - loc[name]) / scale[name]).ravel())
    z = np.concatenate(z)
    # Standardized draws are N(0, 1): mean 0 and mean square 1 up to 5 Monte
    # Carlo standard errors (1 / sqrt(n) and sqrt(2 / n)).
    assert abs(z.mean()) < 5 / np.sqrt(z.size)
    assert abs(np.mean(z ** 2) - 1) < 5 * np.sqrt(2 / z.size)


# ------------------------------------------------------------------ run directories

SMALL_RUN = {"num_chains": 2, "num_epochs": 15, "batch_size": 20, "learning_rate": 0.1,
             "checkpoint_every": 1, "progress": False}


def _small_init(num_chains=2):
    """He-scaled starting weights of MLP((8,), 10) on 8x8 digits, built with numpy
    (cheaper to start from than compiling the network's initializer)."""
    rng = np.random.default_rng(0)

    def layer(n_in, n_out):
        kernel = rng.normal(size=(num_chains, n_in, n_out)) * np.sqrt(2 / n_in)
        return {"kernel": kernel.astype(np.float32),
                "bias": np.zeros((num_chains, n_out), np.float32)}

    return {"layers": {0: layer(64, 8), 1: layer(8, 10)}}


def _small_run(run_dir, post=None, **overrides):
    data = ws.data.load("digits", n_train=300)
    if post is None:
        post = ws.models.posterior(ws.models.MLP((8,), 10), data, prior_variance=0.2)
    return ws.samplers.sgd(post, jax.random.key(11), init=_small_init(), eval_x=data.x_test[:20],
               run_dir=run_dir, **{**SMALL_RUN, **overrides})


def _committed_step(run_dir) -> int:
    try:
        return json.loads((Path(run_dir) / "manifest.json").read_text())["step"] or 0
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


def _worker(run_dir, wait=True):
    cmd = [sys.executable, __file__, str(run_dir)]
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def _assert_same_trace(a, b):
    for x, y in zip(jax.tree.leaves(a.positions), jax.tree.leaves(b.positions)):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.predictions, b.predictions)
    assert set(a.stats) == set(b.stats)
    for k in a.stats:
        np.testing.assert_array_equal(a.stats[k], b.stats[k])


def test_sgd_killed_mid_run_resumes_to_the_parameters_of_an_uninterrupted_run(
        tmp_path, small_post):
    uninterrupted = _small_run(None, small_post)  # in memory, the same as on disk
    assert uninterrupted.num_chains == 2 and uninterrupted.num_draws == 1
    run_dir = tmp_path / "run"
    proc = _worker(run_dir, wait=False)
    try:
        deadline = time.monotonic() + 300
        while _committed_step(run_dir) < 3 and proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(random.Random(0).uniform(0.0, 0.2))
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL  # killed mid-run, not finished
    assert 3 <= _committed_step(run_dir) < SMALL_RUN["num_epochs"]
    _worker(run_dir)
    _assert_same_trace(ws.samplers.load(run_dir), uninterrupted)

    # A finished run directory gives its result back (no epoch is run again),
    # and refuses to be continued with another configuration.
    _assert_same_trace(_small_run(run_dir, small_post), uninterrupted)
    assert _committed_step(run_dir) == SMALL_RUN["num_epochs"] + 1
    with pytest.raises(ValueError, match="learning_rate"):
        _small_run(run_dir, small_post, learning_rate=0.2)


@pytest.mark.parametrize("train", ["sgd", "deep_ensemble"])
def test_checkpoints_every_k_epochs_end_at_the_parameters_of_a_run_without_them(small_post,
                                                                                 train):
    kw = dict(num_epochs=6, batch_size=32, learning_rate=1e-3, progress=False)
    run = (functools.partial(ws.samplers.sgd, num_chains=2) if train == "sgd"
           else functools.partial(ws.samplers.deep_ensemble, num_members=2))
    end = run(small_post, jax.random.key(3), **kw)
    kept = run(small_post, jax.random.key(3), save_every=2, **kw)
    assert kept.num_chains == 2 and kept.num_draws == 3 and end.num_draws == 1
    for a, b in zip(jax.tree.leaves(kept.positions), jax.tree.leaves(end.positions)):
        np.testing.assert_allclose(a[:, -1], b[:, 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(kept.stats["loss"][:, -1], end.stats["loss"][:, 0], rtol=1e-5)
    # The checkpoints are where training was, not copies of its end.
    first = jax.tree.leaves(kept.positions)[0]
    assert not np.allclose(first[:, 0], first[:, -1])
    # Each checkpoint costs its 2 epochs: 9 steps x 32 rows of 300, in full-batch gradients.
    np.testing.assert_allclose(kept.stats["grad_evals"], 2 * 9 * 32 / 300, rtol=1e-6)


def test_checkpoints_at_listed_epochs_equal_those_of_every_epoch(small_post, tmp_path):
    kw = dict(num_chains=2, num_epochs=6, batch_size=32, learning_rate=1e-3, progress=False)
    every = ws.samplers.sgd(small_post, jax.random.key(3), save_every=1, **kw)
    listed = ws.samplers.sgd(small_post, jax.random.key(3), save_at=[1, 2, 4, 6], **kw)
    assert listed.num_draws == 4
    for a, b in zip(jax.tree.leaves(listed.positions), jax.tree.leaves(every.positions)):
        np.testing.assert_allclose(a, b[:, [0, 1, 3, 5]], rtol=1e-5, atol=1e-6)
    # Each draw costs its own epochs: 1, 1, 2 and 2 of 9 steps x 32 rows of 300.
    np.testing.assert_allclose(listed.stats["grad_evals"],
                               np.array([[1, 1, 2, 2]] * 2) * 9 * 32 / 300, rtol=1e-6)
    # Stored like draws (a SIGKILL mid-run resumes exactly:
    # tests/test_hmc_runs.py, "sgd_checkpoints"), read back lazily.
    ws.samplers.sgd(small_post, jax.random.key(3), save_at=[1, 2, 4, 6], run_dir=tmp_path,
                    **kw)
    loaded = ws.samplers.load(tmp_path, template=small_post.init(jax.random.key(0)))
    assert loaded.num_draws == 4 and loaded.info["config"]["save_at"] == [1, 2, 4, 6]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b),
                                                         rtol=1e-6, atol=1e-7),
                 loaded.positions, listed.positions)


# ------------------------------------------------------------------ bad input

def _call(fn, post, **overrides):
    kwargs = {"num_epochs": 1, "batch_size": 10, "learning_rate": 0.1, "progress": False}
    return fn(post, jax.random.key(0), **{**kwargs, **overrides})


@pytest.mark.parametrize("overrides, shown", [
    ({"batch_size": 0}, "batch_size=0"),
    ({"batch_size": 301}, "batch_size=301"),
    ({"num_epochs": 0}, "num_epochs=0"),
    ({"learning_rate": -1}, "learning_rate=-1"),
    ({"learning_rate": float("nan")}, "learning_rate=nan"),
    ({"optimizer": "rmsprop"}, "optimizer='rmsprop'"),
    ({"momentum": 1.5}, "momentum=1.5"),
    ({"schedule": "linear"}, "schedule='linear'"),
    ({"num_chains": 0}, "num_chains=0"),
    ({"save_every": 0}, "save_every=0"),
    ({"num_epochs": 3, "save_every": 2}, "save_every=2 does not divide num_epochs=3"),
    ({"num_epochs": 4, "save_at": [1, 3]}, "save_at must be increasing epochs from 1 to "
                                           "num_epochs=4, the last num_epochs"),
    ({"num_epochs": 4, "save_at": [2, 2, 4]}, "save_at=[2, 2, 4]"),
    ({"num_epochs": 4, "save_at": [0, 4]}, "save_at=[0, 4]"),
    ({"num_epochs": 4, "save_at": [1.5, 4]}, "save_at=[1.5, 4]"),
    ({"num_epochs": 4, "save_at": "all"}, "save_at='all'"),
    ({"num_epochs": 4, "save_every": 2, "save_at": [2, 4]}, "give save_every or save_at"),
])
def test_sgd_refuses_bad_input_naming_the_argument_and_value(small_post, overrides, shown):
    with pytest.raises((ValueError, TypeError), match=re.escape(shown)):
        _call(ws.samplers.sgd, small_post, **overrides)


def test_deep_ensemble_refuses_bad_input_naming_the_argument_and_value(small_post):
    with pytest.raises(ValueError, match=re.escape("num_members=0")):
        ws.samplers.deep_ensemble(small_post, jax.random.key(0), 0, num_epochs=1, batch_size=10,
                      learning_rate=0.1)
    with pytest.raises(TypeError, match=re.escape("num_chains=3")):
        ws.samplers.deep_ensemble(small_post, jax.random.key(0), 2, num_chains=3, num_epochs=1,
                      batch_size=10, learning_rate=0.1)
    with pytest.raises(ValueError, match=re.escape("batch_size=301")):
        ws.samplers.deep_ensemble(small_post, jax.random.key(0), 2, num_epochs=1, batch_size=301,
                      learning_rate=0.1)


def test_mfvi_refuses_bad_input_naming_the_argument_and_value(small_post):
    one = small_post.init()
    stacked = jax.tree.map(lambda w: w[None, None], one)
    cases = [({"init": one, "batch_size": 0}, "batch_size=0"),
             ({"init": one, "batch_size": 301}, "batch_size=301"),
             ({"init": one, "num_epochs": 0}, "num_epochs=0"),
             ({"init": one, "learning_rate": -1}, "learning_rate=-1"),
             ({"init": one, "init_scale": 0.0}, "init_scale=0.0"),
             ({"init": one, "num_samples": 0}, "num_samples=0"),
             ({"init": one, "schedule": "linear"}, "schedule='linear'"),
             ({"init": stacked}, "w[0, 0]")]
    for overrides, shown in cases:
        kwargs = {"num_epochs": 1, "batch_size": 10, "progress": False, **overrides}
        with pytest.raises((ValueError, TypeError), match=re.escape(shown)):
            ws.samplers.mfvi(small_post, jax.random.key(0), **kwargs)


if __name__ == "__main__":
    _small_run(sys.argv[1])
    print("done", flush=True)

"""Bit-identical behaviour across the sampler protocol rewrite (issue 13): for
fixed seeds, every sampler's draws, predictions and stats equal those the code
before the rewrite made on this machine: tests/data/reference_runs.npz (written
by tests/reference_runs.py at that commit) when it was made on this CPU and
JAX, else arrays the pre-rewrite commit makes here, from git (XLA:CPU's floats
depend on the host's instruction set, so arrays from another CPU cannot be
compared bit for bit)."""

from pathlib import Path

import numpy as np
import pytest

import reference_runs

RUNS = reference_runs.runs()
CACHE = Path(__file__).resolve().parents[1] / ".pytest_cache" / "reference-runs"


@pytest.fixture(scope="module")
def reference():
    stored = np.load(reference_runs.PATH)
    here = reference_runs.fingerprint()
    if reference_runs.stored_fingerprint(stored) == here:
        return stored
    remade = CACHE / f"{here['cpu']}-jax{here['jax']}-jaxlib{here['jaxlib']}.npz"
    if not remade.is_file():
        try:
            reference_runs.remake_from_base_commit(remade)
        except RuntimeError as err:
            pytest.skip(f"tests/data/reference_runs.npz was made on another CPU or JAX "
                        f"({reference_runs.stored_fingerprint(stored)}; here {here}), and the "
                        f"pre-rewrite code could not be run here to remake it: {err}")
    arrays = np.load(remade)
    assert reference_runs.stored_fingerprint(arrays) == here
    return arrays


@pytest.mark.parametrize("name", sorted(RUNS))
def test_draws_predictions_and_stats_equal_the_pre_rewrite_code(name, reference):
    got = reference_runs.arrays_of(RUNS[name]())
    expected = {k.split(":", 1)[1]: reference[k] for k in reference.files
                if k.startswith(name + ":")}
    assert expected, name
    # The rewrite added one stat, the gradient count; everything else is unchanged.
    assert set(got) - set(expected) == {"stats/grad_evals"}
    assert set(expected) <= set(got)
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=f"{name}: {key}")

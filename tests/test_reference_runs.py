"""Bit-identical behaviour across the sampler protocol rewrite (issue 13): for
fixed seeds, every sampler's draws, predictions and stats equal those the code
before the rewrite made (tests/data/reference_runs.npz, written by
tests/reference_runs.py at that commit)."""

import numpy as np
import pytest

import reference_runs

REFERENCE = np.load(reference_runs.PATH)
RUNS = reference_runs.runs()


@pytest.mark.parametrize("name", sorted(RUNS))
def test_draws_predictions_and_stats_equal_the_pre_rewrite_code(name):
    got = reference_runs.arrays_of(RUNS[name]())
    expected = {k.split(":", 1)[1]: REFERENCE[k] for k in REFERENCE.files
                if k.startswith(name + ":")}
    assert expected, name
    # The rewrite added one stat, the gradient count; everything else is unchanged.
    assert set(got) - set(expected) == {"stats/grad_evals"}
    assert set(expected) <= set(got)
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=f"{name}: {key}")

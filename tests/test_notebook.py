"""examples/quickstart.ipynb is stored clean and runs from top to bottom in a
Jupyter kernel of this interpreter with its small sizes; there its deep linear
network LLC is within 15% of Aoyagi's learning coefficient."""

import json
import math
import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"

# Appended to the executed copy only: the notebook's results as one JSON line.
REPORT = """
import json, sys
print("REPORT " + json.dumps({
    "executable": sys.executable,
    "small": SMALL,
    "devices": len(jax.devices()),
    "chains_draws": [trace.num_chains, trace.num_draws],
    "predictions": list(trace.predictions.shape),
    "ensemble": metrics["ensemble of all draws"],
    "num_weights": post.num_params(w_star),
    "llc": float(llc_est.mean), "llc_flags": llc_est.flags,
    "dln_llc": float(dln_llc.mean), "dln_std": float(dln_llc.std),
    "dln_chains": len(dln_llc.per_chain), "dln_flags": dln_llc.flags, "theory": theory,
}))
"""


def _outputs(nb, cell_id):
    [cell] = [c for c in nb.cells if c.get("id") == cell_id]
    return cell.outputs


def _stdout(nb, cell_id):
    return "".join(o.get("text", "") for o in _outputs(nb, cell_id)
                   if o.output_type == "stream" and o.name == "stdout")


def test_the_notebook_is_valid_nbformat_4_and_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=nbformat.NO_CONVERT)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The notebook run with WEIGHTSPACE_NOTEBOOK_SMALL=1 in a fresh temporary
    directory; nbclient raises CellExecutionError on the first failing cell."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(REPORT, id="test-report"))
    # One CPU device, what a notebook user has by default (the session's 8
    # simulated devices are for the sharding tests).
    env = dict(os.environ, WEIGHTSPACE_NOTEBOOK_SMALL="1", JAX_NUM_CPU_DEVICES="1")
    cwd = tmp_path_factory.mktemp("notebook")
    # "python3" is ipykernel's kernel spec, which jupyter_client starts with this
    # interpreter (the report below checks that).
    client = NotebookClient(nb, kernel_name="python3", timeout=600, startup_timeout=120)
    client.execute(env=env, cwd=str(cwd))
    [line] = [ln for ln in _stdout(nb, "test-report").splitlines()
              if ln.startswith("REPORT ")]
    return nb, json.loads(line[len("REPORT "):])


def test_the_notebook_runs_in_a_kernel_of_this_interpreter_with_small_sizes(executed):
    _, report = executed
    assert os.path.samefile(report["executable"], sys.executable), report["executable"]
    assert report["small"] is True and report["devices"] == 1
    chains, draws = report["chains_draws"]
    assert report["predictions"] == [chains, draws, 360, 10]


def test_the_notebook_shows_the_summary_figure_and_metrics(executed):
    nb, report = executed
    assert "R-hat (rank)" in _stdout(nb, "summary")
    assert "weights (aligned)" in _stdout(nb, "summary")
    assert any("image/png" in o.get("data", {}) for o in _outputs(nb, "rhat-figure"))
    assert "ensemble of all draws" in _stdout(nb, "predictive")
    # Ten classes: chance is 0.1; even the short small-setting chains predict well.
    assert report["ensemble"]["accuracy"] > 0.9, report["ensemble"]
    assert "DLN lambda_hat" in _stdout(nb, "dln")


def test_the_llc_at_the_sgd_solution_is_positive_and_below_d_over_2(executed):
    _, report = executed
    assert report["llc_flags"] == [], report
    assert 0 < report["llc"] < report["num_weights"] / 2, report


def test_the_deep_linear_network_llc_is_within_15_percent_of_theory(executed):
    _, report = executed
    truth, mean = report["theory"], report["dln_llc"]
    assert truth == 6.0 and report["dln_flags"] == [], report
    # The standard error across chains is small against the tolerance, so a
    # failure is bias, not Monte Carlo noise.
    assert report["dln_std"] / math.sqrt(report["dln_chains"]) < 0.05 * truth, report
    assert abs(mean - truth) < 0.15 * truth, report

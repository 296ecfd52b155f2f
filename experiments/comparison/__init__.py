"""`compare`: HMC against SGD, a deep ensemble, SGLD, cyclical SGHMC and
mean-field VI on one posterior (Izmailov et al. 2021), with R-hat in weight
and function space and local learning coefficients at the solutions. The
command line is `weightspace compare` (weightspace.cli.compare).

    import weightspace as ws
    results = ws.experiments.compare("quick", "runs/compare")

Stages, in order: one per method (hmc, sgd, deep_ensemble, sgld, csghmc, mfvi),
then rhat (HMC's R-hat of weights, aligned weights and predictions, rhat.png),
metrics (accuracy, NLL, ECE, Brier of each method's ensemble predictive,
agreement and total variation against HMC's; reliability.png,
nll_vs_samples.png), llc (at the SGD solution, every ensemble member and
chosen HMC draws, each with its own test metrics) and report (report.md).

The output directory OUT holds:

    compare.json          the settings (preset, smoke, seed): a rerun with other
                          settings is refused
    runs/<method>/        the samplers' run directories (mfvi: its predictions
                          as .npy), so a killed stage resumes where it stopped
    stages/<stage>.json   a stage's record: status ("ok" or "failed" or
                          "skipped"), seconds, result or error, and the statuses
                          of the stages it read ("inputs")
    results.json          every record gathered (see `RESULTS_SCHEMA`)
    report.md, rhat.png, reliability.png, nll_vs_samples.png,
    llc_vs_generalization.png and .json (ws.experiments.llc_vs_generalization)

A stage whose record says "ok" with the same inputs is resumed (not run
again); a failed or skipped one runs again. A stage that raises is recorded
with its error and the others still run; one that needs a failed stage (mfvi
starts at the SGD solution, rhat reads HMC) is skipped with the reason.

The methods are a registry (ws.experiments.methods): a sampler added there
with `register(Method(...))` runs as a stage of its own, before the analyses,
and reaches results.json, the table, the figures and `--set`.

Modules: `settings` (stages, preset resolution, the output directory check),
`state` (`Run`, what the stages share), `stages` (one function per stage; the
built-in methods' registry entries), `report` (results.json, the methods table,
report.md, figures) and `run` (`compare`: the stages in order, resumed or
recorded).
"""

from weightspace.experiments.comparison import settings as _settings
from weightspace.experiments.comparison.report import RESULTS_SCHEMA, format_table
from weightspace.experiments.comparison.run import compare
from weightspace.experiments.comparison.settings import FIGURES, METRICS, CompareError
from weightspace.experiments.comparison.stages import running_nll, sampler_result
from weightspace.experiments.methods import LABELS, METHODS

__all__ = ["FIGURES", "LABELS", "LLC_METHODS", "METHODS", "METRICS", "RESULTS_SCHEMA",
           "STAGES", "CompareError", "compare", "format_table", "running_nll",
           "sampler_result"]


def __getattr__(name: str):
    # STAGES and LLC_METHODS follow the methods registry: read when asked for.
    if name == "STAGES":
        return _settings.stages()
    if name == "LLC_METHODS":
        return _settings.llc_methods()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Studies composed from the library.

- `compare(preset, out)`: HMC against SGD, a deep ensemble, SGLD, cyclical
  SGHMC and mean-field VI on one posterior, with R-hat in weight and function
  space and local learning coefficients (`weightspace compare`).
- `presets`: the typed settings of those runs (`PRESETS`: quick, paper-cifar10,
  paper-imdb, paper-mnist; `presets.smoke`, `presets.override`).
- `mixing(trace, network)`: R-hat of raw and aligned weights and of predictions
  against chain length (`weightspace mixing`).
- `llc_vs_generalization(out)`: the LLCs of a comparison against test NLL and
  the generalization gap (`weightspace llc-vs-generalization`).
- `basins(preset, out)`: do the samplers weight basins by their mass? Every
  sampler on targets with exactly known basin masses, from low to high
  barriers (`weightspace basins`).
- `methods`: the registry of the methods `compare` runs (`Method`,
  `register_method`): adding a sampler to `compare` is one entry.
- `rebuild`: the posterior of a run directory from its command.json
  (`rebuild.read_command`, `rebuild.from_command`).

The package `comparison` holds `compare` (the function keeps the public
name). The command line (weightspace.cli) sits on top of these studies.
"""

from weightspace.experiments import methods, presets, rebuild
from weightspace.experiments.basins import BasinStudy, basins
from weightspace.experiments.comparison import compare
from weightspace.experiments.generalization import LLCGeneralization, llc_vs_generalization
from weightspace.experiments.methods import Method
from weightspace.experiments.methods import register as register_method
from weightspace.experiments.mixing import MixingResult, mixing, plot_mixing
from weightspace.experiments.presets import PRESETS, Preset

__all__ = ["PRESETS", "BasinStudy", "LLCGeneralization", "Method", "MixingResult", "Preset",
           "basins", "compare", "llc_vs_generalization", "methods", "mixing", "plot_mixing",
           "presets", "rebuild", "register_method"]

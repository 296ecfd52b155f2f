"""Singular learning theory: local learning coefficient estimation (`llc`),
hyperparameter sweeps (`calibrate`), known learning coefficients (`theory`) and
deep linear network problems that have them (`dln_problem`, and
`dln_training_run`: an SGD run from small initialization whose end is known), targets
whose basin masses are known exactly (`basin_target`) and a small network
whose basin masses come from a validated reference (`network_basin_target`). The command line
is `weightspace llc`."""

from weightspace.slt import theory
from weightspace.slt.basins import BasinTarget, basin_target
from weightspace.slt.calibrate import Calibration, calibrate
from weightspace.slt.dln import DLNProblem, DLNRun, dln_problem, dln_training_run
from weightspace.slt.llc import LLCEstimate, llc
from weightspace.slt.network_basins import NetworkBasinTarget, network_basin_target

__all__ = ["BasinTarget", "Calibration", "DLNProblem", "DLNRun", "LLCEstimate",
           "NetworkBasinTarget", "basin_target", "calibrate", "dln_problem",
           "dln_training_run", "llc", "network_basin_target", "theory"]

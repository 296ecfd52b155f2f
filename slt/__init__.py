"""Singular learning theory: local learning coefficient estimation (`llc`),
hyperparameter sweeps (`calibrate`), known learning coefficients (`theory`) and
deep linear network problems that have them (`dln_problem`), and targets
whose basin masses are known exactly (`basin_target`). The command line
is `weightspace llc`."""

from weightspace.slt import theory
from weightspace.slt.basins import BasinTarget, basin_target
from weightspace.slt.calibrate import Calibration, calibrate
from weightspace.slt.dln import DLNProblem, dln_problem
from weightspace.slt.llc import LLCEstimate, llc

__all__ = ["BasinTarget", "basin_target", "Calibration", "DLNProblem", "LLCEstimate",
           "calibrate", "dln_problem", "llc",
           "theory"]

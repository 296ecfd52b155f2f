"""Singular learning theory: local learning coefficient estimation (`llc`),
hyperparameter sweeps (`calibrate`) and known learning coefficients (`theory`).
The `weightspace llc` command arrives with the rest of the SLT issue."""

from weightspace.slt import theory
from weightspace.slt.calibrate import Calibration, calibrate
from weightspace.slt.dln import DLNProblem, dln_problem
from weightspace.slt.llc import LLCEstimate, llc

__all__ = ["Calibration", "DLNProblem", "LLCEstimate", "calibrate", "dln_problem", "llc",
           "theory"]

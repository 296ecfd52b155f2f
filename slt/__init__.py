"""Singular learning theory: local learning coefficient estimation (`llc`) and
known learning coefficients (`theory`). Step-size calibration and the CLI arrive
with the rest of the SLT issue."""

from weightspace.slt import theory
from weightspace.slt.llc import LLCEstimate, llc

__all__ = ["LLCEstimate", "llc", "theory"]

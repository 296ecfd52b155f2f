"""Singular learning theory: known learning coefficients (`theory`); local
learning coefficient estimation arrives with the rest of the SLT issue."""

from weightspace.slt import theory

__all__ = ["theory"]

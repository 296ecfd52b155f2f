"""Singular learning theory: local learning coefficient estimation and known
learning coefficients (arrive with the SLT issue)."""

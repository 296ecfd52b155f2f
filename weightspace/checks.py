"""Argument checks, run at the API boundary before anything is traced.

Each returns the value as a plain Python int or float (or the value itself),
or raises TypeError (a value of the wrong type) or ValueError (a value out of
range) whose message names the argument, the value received and what is
allowed. A leaf module: it imports nothing from weightspace.
"""

from __future__ import annotations

import math
import numbers


def int_at_least(name: str, value, minimum: int) -> int:
    """`value` as an int if it is an integer (not a bool) >= minimum."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int >= {minimum}, got {name}={value!r}")
    if value < minimum:
        raise ValueError(f"{name}={value!r} is not allowed: it must be >= {minimum}")
    return int(value)


def positive_int(name: str, value) -> int:
    return int_at_least(name, value, 1)


def nonnegative_int(name: str, value) -> int:
    return int_at_least(name, value, 0)


def positive_ints(name: str, values) -> tuple[int, ...]:
    """`values`, one int or a sequence of them, as a tuple of ints >= 1."""
    entries = tuple(values) if isinstance(values, (tuple, list)) else (values,)
    if any(isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1
           for v in entries):
        raise ValueError(f"{name}={values!r} is not allowed: expected positive integer(s)")
    return tuple(int(v) for v in entries)


def _finite_number(name: str, value, *, zero_allowed: bool) -> float:
    relation = ">=" if zero_allowed else ">"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number {relation} 0, got {name}={value!r}")
    if not (math.isfinite(value) and (value >= 0 if zero_allowed else value > 0)):
        raise ValueError(f"{name}={value!r} is not allowed: it must be a finite number "
                         f"{relation} 0")
    return float(value)


def positive_float(name: str, value) -> float:
    """`value` as a float if it is a finite real number > 0."""
    return _finite_number(name, value, zero_allowed=False)


def nonnegative_float(name: str, value) -> float:
    """`value` as a float if it is a finite real number >= 0."""
    return _finite_number(name, value, zero_allowed=True)


def probability(name: str, value) -> float:
    """`value` as a float if it lies in the open interval (0, 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise ValueError(f"{name}={value!r} is not allowed: it must lie in (0, 1)")
    return float(value)


def choice(name: str, value, allowed):
    """`value` if it is one of `allowed`."""
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not allowed: choose one of "
                         f"{', '.join(map(repr, allowed))}")
    return value

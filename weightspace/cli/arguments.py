"""What the commands share: `CommandError` (bad input, reported with its flag)
and the argparse types of their flags, built on weightspace.checks."""

from __future__ import annotations

import argparse
import contextlib

from weightspace import checks


class CommandError(Exception):
    """Bad input or an impossible request, reported as `weightspace CMD: error: ...`
    with exit status `code` (2 for bad input, as argparse's own errors)."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


@contextlib.contextmanager
def reported(*errors: type[Exception], code: int = 2, prefix: str = ""):
    """Library errors of these types as a CommandError with their message
    (after `prefix`) and exit status `code`."""
    try:
        yield
    except errors as err:
        raise CommandError(f"{prefix}{err}", code) from None


def job_mesh():
    """The mesh of a multi-process job (weightspace.cli.processes): one chain
    slot, the training rows over every device of every process, each process
    loading only its own; None in a one-process run."""
    import jax

    from weightspace import sharding

    return sharding.make_mesh() if jax.process_count() > 1 else None


def flag(dest: str) -> str:
    """The flag of an argparse dest: "step_size" -> "--step-size"."""
    return "--" + dest.replace("_", "-")


def _int_at_least(minimum: int):
    """An argparse type: an integer >= minimum."""
    def parse(text: str) -> int:
        try:
            return checks.int_at_least("value", int(text), minimum)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(
                f"must be an integer >= {minimum}, got {text!r}") from None
    return parse


def _finite_float(*, positive: bool):
    """An argparse type: a finite number > 0 (positive) or >= 0."""
    check = checks.positive_float if positive else checks.nonnegative_float

    def parse(text: str) -> float:
        try:
            return check("value", float(text))
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(
                f"must be a finite number {'>' if positive else '>='} 0, got {text!r}") from None
    return parse


positive_int = _int_at_least(1)
nonnegative_int = _int_at_least(0)
positive_float = _finite_float(positive=True)
nonnegative_float = _finite_float(positive=False)


def int_list(text: str) -> tuple[int, ...]:
    """An argparse type: comma-separated integers >= 1."""
    try:
        values = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated integers >= 1, got {text!r}")
    return values


def float_list(text: str) -> tuple[float, ...]:
    """An argparse type: comma-separated finite numbers > 0."""
    try:
        values = tuple(positive_float(t) for t in text.split(",") if t.strip())
    except argparse.ArgumentTypeError:
        values = ()
    if not values:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated finite numbers > 0, got {text!r}")
    return values


def name_list(allowed):
    """An argparse type: comma-separated names, each one of `allowed`."""
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(t.strip() for t in text.split(",") if t.strip())
        bad = [n for n in names if n not in allowed]
        if not names or bad:
            raise argparse.ArgumentTypeError(
                f"must be comma-separated names from {', '.join(allowed)}, got {text!r}")
        return names
    return parse


def hidden_widths(text: str) -> tuple[int, ...]:
    """An argparse type: MLP hidden widths, comma-separated; "" is no hidden layer."""
    if not text.strip():
        return ()
    return int_list(text)

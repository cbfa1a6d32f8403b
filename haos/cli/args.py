"""Argument types of ``haosctl``'s options: one check per kind of number, so that every
duration the CLI reads is held to the rule every duration in haos is held to
(:func:`haos.config.schema.check_duration`), and every count to a range."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from haos.config.schema import MIN_DURATION, Invalid, check_duration, short_repr


def whole_number(option: str, minimum: int, maximum: int) -> Callable[[str], int]:
    """A whole number in ``minimum..maximum`` (an ArgumentTypeError naming ``option``)."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{option} must be a whole number, not {short_repr(text)}"
            ) from None
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(
                f"{option} must be in {minimum}..{maximum}, not {short_repr(value)}"
            )
        return value

    return convert


def duration(option: str, maximum: float, minimum: float = MIN_DURATION) -> Callable[[str], float]:
    """Seconds (``2.5``) or a duration (``500ms``, ``1m``), at most ``maximum``."""

    def convert(text: str) -> float:
        try:
            value: float | str = float(text)
        except ValueError:
            value = text  # "500ms", "1m"
        try:
            seconds = check_duration(value, minimum=minimum)
        except Invalid as e:
            raise argparse.ArgumentTypeError(f"{option} {e}") from None
        if seconds > maximum:
            raise argparse.ArgumentTypeError(
                f"{option} must be at most {maximum:g} s, not {short_repr(text)}"
            )
        return seconds

    return convert

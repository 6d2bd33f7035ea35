"""Argument checks at the public boundary, each one line of message that names the value.

``TypeError`` for a value of the wrong type, ``ValueError`` for a value of the right type
that is out of range, as the stdlib does.
"""

from __future__ import annotations

import enum
import math
from typing import Any, Callable, Optional

__all__ = ("DEFAULT", "check_bool", "check_callable", "check_reason", "check_timeout")


class _Default(enum.Enum):
    """The type of ``DEFAULT``: "use the executor's setting", distinct from None."""

    DEFAULT = "DEFAULT"

    def __repr__(self) -> str:
        return "DEFAULT"


#: Marks an argument left to the executor's setting.
DEFAULT = _Default.DEFAULT


def check_timeout(name: str, value: object, *, allow_none: bool = True) -> Optional[float]:
    """Return *value* as a float, or None; reject bools, non-numbers, NaN and negatives."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        or_none = " or None" if allow_none else ""
        raise TypeError(f"{name} must be a number of seconds{or_none}, got {value!r}")
    seconds = float(value)
    if math.isnan(seconds) or seconds < 0:
        or_none = " or None" if allow_none else ""
        raise ValueError(f"{name} must be >= 0{or_none}, got {value!r}")
    return seconds


def check_callable(name: str, value: object) -> Callable[..., Any]:
    """Return *value* if it is callable, else raise ``TypeError`` naming it."""
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {value!r}")
    return value


def check_bool(name: str, value: object) -> bool:
    """Return *value* if it is a bool, else raise ``TypeError`` naming it."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def check_reason(value: object) -> str:
    """Return *value* if it is a non-empty str, else raise naming it."""
    if not isinstance(value, str):
        raise TypeError(f"reason must be a str, got {value!r}")
    if not value:
        raise ValueError("reason must be a non-empty str, got ''")
    return value

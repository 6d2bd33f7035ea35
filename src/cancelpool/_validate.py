"""Argument checks at the public boundary, each one line of message that names the value.

``TypeError`` for a value of the wrong type, ``ValueError`` for a value of the right type
that is out of range, as the stdlib does. Every check runs before the call changes any
state, so a refused value leaves the executor, the future or the token as it was.

Seconds (``check_timeout``)
---------------------------
Any real number is accepted (``int``, ``float``, ``fractions.Fraction``, numpy's scalars:
whatever registers as ``numbers.Real``), except bools, which are almost always a
mistake. NaN and negatives are refused (``-0.0`` is 0). Infinity means "no limit", and
so does any number of seconds the threading primitives cannot wait for
(``threading.TIMEOUT_MAX``, 292 years on Linux, or an int too large to be a float): a
lock's ``acquire`` refuses such a timeout with ``OverflowError``, and a deadline that far
away is never reached. An argument that takes None for "no limit" gets None back; one
that does not (``grace``, ``abandon_after``, ``CancelSource.cancel_after``, ``sleep``)
gets ``math.inf``, which the timer reads as "never" and the sleeps as "until
cancelled". So no ``OverflowError`` reaches a user, and no code past the boundary sees a
number it cannot wait for (issue 11).
"""

from __future__ import annotations

import enum
import math
import numbers
import threading
import time
from typing import Any, Callable, Optional

__all__ = (
    "DEFAULT",
    "NO_LIMIT_FROM",
    "bounded",
    "check_bool",
    "check_callable",
    "check_reason",
    "check_timeout",
    "sleep_for",
)


class _Default(enum.Enum):
    """The type of ``DEFAULT``: "use the executor's setting", distinct from None."""

    DEFAULT = "DEFAULT"

    def __repr__(self) -> str:
        return "DEFAULT"


#: Marks an argument left to the executor's setting.
DEFAULT = _Default.DEFAULT


#: Seconds from which a number means "no limit": the longest wait a lock accepts.
NO_LIMIT_FROM = threading.TIMEOUT_MAX


def check_timeout(name: str, value: object, *, allow_none: bool = True) -> Optional[float]:
    """Return *value* as a float in ``[0, NO_LIMIT_FROM)``, or "no limit".

    Args:
        name: The argument's name, for the error message.
        value: What the caller passed.
        allow_none: Whether None (no limit) is accepted.

    Returns:
        The seconds as a plain float; for "no limit" (None, infinity, or at least
        ``NO_LIMIT_FROM``), None if *allow_none*, else ``math.inf``.

    Raises:
        TypeError: *value* is a bool, or not a real number (or None where allowed).
        ValueError: *value* is NaN or negative.
    """
    or_none = " or None" if allow_none else ""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number of seconds{or_none}, got {value!r}")
    try:
        seconds = float(value)
    except OverflowError:  # an int (or Fraction) beyond the largest float
        seconds = math.inf if value > 0 else -math.inf  # type: ignore[operator]
    except (TypeError, ValueError):  # a Real whose __float__ misbehaves
        raise TypeError(f"{name} must be a number of seconds{or_none}, got {value!r}") from None
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"{name} must be >= 0{or_none}, got {value!r}")
    if seconds >= NO_LIMIT_FROM:
        return None if allow_none else math.inf
    return seconds + 0.0  # -0.0 is 0.0


def bounded(seconds: float) -> Optional[float]:
    """A checked ``allow_none=False`` value as a wait's timeout: None for infinity."""
    return None if seconds == math.inf else seconds


def sleep_for(seconds: float) -> None:
    """``time.sleep(seconds)``, where infinity sleeps for ever rather than overflowing."""
    while seconds == math.inf:
        time.sleep(NO_LIMIT_FROM / 2)
    time.sleep(seconds)


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

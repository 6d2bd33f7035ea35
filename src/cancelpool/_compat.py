"""Every private stdlib internal cancelpool depends on, in one place.

``tests/test_compat.py`` checks each of these on every supported interpreter, so a
change in a new Python fails there, by name, and not somewhere deep in a race.

What we use and why:

``concurrent.futures._base`` future states and ``Future`` fields
    ``Future`` keeps its state in ``_state`` (one of five strings), guarded by the
    ``_condition`` it owns, with the waiters that ``wait()``/``as_completed()`` install
    in ``_waiters`` and the done-callbacks in ``_done_callbacks``; ``_invoke_callbacks``
    runs them. Cancelling a *running* future has no public API, so our subclass performs
    the same steps that ``cancel()`` and ``set_running_or_notify_cancel()`` perform for
    a pending one. These names have been stable from 3.2 to 3.14.

``threading._register_atexit``
    Runs a function at interpreter exit *before* non-daemon threads are joined. The
    stdlib thread pool uses it (bpo-39812) to let workers finish queued work at exit; we
    use it to do the same for our workers. 3.9+ (and PyPy 3.9+).

``_thread._daemon_threads_allowed``
    3.12+: False in a subinterpreter created without daemon-thread support, where
    starting a daemon thread raises. Our workers are daemon threads that our exit hook
    joins (see ``_worker``); where daemons are not allowed they are ordinary threads.

The public ``concurrent.futures.thread.BrokenThreadPool`` and
``concurrent.futures.TimeoutError`` are imported from here too, so that the module that
needs them names one place.
"""

from __future__ import annotations

import _thread
import threading
from concurrent.futures import TimeoutError as FuturesTimeoutError
from concurrent.futures import _base
from concurrent.futures.thread import BrokenThreadPool
from typing import Callable

__all__ = (
    "CANCELLED",
    "CANCELLED_AND_NOTIFIED",
    "FINISHED",
    "PENDING",
    "RUNNING",
    "BrokenThreadPool",
    "FuturesTimeoutError",
    "daemon_threads_allowed",
    "register_atexit",
)

PENDING: str = _base.PENDING
RUNNING: str = _base.RUNNING
CANCELLED: str = _base.CANCELLED
CANCELLED_AND_NOTIFIED: str = _base.CANCELLED_AND_NOTIFIED
FINISHED: str = _base.FINISHED

register_atexit: Callable[[Callable[[], object]], None] = threading._register_atexit  # type: ignore[attr-defined]


def daemon_threads_allowed() -> bool:
    """Whether this interpreter may start daemon threads (False in some subinterpreters)."""
    probe = getattr(_thread, "_daemon_threads_allowed", None)
    return True if probe is None else bool(probe())

"""The condition a ``CancellableFuture`` is guarded by: a cheaper ``threading.Condition``.

``concurrent.futures.Future.__init__`` makes a ``threading.Condition()`` per future, and
``Condition.__init__`` binds five methods of its ``RLock`` onto the instance (``acquire``,
``release``, ``_release_save``, ``_acquire_restore``, ``_is_owned``). Per task that is
the largest single cost of ``submit()`` (about 1 µs on 3.13, measured), and the five
bound methods are five more objects per live future for the garbage collector to
traverse: a pool with 100,000 futures outstanding spends more time in the collector than
in the pool (``benchmarks/``). ``FutureCondition`` is a ``threading.Condition`` (every
inherited ``Future`` method, ``wait()``, ``as_completed()`` and the stdlib's tests use
it unchanged) that calls the same ``RLock`` methods through the class instead: two
objects per future, not seven.

The lock is always an ``RLock``, as in ``Future``; its ``_is_owned``, ``_release_save``
and ``_acquire_restore`` are what ``Condition.__init__`` would have bound (every
interpreter we support has them; ``tests/test_compat.py`` checks).

``wait()`` reads a timeout it cannot wait for (infinity, or ``threading.TIMEOUT_MAX`` and
more) as no limit: ``Future.result(math.inf)`` waits, where the stdlib's future raises
``OverflowError`` from the lock (issue 11). Any other timeout is passed on unchanged.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Optional

__all__ = ("FutureCondition",)


class FutureCondition(threading.Condition):
    """``threading.Condition(threading.RLock())``, with no per-instance bound methods."""

    def __init__(self) -> None:
        """A condition over a new ``RLock``, with no waiters."""
        self._lock = threading.RLock()
        self._waiters: deque[Any] = deque()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """The lock's ``acquire()``."""
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        """The lock's ``release()``."""
        self._lock.release()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """``Condition.wait``, where a timeout too long for the lock means no limit."""
        try:
            if timeout is not None and timeout >= threading.TIMEOUT_MAX:
                timeout = None
        except TypeError:
            pass  # not a number: let Condition.wait refuse it, as the stdlib does
        return super().wait(timeout)

    def _release_save(self) -> Any:
        return self._lock._release_save()  # type: ignore[attr-defined]

    def _acquire_restore(self, state: Any) -> None:
        self._lock._acquire_restore(state)  # type: ignore[attr-defined]

    def _is_owned(self) -> bool:
        return self._lock._is_owned()  # type: ignore[attr-defined, no-any-return]

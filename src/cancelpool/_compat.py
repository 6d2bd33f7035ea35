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

``threading.Condition``: ``_waiters``, ``_is_owned``, ``_release_save``, ``_acquire_restore``
    ``Condition.wait`` appends a fresh locked lock (the "waiter") to ``_waiters``, fully
    releases the condition's lock (``_release_save``, which also undoes an ``RLock``'s
    recursion), blocks acquiring the waiter, and takes the lock back
    (``_acquire_restore``); ``notify()`` removes waiters from the deque and releases
    them. ``cancelpool._wait`` waits the same way on a waiter of its own, so that a
    cancel can wake exactly that one thread: a ``notify_all()`` would also wake every
    other waiter, and ``Event.wait`` and ``Future.result`` wait once and trust the
    wake-up (``Future.result(None)`` would raise ``TimeoutError``). The same code in
    CPython 3.9 to 3.13 and in PyPy's ``threading.py``.

``threading.Event._cond``
    The condition that ``Event.wait`` waits on and ``set()`` notifies.

``concurrent.futures.Future._condition``
    Listed above; ``cancelpool._wait.future_result`` waits on it as ``result()`` does.

``queue.Queue`` internals: ``not_empty``, ``not_full``, ``_qsize``, ``_get``, ``is_shutdown``
    ``Queue.get`` waits on ``not_empty`` (a condition over ``mutex``) until ``_qsize()``,
    takes an item with ``_get()`` and notifies ``not_full``; ``_qsize``/``_get`` are the
    hooks that the module's source invites subclasses (``LifoQueue``,
    ``PriorityQueue``, users') to override. 3.13 added ``is_shutdown`` and
    ``queue.ShutDown``; before that neither exists and a queue is never shut down.

The public ``concurrent.futures.thread.BrokenThreadPool`` and
``concurrent.futures.TimeoutError`` are imported from here too, so that the module that
needs them names one place.
"""

from __future__ import annotations

import _thread
import queue
import threading
from collections import deque
from concurrent.futures import Future, _base
from concurrent.futures import TimeoutError as FuturesTimeoutError
from concurrent.futures.thread import BrokenThreadPool
from typing import Any, Callable, Optional, TypeVar

__all__ = (
    "CANCELLED",
    "CANCELLED_AND_NOTIFIED",
    "FINISHED",
    "PENDING",
    "RUNNING",
    "BrokenThreadPool",
    "FuturesTimeoutError",
    "QueueShutDown",
    "condition_acquire_restore",
    "condition_is_owned",
    "condition_release_save",
    "condition_waiters",
    "daemon_threads_allowed",
    "event_condition",
    "future_condition",
    "queue_is_shutdown",
    "queue_not_empty",
    "queue_size",
    "queue_take",
    "register_atexit",
)

T = TypeVar("T")

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


# ---------------------------------------------------------------- threading.Condition


def condition_waiters(cond: threading.Condition) -> deque[_thread.LockType]:
    """The deque of waiter locks that ``notify()`` releases, oldest first."""
    waiters: deque[_thread.LockType] = cond._waiters  # type: ignore[attr-defined]
    return waiters


def condition_is_owned(cond: threading.Condition) -> bool:
    """Whether the calling thread holds *cond*'s lock (what ``wait()`` checks first)."""
    return bool(cond._is_owned())  # type: ignore[attr-defined]


def condition_release_save(cond: threading.Condition) -> object:
    """Release *cond*'s lock completely (all ``RLock`` levels); returns what restores it."""
    return cond._release_save()  # type: ignore[attr-defined]


def condition_acquire_restore(cond: threading.Condition, state: object) -> None:
    """Take *cond*'s lock back as ``condition_release_save`` left it (blocks)."""
    cond._acquire_restore(state)  # type: ignore[attr-defined]


def event_condition(event: threading.Event) -> threading.Condition:
    """The condition ``event.wait()`` waits on and ``event.set()`` notifies."""
    cond: threading.Condition = event._cond  # type: ignore[attr-defined]
    return cond


def future_condition(future: Future[Any]) -> threading.Condition:
    """The condition that guards *future*'s state and that ``result()`` waits on."""
    return future._condition


# ---------------------------------------------------------------- queue.Queue

#: ``queue.ShutDown`` (3.13+), None before.
QueueShutDown: Optional[type[Exception]] = getattr(queue, "ShutDown", None)


def queue_not_empty(q: queue.Queue[Any]) -> threading.Condition:
    """The condition (over ``q.mutex``) that ``get()`` waits on and ``put()`` notifies."""
    return q.not_empty


def queue_size(q: queue.Queue[Any]) -> int:
    """``q._qsize()``: the subclass hook; call with ``q.mutex`` held."""
    return q._qsize()


def queue_is_shutdown(q: queue.Queue[Any]) -> bool:
    """Whether ``q.shutdown()`` was called (3.13+; always False before)."""
    return bool(getattr(q, "is_shutdown", False))


def queue_take(q: queue.Queue[T]) -> T:
    """What ``get()`` does once an item is there: ``_get()``, then wake one putter.

    Call with ``q.mutex`` held and ``queue_size(q) > 0``.
    """
    item = q._get()
    q.not_full.notify()
    return item

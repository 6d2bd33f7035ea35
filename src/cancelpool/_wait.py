"""Cancellation-aware waiting: the blocking calls tasks make, ended early by a cancel.

The problem
-----------
A task blocked in ``queue.get()``, ``event.wait()``, ``future.result()`` or
``sock.recv()`` runs no Python code, so it cannot look at its token; a forced cancel
cannot reach it either (a forced interrupt is raised only after the call returns, and
never inside ``threading``/``queue``, see ``cancelpool._inject``). Each helper here is
the stdlib call, with the same arguments and results, that also returns, by raising
``TaskCancelled(reason)``, as soon as the task's token is cancelled.

Designs that do not work
------------------------
* Polling (wait 10 ms, check the token, wait again): trades latency against wake-ups,
  and costs every idle task a wake-up per period.
* ``notify_all()`` on the condition from the token's callback: it wakes every thread
  waiting on that condition, not only ours. ``Event.wait()`` and ``Future.result()``
  wait once and trust the wake-up: another thread's ``event.wait()`` would return True
  with the event not set, and its ``future.result()`` would raise ``TimeoutError``
  without a timeout.
* Taking the condition's lock in the callback with a blocking ``acquire()``: the
  callback runs in the cancelling thread, which may hold that very lock (a lock, not
  an ``RLock``: deadlock) or be anyone's thread with anything held; a cancel must never
  wait on the task's locks.

The solution
------------
The helpers wait on a condition the way ``Condition.wait`` does, through its waiter
protocol (``cancelpool._compat``), but remember their own waiter lock (``_Waiter``). The
token's callback, ``_Waiter.wake``, tries the condition's lock *without blocking*; if it
gets it, it takes our waiter out of the condition's queue and releases it, which is
exactly what ``notify()`` does for that one waiter, so no other thread is disturbed. If
the lock is busy, the callback tries again ``RETRY_DELAY`` later from the timer thread
(``cancelpool._timer``), which must not block either. The woken helper sees the token
cancelled, under the condition's lock, and raises.

A notification that a cancelled waiter consumed is passed on (``notify()``) when the
helper raises instead of acting on it, as ``java.util.concurrent.locks.Condition``
requires of an interrupted wait: otherwise a ``put()`` could wake the task being
cancelled and leave its item, and another getter, waiting.

Locking protocol
----------------
The waiting thread holds the condition's lock except inside ``_Waiter.wait`` (as with
``Condition.wait``); it registers and unregisters the callback under that lock, which is
fine because the token's lock is a leaf. The callback runs in the cancelling thread after
that thread has released the future's lock (``CancelToken.register``), or on the timer
thread; it never blocks: non-blocking ``acquire``, then ``deque.remove`` and
``Lock.release``. It reads ``_Waiter._lock`` only under the condition's lock, where the
waiting thread writes it. The token's flag is set before the callbacks run, and the
waiting thread checks it under the condition's lock before every wait, so no cancel is
missed: either the check sees it, or the callback finds the thread waiting.

What remains
------------
Calls that block in C on something without a condition (``recv``, ``accept``,
``select``, ``queue.SimpleQueue.get``, a pipe) cannot be woken this way.
``close_on_cancel`` covers sockets (``shutdown()`` wakes ``recv``/``accept`` on Linux)
and objects whose ``close()`` wakes their readers; for the rest, register a callback
that unblocks the call (``docs/waiting-on-io.md``).
"""

from __future__ import annotations

import _thread
import contextlib
import queue
import socket
import threading
import time
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Callable, Generic, Optional, Protocol, TypeVar

from . import _compat, _timer
from ._current import _slot
from ._exceptions import TaskCancelled
from ._token import CallbackHandle, CancelToken, check_token
from ._validate import check_callable, check_timeout, sleep_for

__all__ = (
    "close_on_cancel",
    "future_result",
    "queue_get",
    "sleep",
    "wait_condition",
    "wait_event",
    "wait_for",
)

T = TypeVar("T")

#: Seconds before a wake-up that found the condition's lock busy tries again.
RETRY_DELAY = 0.001


class _SupportsClose(Protocol):
    def close(self) -> object: ...


C = TypeVar("C", bound=_SupportsClose)


def sleep(seconds: float, *, token: Optional[CancelToken] = None) -> None:
    """Sleep like ``time.sleep``, returning early by raising if the task is cancelled.

    Outside a task (and with no *token*), and inside a ``cancelpool.shield()`` block, it
    is ``time.sleep(seconds)``.

    Args:
        seconds: How long to sleep, ``>= 0``; ``math.inf`` sleeps until cancelled.
        token: The token to honour; default: the running task's.

    Raises:
        TaskCancelled: the token is, or becomes, cancelled before *seconds* pass.
        TypeError: *seconds* is not a number, or *token* not a ``CancelToken``.
        ValueError: *seconds* is negative or NaN.
    """
    checked = check_timeout("seconds", seconds, allow_none=False)
    assert checked is not None
    active = _resolve(token)
    if active is None:
        sleep_for(checked)
    elif active.wait(checked):
        raise TaskCancelled(active.reason or "cancel")


def wait_event(
    event: threading.Event, timeout: Optional[float] = None, *, token: Optional[CancelToken] = None
) -> bool:
    """Wait like ``event.wait(timeout)``, returning early by raising if the task is cancelled.

    Outside a task (and with no *token*), and inside a ``cancelpool.shield()`` block, it
    is ``event.wait(timeout)``. Other threads waiting on *event* are not disturbed.

    Args:
        event: A ``threading.Event`` (or a subclass).
        timeout: Seconds to wait, ``>= 0``; None (or ``math.inf``) waits without limit.
        token: The token to honour; default: the running task's.

    Returns:
        True if the event is set, False if *timeout* passed first, as ``Event.wait``.

    Raises:
        TaskCancelled: the token is cancelled, on entry or while waiting; it wins over
            an event set at the same moment.
        TypeError: *event* is not a ``threading.Event`` (a ``multiprocessing`` event is
            not), *timeout* not a number or None, or *token* not a ``CancelToken``.
        ValueError: *timeout* is negative or NaN.
    """
    _check_type("event", event, threading.Event)
    seconds = check_timeout("timeout", timeout)
    active = _resolve(token)
    if active is None:
        return event.wait(seconds)
    cond = _compat.event_condition(event)
    with cond:
        signaled = event.is_set()
        if not signaled:
            with _Waiter(cond, active) as waiter:
                signaled = waiter.wait(seconds)
    _raise_if_cancelled(active)
    return signaled


def wait_condition(
    cond: threading.Condition,
    timeout: Optional[float] = None,
    *,
    token: Optional[CancelToken] = None,
) -> bool:
    """Wait like ``cond.wait(timeout)``, returning early by raising if the task is cancelled.

    As with ``cond.wait``, the caller holds *cond*'s lock; it is released while waiting
    and held again when this returns or raises. Outside a task (and with no *token*), and
    inside a ``cancelpool.shield()`` block, it is ``cond.wait(timeout)``. A cancel wakes
    only this thread; a ``notify()`` that woke it just as it was cancelled is passed on
    to another waiter.

    Args:
        cond: A ``threading.Condition`` whose lock the caller holds.
        timeout: Seconds to wait, ``>= 0``; None (or ``math.inf``) waits without limit.
        token: The token to honour; default: the running task's.

    Returns:
        True if notified, False if *timeout* passed first, as ``Condition.wait``.

    Raises:
        TaskCancelled: the token is cancelled, on entry or while waiting.
        RuntimeError: the caller does not hold *cond*'s lock.
        TypeError: *cond* is not a ``threading.Condition``, *timeout* not a number or
            None, or *token* not a ``CancelToken``.
        ValueError: *timeout* is negative or NaN.
    """
    _check_type("cond", cond, threading.Condition)
    seconds = check_timeout("timeout", timeout)
    active = _resolve(token)
    if active is None:
        return cond.wait(seconds)
    with _Waiter(cond, active) as waiter:
        notified = waiter.wait(seconds)
    _raise_if_cancelled(active, cond if notified else None)
    return notified


def wait_for(
    cond: threading.Condition,
    predicate: Callable[[], T],
    timeout: Optional[float] = None,
    *,
    token: Optional[CancelToken] = None,
) -> T:
    """Wait like ``cond.wait_for(predicate, timeout)``, raising if the task is cancelled.

    As with ``cond.wait_for``, the caller holds *cond*'s lock, and *predicate* is called
    with it held. Outside a task (and with no *token*), and inside a
    ``cancelpool.shield()`` block, it is ``cond.wait_for(predicate, timeout)``. A
    notification consumed by a wait that ends in a cancel is passed on.

    Args:
        cond: A ``threading.Condition`` whose lock the caller holds.
        predicate: A callable whose result is interpreted as a boolean.
        timeout: Seconds to wait, ``>= 0``; None (or ``math.inf``) waits without limit.
        token: The token to honour; default: the running task's.

    Returns:
        The last value *predicate* returned: true, or false if *timeout* passed first.

    Raises:
        TaskCancelled: the token is cancelled, on entry or while waiting; it wins over a
            predicate that became true at the same moment.
        RuntimeError: the caller does not hold *cond*'s lock (when it has to wait).
        TypeError: *cond* is not a ``threading.Condition``, *predicate* not callable,
            *timeout* not a number or None, or *token* not a ``CancelToken``.
        ValueError: *timeout* is negative or NaN.
    """
    _check_type("cond", cond, threading.Condition)
    check_callable("predicate", predicate)
    seconds = check_timeout("timeout", timeout)
    active = _resolve(token)
    if active is None:
        return cond.wait_for(predicate, seconds)
    with _Waiter(cond, active) as waiter:
        result, notified = _wait_until(waiter, predicate, seconds)
    _raise_if_cancelled(active, cond if notified else None)
    return result


def queue_get(
    q: queue.Queue[T],
    block: bool = True,
    timeout: Optional[float] = None,
    *,
    token: Optional[CancelToken] = None,
) -> T:
    """Take an item like ``q.get(block, timeout)``, raising if the task is cancelled.

    Works for ``queue.Queue``, ``LifoQueue``, ``PriorityQueue`` and subclasses that
    customise the ``_qsize``/``_get`` hooks, as ``Queue.get`` does; on 3.13+ it raises
    ``queue.ShutDown`` as ``get()`` does. Outside a task (and with no *token*), and
    inside a ``cancelpool.shield()`` block, it is ``q.get(block, timeout)``. A cancel
    never loses an item: it is either returned, or left in the queue (and another getter
    woken for it).

    Differences from ``Queue.get``: *timeout* is checked even when *block* is False
    (``get`` ignores it then), and a cancelled token raises even if an item is there.

    Args:
        q: A ``queue.Queue`` or a subclass that does not override ``get()``.
        block: False: take an item only if one is there now.
        timeout: With *block*, seconds to wait, ``>= 0``; None (or ``math.inf``) waits
            without limit.
        token: The token to honour; default: the running task's.

    Returns:
        The item.

    Raises:
        TaskCancelled: the token is cancelled, on entry or while waiting.
        queue.Empty: no item came within *timeout* (or none was there, without *block*).
        TypeError: *q* is a ``queue.SimpleQueue``, a ``multiprocessing`` queue, another
            type, or a subclass that overrides ``get()`` (the message says what to do
            instead); or *timeout* is not a number or None, or *token* not a
            ``CancelToken``.
        ValueError: *timeout* is negative or NaN.
    """
    _check_queue(q)
    seconds = check_timeout("timeout", timeout)
    active = _resolve(token)
    if active is None:
        return q.get(block, seconds)
    if not active.cancelled:
        # The hot path, an item already there: Queue.get itself, nothing to wait for.
        try:
            return q.get(False)
        except queue.Empty:
            if not block:
                raise
    cond = _compat.queue_not_empty(q)
    with cond:
        notified = False
        if block and not _queue_ready(q):
            with _Waiter(cond, active) as waiter:
                _, notified = _wait_until(waiter, lambda: _queue_ready(q), seconds)
        _raise_if_cancelled(active, cond if notified and _compat.queue_size(q) else None)
        return _take(q)


def future_result(
    future: Future[T], timeout: Optional[float] = None, *, token: Optional[CancelToken] = None
) -> T:
    """Wait like ``future.result(timeout)``, returning early by raising if cancelled.

    Outside a task (and with no *token*), and inside a ``cancelpool.shield()`` block, it
    is ``future.result(timeout)``. Other threads waiting on *future* are not disturbed.
    Cancelling the calling task does not cancel *future*.

    Args:
        future: A ``concurrent.futures.Future`` (or a subclass, like
            ``CancellableFuture``).
        timeout: Seconds to wait, ``>= 0``; None (or ``math.inf``) waits without limit.
        token: The token to honour; default: the running task's.

    Returns:
        The future's result.

    Raises:
        TaskCancelled: the token is cancelled, on entry or while waiting; it wins over a
            future that finished at the same moment.
        concurrent.futures.CancelledError: *future* was cancelled.
        concurrent.futures.TimeoutError: *future* did not finish within *timeout*.
        Exception: whatever the future's call raised.
        TypeError: *future* is not a ``concurrent.futures.Future`` (an asyncio future is
            not), *timeout* not a number or None, or *token* not a ``CancelToken``.
        ValueError: *timeout* is negative or NaN.
    """
    _check_type("future", future, Future)
    seconds = check_timeout("timeout", timeout)
    active = _resolve(token)
    if active is None:
        return future.result(seconds)
    cond = _compat.future_condition(future)
    with cond:
        if not future.done():
            with _Waiter(cond, active) as waiter:
                waiter.wait(seconds)
    _raise_if_cancelled(active)
    if not future.done():
        raise _compat.FuturesTimeoutError()
    return future.result(0)  # done: returns or raises at once, as result() would


class close_on_cancel(Generic[C]):  # noqa: N801 - a context manager named like a function
    """Shut down or close *closeable* if the task is cancelled while the block runs.

    For the calls that block in C with nothing to wake them but their object::

        with close_on_cancel(sock):
            data = sock.recv(4096)   # a cancel shuts sock down: recv returns at once

    A cancel during the block calls, in the cancelling thread, ``shutdown(SHUT_RDWR)``
    for a ``socket.socket`` (on Linux that is what wakes a ``recv()`` or ``accept()``
    blocked in another thread; ``close()`` does not), or ``close()`` for anything else
    and for a socket that cannot be shut down (not connected). A shut-down socket is not
    closed: close it as usual. The call in the block then returns or raises, and the
    block's exit raises ``TaskCancelled``, chained from what the call raised (an
    ``OSError``, say) or raised even if it returned (``recv`` returns ``b""``).

    ``close()`` runs in the cancelling thread and must not block there: a buffered
    file's ``close()`` waits for a ``read()`` in progress, so use it for objects whose
    ``close()`` wakes their readers.

    Outside a task (and with no *token*), and inside a ``cancelpool.shield()`` block, it
    does nothing. Entering it with the token already cancelled raises at once, leaving
    *closeable* alone.

    Args:
        closeable: A socket, or any object with a ``close()`` method.
        token: The token to honour; default: the running task's (looked up on entry).

    Raises:
        TaskCancelled: on entry, if the token is already cancelled; on exit, if it was
            cancelled during the block.
        TypeError: *closeable* has no ``close()`` method, or *token* is not a
            ``CancelToken``.
    """

    __slots__ = ("_active", "_closeable", "_handle", "_token")

    def __init__(self, closeable: C, *, token: Optional[CancelToken] = None) -> None:
        if not callable(getattr(closeable, "close", None)):
            raise TypeError(
                f"closeable must be a socket or have a close() method, got {closeable!r}"
            )
        self._closeable = closeable
        self._token = check_token("token", token)
        self._active: Optional[CancelToken] = None  # the token honoured by this block
        self._handle: Optional[CallbackHandle] = None

    def __enter__(self) -> C:
        active = self._active = _resolve(self._token)
        if active is not None:
            self._handle = active.register(self._shut)
        return self._closeable

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        handle, self._handle = self._handle, None
        if handle is None or handle.unregister() or isinstance(exc, TaskCancelled):
            return  # not watching, not cancelled, or already leaving with the cancel
        assert self._active is not None
        raise TaskCancelled(self._active.reason or "cancel") from exc

    def _shut(self) -> None:
        """The token's callback: unblock whatever uses the object, in this thread."""
        target = self._closeable
        if isinstance(target, socket.socket):
            try:
                target.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # not connected (or closed already): closing is all there is to do
            else:
                return
        target.close()


class _Waiter:
    """One thread's waits on a condition, with a token whose cancel ends them.

    Enter it with the condition's lock held: it registers ``wake`` on the token, and
    unregisters it on exit. ``wait`` is ``Condition.wait`` on a waiter lock that
    ``wake`` can find (see the module docstring).
    """

    __slots__ = ("_cond", "_done", "_handle", "_ident", "_lock", "_retry", "_woken", "token")

    def __init__(self, cond: threading.Condition, token: CancelToken) -> None:
        self._cond = cond
        self.token = token
        self._ident = threading.get_ident()
        #: Our waiter lock while ``wait`` waits (under the condition's lock).
        self._lock: Optional[_thread.LockType] = None
        self._handle: Optional[CallbackHandle] = None
        self._retry: Optional[_timer.TimerHandle] = None
        self._woken = False  # wake() ended a wait
        self._done = False  # exited: wake() has nothing left to do

    def __enter__(self) -> _Waiter:
        self._handle = self.token.register(self.wake)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done = True
        if self._handle is not None:
            self._handle.unregister()
        retry = self._retry
        if retry is not None:
            retry.cancel()

    def wait(self, timeout: Optional[float]) -> bool:
        """``Condition.wait(timeout)``, unless the token is already cancelled.

        Returns:
            True if a ``notify()`` ended the wait; False if it timed out, was ended by
            the token's cancel, or did not start because the token was cancelled.
        """
        cond = self._cond
        if not _compat.condition_is_owned(cond):
            raise RuntimeError("cannot wait on un-acquired lock")
        if self.token.cancelled:  # checked under the lock, after registering: see top
            return False
        lock = _thread.allocate_lock()
        lock.acquire()
        waiters = _compat.condition_waiters(cond)
        waiters.append(lock)
        self._lock = lock
        saved = _compat.condition_release_save(cond)
        got = False
        try:  # as Condition.wait: take the lock back whatever happens
            if timeout is None:
                got = lock.acquire()
            elif timeout > 0:
                got = lock.acquire(True, timeout)
            else:
                got = lock.acquire(False)
        finally:
            _compat.condition_acquire_restore(cond, saved)
            self._lock = None
            if not got:
                with contextlib.suppress(ValueError):
                    waiters.remove(lock)
        return got and not self._woken

    def wake(self) -> None:
        """The token's callback: end this thread's wait, never blocking."""
        if self._done or threading.get_ident() == self._ident:
            # Done; or register() ran us at once in the waiting thread, which checks the
            # token before it waits.
            return
        cond = self._cond
        if not cond.acquire(False):
            self._retry = _timer.get_scheduler().call_later(RETRY_DELAY, self.wake)
            return
        try:
            lock = self._lock
            if lock is not None:
                try:
                    _compat.condition_waiters(cond).remove(lock)
                except ValueError:
                    return  # a notify() took it first and has released it
                self._woken = True
                lock.release()
        finally:
            cond.release()


def _wait_until(
    waiter: _Waiter, predicate: Callable[[], T], timeout: Optional[float]
) -> tuple[T, bool]:
    """``Condition.wait_for``'s loop, which also stops when the token is cancelled.

    Returns:
        The predicate's last value, and whether the last wait was ended by a notify.
    """
    endtime: Optional[float] = None
    waittime = timeout
    notified = False
    result = predicate()
    while not result and not waiter.token.cancelled:
        if waittime is not None:
            if endtime is None:
                endtime = time.monotonic() + waittime
            else:
                waittime = endtime - time.monotonic()
                if waittime <= 0:
                    break
        notified = waiter.wait(waittime)
        result = predicate()
    return result, notified


def _queue_ready(q: queue.Queue[Any]) -> bool:
    """Whether ``get()`` would stop waiting: an item, or (3.13+) a shut-down queue."""
    return _compat.queue_size(q) > 0 or _compat.queue_is_shutdown(q)


def _take(q: queue.Queue[T]) -> T:
    """With ``q.mutex`` held: an item, or the exception ``get()`` would raise."""
    if _compat.queue_size(q):
        return _compat.queue_take(q)
    if _compat.queue_is_shutdown(q) and _compat.QueueShutDown is not None:
        raise _compat.QueueShutDown
    raise queue.Empty


def _resolve(token: object) -> Optional[CancelToken]:
    """The token to honour, or None to behave like the plain call.

    None outside a task (without *token*) and inside a shield of the token's task. This
    is ``current_token_or_none()`` and ``shielded()`` in one look at the slot: it runs on
    every call, and a thread-local read costs as much as the rest of a hot ``get()``.

    Raises:
        TaskCancelled: the token is already cancelled.
        TypeError: *token* is not a ``CancelToken`` or None.
    """
    active = check_token("token", token)
    future = _slot.future
    if active is None:
        if future is None:
            return None
        active = future.token
    if future is not None and future._shield_depth and future._token is active:
        return None
    reason = active._reason
    if reason is not None:
        raise TaskCancelled(reason)
    return active


def _raise_if_cancelled(token: CancelToken, pass_on: Optional[threading.Condition] = None) -> None:
    """Raise ``TaskCancelled`` if *token* is cancelled, first notifying *pass_on*."""
    if token.cancelled:
        if pass_on is not None:
            pass_on.notify()  # the wait consumed a notify that another waiter needs
        raise TaskCancelled(token.reason or "cancel")


def _check_type(name: str, value: object, cls: type[Any]) -> None:
    if not isinstance(value, cls):
        kind = f"{cls.__module__}.{cls.__qualname__}".replace("._base.", ".")
        raise TypeError(f"{name} must be a {kind}, got {value!r}")


def _check_queue(q: object) -> None:
    """Reject queues ``queue_get`` cannot wait on, saying why and what to do instead."""
    if isinstance(q, queue.Queue):
        if type(q).get is not queue.Queue.get:
            raise TypeError(
                f"queue_get() cannot honour {type(q).__qualname__}.get(), which overrides "
                "Queue.get: it waits as Queue.get does, through the _qsize()/_get() hooks. "
                "Override those instead, or call q.get(timeout=...) in a loop that checks "
                "the token"
            )
        return
    cls = type(q)
    if isinstance(q, queue.SimpleQueue):
        why = "queue.SimpleQueue: its get() blocks in C, on no condition that a cancel can wake"
    elif cls.__module__.startswith("multiprocessing"):
        why = (
            f"multiprocessing queue ({cls.__module__}.{cls.__qualname__}): its get() blocks "
            "on a pipe and a semaphore shared with other processes"
        )
    else:
        raise TypeError(f"q must be a queue.Queue, got {q!r}")
    raise TypeError(
        f"queue_get() cannot wait on a {why}. Use a queue.Queue, or have the cancel put a "
        "sentinel on it: token.register(lambda: q.put(STOP))"
    )

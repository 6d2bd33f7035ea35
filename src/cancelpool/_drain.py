"""Cancelling a shut-down executor's queue in bounded steps (issue 11).

The problem
-----------
``shutdown(cancel_futures=True)`` cancels every task still queued, and
``shutdown(timeout=T)`` promises to return within ``T`` seconds. Taking the items off
the queue is cheap; cancelling them is not: each cancel is a transition under the
future's lock that wakes its waiters and runs its done-callbacks, 1-5 µs with no
callback, so ``shutdown(cancel_futures=True, timeout=0.1)`` took seconds with a long
queue (300,000 tasks: 4.7 s on 3.13, 8.1 s on 3.9), whatever ``T`` said.

What does not work
------------------
* *Cancelling them all before returning* (the stdlib's way): unbounded, as above.
* *Leaving them queued for the workers to cancel as they take them:* the workers may be
  stuck in the very task that made someone call ``shutdown(timeout=...)``, and the
  executor's exit hook would then wait for a queue it cannot shorten.
* *The timer thread:* it runs deadlines and escalations, which must not wait behind a
  million cancels; ``shutdown(timeout=T, force=True)``'s own escalation runs there.
* *Swapping the queue object for a fresh one:* every worker holds the queue it blocks on,
  and would go on taking the old one's items.

The construction
----------------
1. ``drain()`` takes every item off the queue in one C-level pass, under the executor's
   ``_shutdown_lock`` (about 15 ms for a million items on CPython): from then on no
   worker can take any of them, so none can run, whatever happens next.
2. ``Drop.run()`` cancels them oldest first, as the stdlib does, with reason
   ``"shutdown"``, until none is left or the caller's deadline passes; the first
   ``SYNC_ITEMS`` are always cancelled, so a short queue is cancelled when
   ``shutdown()`` returns, as with the stdlib, even with ``timeout=0``.
3. ``Drop.hand_off()`` gives what is left to a thread of its own, which cancels the rest.

Until that thread reaches it, such a future is pending and will never run: ``cancel()``
on it works as on any pending future, and ``result()``, ``wait()`` and
``as_completed()`` see it cancelled when the thread gets to it: they wait for it as they
would for a worker. A second ``shutdown()`` that waits (``wait=True``) helps cancel the
rest and waits for the thread, within its own timeout (``Drop.finish``). A task whose
deadline counts from submission may expire before the thread reaches it: it then ends
failed by ``DeadlineExceeded``, as it would had it expired before ``shutdown()``.

The thread, and interpreter exit
--------------------------------
The thread is a daemon (where the interpreter allows daemon threads; elsewhere the exit
hook leaves it nothing to do), so it never holds the interpreter open. The stdlib would have
run every such future's done-callbacks before ``shutdown()`` returned; so that none is
skipped because the program ended first, our exit hook (registered after the workers'
hook, so run before it) cancels what is left itself and waits up to ``EXIT_JOIN``
seconds for the thread's last callback. A ``Drop`` handed off after that hook has run
(a ``shutdown()`` in an ``atexit`` function) or when no thread can start (3.12+
refuses at exit) is cancelled in the calling thread instead: later than the timeout,
but nothing is lost. A forked child forgets the parent's drops (``cancelpool._fork``):
the thread does not exist there, and the futures' locks may have been held at the fork.

A done-callback that raises (a ``BaseException`` too) is logged to the
``concurrent.futures`` logger in the thread and in the exit hook, and the next future
is cancelled; in ``shutdown()``'s own thread it propagates, after the rest is handed
off.

Locking protocol
----------------
``_worker.global_shutdown_lock`` guards ``_exiting`` and ``_unfinished``, so that a
``Drop`` is either registered before the exit hook looks, or sees ``_exiting`` and
finishes in the calling thread. A ``Drop``'s items are a deque: each item is popped by
exactly one thread (``popleft`` is atomic, with or without a GIL).
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Callable, Optional

from . import _worker
from ._compat import daemon_threads_allowed, register_atexit
from ._future import DROP

if TYPE_CHECKING:
    from ._worker import WorkItem

__all__ = ("SYNC_ITEMS", "Drop", "drain")

#: How many items ``Drop.run`` cancels whatever its deadline (a few milliseconds).
SYNC_ITEMS = 1000
#: The most seconds the exit hook waits for a drop thread's last item.
EXIT_JOIN = 1.0

# Set by the exit hook: drops handed off from now on finish in the calling thread.
_exiting = False
# Drops whose thread has not finished, for the exit hook.
_unfinished: set[Drop] = set()


def drain(work_queue: queue.SimpleQueue[Optional[WorkItem]]) -> deque[WorkItem]:
    """Take every work item off *work_queue*, oldest first, dropping wake-ups (None).

    One pass in C: ``starmap`` calls ``get_nowait`` until it raises ``queue.Empty``, and
    ``deque.extend`` keeps every item it took before the exception (CPython and PyPy).
    Workers may take items meanwhile; those they take run, or are cancelled, as usual.
    Call under the executor's ``_shutdown_lock``, so that no item is added meanwhile.
    """
    items: deque[WorkItem] = deque()
    with contextlib.suppress(queue.Empty):
        items.extend(filter(None, itertools.starmap(work_queue.get_nowait, itertools.repeat(()))))
    return items


class Drop:
    """Drained work items, to be cancelled with *reason*; see the module docstring."""

    __slots__ = ("_items", "_reason", "_thread")

    def __init__(self, items: deque[WorkItem], reason: str) -> None:
        self._items = items
        self._reason = reason
        self._thread: Optional[threading.Thread] = None

    def run(self, deadline: Optional[float], log: bool = False, minimum: int = SYNC_ITEMS) -> bool:
        """Cancel items, oldest first, until none is left or *deadline* has passed.

        Args:
            deadline: A ``time.monotonic()`` time; None: cancel them all.
            log: Log what a cancel raises (a done-callback's exception) and carry on;
                False: let it propagate (the items not cancelled stay here).
            minimum: How many to cancel (if there are) whatever the deadline.

        Returns:
            Whether every item has been taken (by this call or another thread).
        """
        items = self._items
        pop = items.popleft
        reason = self._reason
        count = 0
        while True:
            if deadline is not None and count >= minimum and time.monotonic() >= deadline:
                return not items
            try:
                item = pop()
            except IndexError:
                return True
            try:
                item.future._transition(DROP, reason)
            except BaseException:
                if not log:
                    raise
                _worker.FUTURES_LOGGER.exception(
                    "cancelling %r at shutdown raised; cancelling the rest", item.future
                )
            count += 1

    def run_or_hand_off(self, deadline: Optional[float]) -> None:
        """Cancel items until *deadline*, then hand the rest to a thread.

        Raises:
            BaseException: whatever a done-callback raised (the rest handed off first).
        """
        try:
            if self.run(deadline):
                return
        except BaseException:
            self.hand_off()
            raise
        self.hand_off()

    def hand_off(self) -> None:
        """Cancel the remaining items in a thread of their own (see the module docstring).

        In the calling thread instead, if the exit hook has run or no thread can start.
        """
        with _worker.global_shutdown_lock:
            if not _exiting:
                self._thread = _start_thread(self._run_in_thread)
                if self._thread is not None:
                    _unfinished.add(self)
                    return
        self.run(None, log=True)

    def finish(self, deadline: Optional[float]) -> None:
        """Help cancel the rest and wait for the thread, until *deadline* (None: all).

        For ``shutdown(wait=True)``, which returns once every future is done.
        """
        if not self.run(deadline, log=True, minimum=0):
            return
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def _run_in_thread(self) -> None:
        try:
            self.run(None, log=True)
        finally:
            with _worker.global_shutdown_lock:
                _unfinished.discard(self)


def _start_thread(target: Callable[[], None]) -> Optional[threading.Thread]:
    """Start a thread running *target*; None if none can start (at exit on 3.12+)."""
    thread = threading.Thread(
        target=target, name="cancelpool-shutdown-cancel", daemon=daemon_threads_allowed()
    )
    try:
        thread.start()
    except RuntimeError:  # at interpreter exit (3.12+), or out of threads
        return None
    return thread


def _finish_at_exit() -> None:
    """Exit hook: cancel what every drop thread has not reached yet, in this thread."""
    global _exiting
    with _worker.global_shutdown_lock:
        _exiting = True
        drops = list(_unfinished)
    deadline = time.monotonic() + EXIT_JOIN
    for drop in drops:
        drop.run(None, log=True)
    for drop in drops:
        thread = drop._thread
        if thread is not None:
            thread.join(max(0.0, deadline - time.monotonic()))


def _forget_drops() -> None:
    """In a forked child (``cancelpool._fork``): the parent's drop threads are not here."""
    _unfinished.clear()


register_atexit(_finish_at_exit)

"""Deadlines of running tasks: one check per executor on the timer, not a timer per task.

A deadline counted from the task's start (the default) is not scheduled per task. The
worker that starts the task writes the clock time its deadline passes on the task's
future (``_deadline_at``) and, only if the executor has no check scheduled by then,
schedules one on the timer thread (``cancelpool._timer``). A check looks at the task each
of the executor's workers is running, expires those whose deadline has passed (the EXPIRE
event of the future's state machine), and schedules the next check for the earliest
deadline still ahead, if any task is running with one.

A task that ends in time needs nothing withdrawn: its worker no longer names it, and
EXPIRE of a future that is done does nothing. So a deadline costs a task one clock read,
one attribute write, and one comparison with a value read from a deque. (Scheduling and
withdrawing a timer entry per task cost 1.2 µs, measured: most of what a no-op task may
cost beyond the stdlib's.) While tasks with deadlines keep running, the timer thread
wakes about once per deadline length (at the earliest deadline among the running tasks),
never per task; when none is running it does not wake.

A deadline counted from submission (``timeout_from="submit"``) covers time spent queued,
where no worker names the task, so it keeps a timer entry of its own
(``CancellableFuture._arm_deadline``).

Locking protocol
----------------
``_lock`` guards ``_handle`` and every write of the time the next check is scheduled
for (``armed_at``), which lives in ``_armed``, a one-slot deque; workers read it without
the lock, through the deque.

Why no deadline is missed, with or without a GIL: a worker publishes its item
(``current_item``) and writes ``_deadline_at``, *then* reads ``_armed[0]``; a check
appends infinity to ``_armed`` (under the lock), *then* reads each worker's item and its
``_deadline_at``. The read and the append are operations on the same deque, each atomic
under that deque's own lock (the GIL, or its per-object lock on a free-threaded build:
see ``cancelpool._timer``), so one comes first, and a lock orders what each thread did
before it with what the other does after it. Every time other than infinity that a
worker can read is followed by a check that appends infinity and then reads the workers:
the check scheduled for it, or, if an ``_arm`` replaced it by an earlier time, the check
scheduled for that one (``check_now`` is a check too). A worker whose read came before
that append has its writes seen by that check, which expires its task or schedules a
check for it. A worker whose read came after it reads infinity, or a time appended later
(covered the same way), and schedules a check itself when its deadline is earlier. A
worker that starts its next task after the check read its item is the second case.

A lock taken by every worker for every task would do the same, but makes them queue up
on it (measured, 8 threads starting tasks at once: 0.45-1.6 µs a start, against
0.13-0.22 µs with the deque, on 3.9 and 3.13).

A forked child has none of the parent's scheduled actions (``cancelpool._timer``): every
watch forgets its check there, so an executor used in the child schedules its own.
"""

from __future__ import annotations

import logging
import math
import threading
import weakref
from collections import deque
from typing import TYPE_CHECKING, Optional

from ._timer import Scheduler, TimerHandle

if TYPE_CHECKING:
    from ._future import CancellableFuture
    from ._worker import WorkerThread

__all__ = ("DeadlineWatch",)

LOGGER = logging.getLogger("cancelpool")


class DeadlineWatch:
    """Expires the deadlines of the tasks an executor's workers are running."""

    __slots__ = ("__weakref__", "_armed", "_clock", "_handle", "_lock", "_scheduler", "_workers")

    def __init__(self, scheduler: Scheduler, workers: set[WorkerThread]) -> None:
        """Watch the tasks of *workers* (the executor's live set), on *scheduler*."""
        self._scheduler = scheduler
        self._clock = scheduler.clock
        self._workers = workers
        self._lock = threading.Lock()
        #: When the next check is scheduled (infinity: none is), in a one-slot deque:
        #: written under ``_lock``, read by workers without it (module docstring).
        self._armed: deque[float] = deque((math.inf,), maxlen=1)
        self._handle: Optional[TimerHandle] = None
        _watches.add(self)

    @property
    def armed_at(self) -> float:
        """When the next check is scheduled (infinity: none is)."""
        return self._armed[0]

    def start(self, future: CancellableFuture[object], timeout: float) -> None:
        """A worker starts *future*'s task, which must end within *timeout* seconds.

        Call from the worker's thread after publishing the task (``current_item``) and
        taking it (TAKE), before calling its code.
        """
        if timeout == 0:
            # Passed already: expire it here, before its code runs, so that its token
            # is cancelled when it starts (whether the timer thread would have been
            # first is not left to chance). ``with_options(timeout=0)`` documents this.
            future._expire()
            return
        at = self._clock() + timeout
        future._deadline_at = at
        # Read through the deque, after the writes: the module docstring says why.
        if at < self._armed[0]:  # no check is scheduled by then: schedule one
            self._arm(at)

    def _arm(self, at: float) -> None:
        with self._lock:
            if at >= self._armed[0]:
                return  # another thread scheduled an earlier check meanwhile
            if self._handle is not None:
                self._handle.cancel()
            self._armed.append(at)
            self._handle = self._scheduler.call_at(at, self._check)

    def _check(self) -> None:
        """The timer action: expire what is due, schedule the check after that."""
        with self._lock:
            self._armed.append(math.inf)  # before reading the workers: module docstring
            self._handle = None
        self._scan()

    def close(self) -> None:
        """Leave nothing on the timer that no running task needs.

        For ``shutdown()``, once its workers have exited: the executor's check stays
        scheduled after its tasks end (a task that ends in time withdraws nothing), and
        deadlines counted from submission stay in the timer's heap, withdrawn, until due;
        either would keep the timer thread alive until then. This checks now
        (``check_now``) and has the timer drop withdrawn actions (``Scheduler.tidy``), so
        that its thread exits when idle. Safe at any time: the watch keeps working.
        """
        self.check_now()
        self._scheduler.tidy()

    def check_now(self) -> None:
        """Check now, in this thread, instead of at the scheduled time.

        Expires what is due and leaves a check scheduled only if a task with a deadline
        is still running. Safe at any time, by the same argument as a scheduled check.
        """
        with self._lock:
            handle, self._handle = self._handle, None
            self._armed.append(math.inf)  # before reading the workers: module docstring
        if handle is not None:
            handle.cancel()
        self._scan()

    def _scan(self) -> None:
        """Expire the running tasks whose deadline has passed; schedule the next check."""
        now = self._clock()
        due: list[CancellableFuture[object]] = []
        after = math.inf
        for worker in self._snapshot():
            item = worker.current_item
            if item is None:
                continue
            future = item.future
            at = future._deadline_at
            if at <= now:
                future._deadline_at = math.inf  # expired once; later checks skip it
                due.append(future)
            elif at < after:
                after = at
        # Schedule the next check first: expiring runs done-callbacks and token
        # callbacks, and one that fails must not leave later deadlines unwatched.
        if after < math.inf:
            self._arm(after)
        for future in due:
            try:
                future._expire()
            except Exception:  # noqa: PERF203 - each task's expiry on its own
                LOGGER.exception("cancelpool: failing %r by its deadline raised", future)

    def _snapshot(self) -> tuple[WorkerThread, ...]:
        """The workers now: the executor adds and discards them under its own lock."""
        while True:
            try:
                return tuple(self._workers)
            except RuntimeError:  # noqa: PERF203 - changed size while copied: copy again
                continue

    def _after_fork_in_child(self) -> None:
        # The scheduled check was in the parent's timer heap, which the child's is not
        # (Scheduler._after_fork_in_child): none is scheduled here.
        self._lock = threading.Lock()
        self._armed = deque((math.inf,), maxlen=1)
        self._handle = None


#: Every watch alive, to reset in a forked child.
_watches: weakref.WeakSet[DeadlineWatch] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """In a forked child: every watch forgets its check (called by ``cancelpool._fork``)."""
    for watch in list(_watches):
        watch._after_fork_in_child()

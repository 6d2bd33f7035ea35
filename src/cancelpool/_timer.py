"""One timer thread for every delayed action of every executor.

Escalation steps, the executors' deadline checks (``cancelpool._deadline``), deadlines
counted from submission and ``CancelSource.cancel_after`` are scheduled here rather than
with a ``threading.Timer`` per task: one daemon thread, one heap ordered by due time on
the monotonic clock, started on first use. It sleeps on a condition without a timeout
when nothing is scheduled, and otherwise until the earliest due time. An action cancelled
before it is due (the deadline of a task that finished in time) stays in the heap until
then, so withdrawing it costs no wake-up; ``call_at`` sweeps such actions out once they
are half the heap. A new action wakes the thread only if it is due before the time the
thread sleeps until.

The clock is injectable: ``ManualScheduler`` runs due actions in the calling thread when
a test advances its clock, so tests of timed behaviour never sleep.

At interpreter exit the thread may not be startable (3.12+); the exit hook then runs due
actions itself (``run_due_without_thread``).

Locking protocol: ``_cond`` (and its lock) guards the heap and the thread handle;
``call_at`` appends to ``_incoming`` without it, and whoever holds it moves those into the
heap (``_absorb``; see ``call_at`` for why none is missed). Actions run after the lock is
released, so an action may schedule another.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import os
import threading
import time
from collections import deque
from typing import Callable, Optional

__all__ = ("ManualScheduler", "Scheduler", "TimerHandle", "get_scheduler")

LOGGER = logging.getLogger("cancelpool")

#: Sweep cancelled handles out of the heap once more than this many (and half of it) are.
SWEEP_AT = 256


def _withdrawn() -> None:
    """What a cancelled handle holds instead of its action."""


class TimerHandle:
    """A scheduled action; ``cancel()`` stops it from running if it has not yet."""

    __slots__ = ("action", "cancelled", "scheduler", "when")

    def __init__(self, when: float, action: Callable[[], object], scheduler: Scheduler) -> None:
        self.when = when
        self.action = action
        self.cancelled = False
        self.scheduler = scheduler

    def cancel(self) -> None:
        """Do not run the action (if it has not run). Cheap: no lock, no wake-up."""
        if not self.cancelled:
            self.cancelled = True
            # Drop the action now: a withdrawn deadline stays in the heap until it is
            # due or swept, and its action (``future._expire``) would keep the task's
            # future, and its result, alive that long.
            self.action = _withdrawn
            # Unlocked, so concurrent cancels may lose a count: it only decides when
            # call_at sweeps the heap, and a low count only delays the sweep.
            self.scheduler._cancelled += 1


class Scheduler:
    """Runs actions at given times on one daemon thread."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, TimerHandle]] = []
        #: Scheduled actions not yet in the heap (see call_at); appended without a lock.
        self._incoming: deque[tuple[float, int, TimerHandle]] = deque()
        self._seq = itertools.count()
        self._thread: Optional[threading.Thread] = None
        #: Handles cancelled while still in the heap (approximate, see TimerHandle).
        self._cancelled = 0
        #: How many times the timer thread woke up (the benchmarks check it stays idle).
        self.wakeups = 0
        #: The due time the timer thread sleeps until (inf: until notified). A new
        #: action due later than that needs no wake-up: the thread re-reads the heap
        #: whenever it wakes.
        self._armed_until = math.inf

    def call_at(self, when: float, action: Callable[[], object]) -> TimerHandle:
        """Run ``action()`` at clock time *when* (at once if that has passed).

        Usually lock-free: the action is appended to ``_incoming`` (an atomic
        ``deque.append``), which the timer thread moves into the heap whenever it looks
        at it. The lock is taken only to wake the thread (the action is due before the
        thread would wake), to start it, or, every ``SWEEP_AT`` actions, to move them
        into the heap here. Every submitter of tasks with deadlines counted from
        submission schedules one per task: a lock per call made 8 contending threads queue
        up on it (measured: +70% per task on 3.9).

        Why no action is missed: we append, *then* read ``_armed_until``; the thread,
        under the lock, sets ``_armed_until``, *then* looks at ``_incoming`` once more
        before it waits. If our read came first, our append did too, and the thread sees
        the action; if it came after, we see the time the thread will sleep until, and
        wake it (under the lock, which it releases only by waiting) if that is too late.
        This relies on the GIL ordering the two threads' steps, as every interpreter we
        support has one.
        """
        handle = TimerHandle(when, action, self)
        incoming = self._incoming
        incoming.append((when, next(self._seq), handle))
        if when < self._armed_until or self._thread is None or len(incoming) > SWEEP_AT:
            with self._cond:
                self._absorb()
                if when < self._armed_until:
                    self._cond.notify()  # due before the thread would wake: re-arm its wait
                if self._thread is None:
                    self._ensure_thread()
        return handle

    def _absorb(self) -> None:
        """Under ``_cond``: move ``_incoming`` into the heap (not the cancelled ones)."""
        incoming, heap = self._incoming, self._heap
        while incoming:
            entry = incoming.popleft()
            if entry[2].cancelled:
                self._cancelled = max(0, self._cancelled - 1)
            else:
                heapq.heappush(heap, entry)
        if self._cancelled > SWEEP_AT and self._cancelled > len(heap) >> 1:
            self._sweep()

    def _sweep(self) -> None:
        """Under ``_cond``: drop cancelled handles from the heap.

        Deadlines of tasks that finish in time are cancelled long before they are due;
        without a sweep they would pile up until their due time. Sweeping when at least
        half the heap is cancelled keeps the cost per handle constant.
        """
        self._heap = [entry for entry in self._heap if not entry[2].cancelled]
        heapq.heapify(self._heap)
        self._cancelled = 0

    def call_later(self, delay: float, action: Callable[[], object]) -> TimerHandle:
        """Run ``action()`` *delay* seconds from now."""
        return self.call_at(self.clock() + delay, action)

    def _ensure_thread(self) -> None:
        # The thread never exits; a fork forgets it (_after_fork_in_child).
        if self._thread is None:
            thread = threading.Thread(target=self._run, name="cancelpool-timer", daemon=True)
            try:
                thread.start()
            except RuntimeError:
                # The interpreter is exiting (3.12+ refuses new threads then) or out of
                # threads. Scheduling must not fail: the action waits in the heap, for
                # the next call_at to try again, or for the exit hook, which runs due
                # actions itself while it waits (run_due_without_thread).
                self._thread = None
                return
            self._thread = thread

    def run_due_without_thread(self) -> Optional[float]:
        """Run due actions in the calling thread if there is no timer thread to run them.

        For the exit hook: at interpreter exit, 3.12+ refuses to start the timer thread,
        so the hook calls this while it waits for cancelled tasks to stop.

        Returns:
            Seconds until the next scheduled action, or None if none is scheduled or the
            timer thread is running.
        """
        while True:
            with self._cond:
                if self._thread is not None and self._thread.is_alive():
                    return None
                handle, delay = self._pop_due()
            if handle is None:
                return delay
            run_action(handle)

    def _pop_due(self) -> tuple[Optional[TimerHandle], Optional[float]]:
        """Under ``_cond``: take the next due action, or say when one will be due.

        Returns:
            ``(handle, 0.0)`` for an action due now, taken off the heap;
            ``(None, delay)`` if the earliest (perhaps cancelled) is due in *delay*
            seconds;
            ``(None, None)`` if nothing is scheduled.
        """
        # Cancelled actions are dropped only once due (or by a sweep): dropping one
        # earlier would move the wake-up time, and re-arming the wait costs a wake-up
        # each time, for every deadline withdrawn by a task that finished in time.
        self._absorb()
        heap = self._heap
        now = self.clock()
        while heap:
            when, _, handle = heap[0]
            if when > now:
                return None, when - now
            heapq.heappop(heap)
            if not handle.cancelled:
                return handle, 0.0
            self._cancelled = max(0, self._cancelled - 1)
        return None, None

    def _run(self) -> None:
        while True:
            with self._cond:
                handle, delay = self._pop_due()
                while handle is None:
                    self._armed_until = math.inf if delay is None else self._heap[0][0]
                    if self._incoming:  # appended before the line above: look again
                        handle, delay = self._pop_due()
                        continue
                    self._cond.wait(delay)  # None: until something is scheduled
                    self.wakeups += 1
                    handle, delay = self._pop_due()
                self._armed_until = -math.inf  # running actions: it re-reads the heap
            run_action(handle)

    def _after_fork_in_child(self) -> None:
        # The thread did not survive the fork; the heap's actions belong to the parent.
        self._cond = threading.Condition(threading.Lock())
        self._heap = []
        self._incoming = deque()
        self._cancelled = 0
        self._armed_until = math.inf
        self._thread = None


class ManualScheduler(Scheduler):
    """A scheduler for tests: a fake clock, and actions run by ``advance()``."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        super().__init__(clock=lambda: self.now)

    def _ensure_thread(self) -> None:
        pass

    def advance(self, seconds: float) -> None:
        """Move the clock forward and run, in this thread, every action now due."""
        self.now += seconds
        self.run_due()

    def run_due(self) -> None:
        """Run every action due at the current fake time, including ones they schedule."""
        while True:
            with self._cond:
                handle, _ = self._pop_due()
            if handle is None:
                return
            run_action(handle)

    def pending(self) -> list[float]:
        """Due times of the actions still scheduled."""
        with self._cond:
            self._absorb()
            return sorted(when for when, _, h in self._heap if not h.cancelled)


def run_action(handle: TimerHandle) -> None:
    """Run one scheduled action, logging (not raising) what it raises."""
    if handle.cancelled:
        return
    try:
        handle.action()
    except Exception:
        LOGGER.exception("cancelpool timer action %r failed", handle.action)


_scheduler = Scheduler()


def get_scheduler() -> Scheduler:
    """The process-wide scheduler that executors created now will use."""
    return _scheduler


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _scheduler._after_fork_in_child())

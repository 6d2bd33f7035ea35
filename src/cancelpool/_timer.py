"""One timer thread for every delayed action of every executor.

Escalation steps (and later, deadlines) are scheduled here rather than with a
``threading.Timer`` per task: one daemon thread, one heap ordered by due time on the
monotonic clock, started on first use. It sleeps on a condition without a timeout when
nothing is scheduled, and with a timeout of exactly the time to the next due action
otherwise, so it never wakes for nothing.

The clock is injectable: ``ManualScheduler`` runs due actions in the calling thread when
a test advances its clock, so tests of timed behaviour never sleep.

At interpreter exit the thread may not be startable (3.12+); the exit hook then runs due
actions itself (``run_due_without_thread``).

Locking protocol: ``_cond`` (and its lock) guards the heap and the thread handle; actions
run after it is released, so an action may schedule another.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from typing import Callable, Optional

__all__ = ("ManualScheduler", "Scheduler", "TimerHandle", "get_scheduler")

LOGGER = logging.getLogger("cancelpool")


class TimerHandle:
    """A scheduled action; ``cancel()`` stops it from running if it has not yet."""

    __slots__ = ("action", "cancelled", "when")

    def __init__(self, when: float, action: Callable[[], object]) -> None:
        self.when = when
        self.action = action
        self.cancelled = False

    def cancel(self) -> None:
        """Do not run the action (if it has not run)."""
        self.cancelled = True


class Scheduler:
    """Runs actions at given times on one daemon thread."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()
        self._thread: Optional[threading.Thread] = None

    def call_at(self, when: float, action: Callable[[], object]) -> TimerHandle:
        """Run ``action()`` at clock time *when* (at once if that has passed)."""
        handle = TimerHandle(when, action)
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._seq), handle))
            if self._heap[0][2] is handle:
                self._cond.notify()  # the earliest deadline moved: re-arm the wait
            self._ensure_thread()
        return handle

    def call_later(self, delay: float, action: Callable[[], object]) -> TimerHandle:
        """Run ``action()`` *delay* seconds from now."""
        return self.call_at(self.clock() + delay, action)

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
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
            ``(None, delay)`` if the earliest is due in *delay* seconds;
            ``(None, None)`` if nothing is scheduled.
        """
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)
        if not self._heap:
            return None, None
        delay = self._heap[0][0] - self.clock()
        if delay > 0:
            return None, delay
        return heapq.heappop(self._heap)[2], 0.0

    def _run(self) -> None:
        while True:
            with self._cond:
                handle, delay = self._pop_due()
                while handle is None:
                    self._cond.wait(delay)  # None: until something is scheduled
                    handle, delay = self._pop_due()
            run_action(handle)

    def _after_fork_in_child(self) -> None:
        # The thread did not survive the fork; the heap's actions belong to the parent.
        self._cond = threading.Condition(threading.Lock())
        self._heap = []
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

"""One timer thread for every delayed action of every executor, alive only while needed.

Escalation steps, the executors' deadline checks (``cancelpool._deadline``), deadlines
counted from submission and ``CancelSource.cancel_after`` are scheduled here rather than
with a ``threading.Timer`` per task: one daemon thread, one heap ordered by due time on
the monotonic clock. The thread sleeps until the earliest due time; once nothing is
pending and nothing has been scheduled for ``idle_timeout`` seconds (1 s by default), it
exits, so that a process that once cancelled a running task does not keep a thread for
ever (CPython's ``test_asyncio`` counts it as a dangling thread). The next action
scheduled starts a new one. The idle time counts from the last action scheduled, not
from the last one run: an escalation step scheduled at a cancel and run a grace period
later leaves the thread to exit right after it, not a second after that.

An action cancelled before it is due (the deadline of a task that finished in time)
stays in the heap until then, so withdrawing it costs no wake-up; ``call_at`` sweeps
such actions out once they are half the heap, the thread drops them all when nothing
else is left, and ``tidy()`` (at shutdown) drops them at once. A new action wakes the
thread only if it is due before the time the thread sleeps until.

The clock is injectable: ``ManualScheduler`` runs due actions in the calling thread when
a test advances its clock, so tests of timed behaviour never sleep.

At interpreter exit no thread may be startable (3.12+); the exit hook then runs due
actions itself (``run_due_without_thread``). Scheduling never fails.

Nothing an action does ends the thread: ``run_action`` logs whatever it raises, a
``SystemExit`` from a done-callback included, naming the action; and if the thread dies
anyway, another is started at once for the actions still scheduled. A due time the
clock cannot reach (infinity: ``grace=math.inf``, ``cancel_after(math.inf)``) is never
run and keeps no thread; every wait is at most ``MAX_WAIT``, whatever the due time
(issue 11).

Locking protocol
----------------
``_cond`` (and its lock) guards the heap, ``_thread`` (the thread running actions, or
None) and every write of ``_until``. ``call_at`` takes it only to wake or start the
thread, or every ``SWEEP_AT`` actions to move them into the heap; otherwise it appends
the action to ``_incoming`` and returns. Whoever holds the lock moves ``_incoming`` into
the heap (``_absorb``). Actions run after the lock is released, so an action may
schedule another.

Why no action is missed, with or without a GIL
----------------------------------------------
``_until`` is a one-slot deque holding the time by which the thread will next look at
``_incoming``: ``-inf`` while it is awake (running an action, or about to look), the due
time it sleeps until, or ``+inf`` when no thread is running (none started yet, or the
one there was has decided to exit). ``call_at`` appends its action to ``_incoming``
(step 1), *then* reads ``_until[0]`` (step 2), and takes the lock if the thread would
look too late. The thread, holding the lock, writes the time it will sleep until (or
``+inf`` when it is about to exit) into ``_until`` (step A), *then* looks at
``_incoming`` once more (step B), and sleeps (or exits) only if it is empty.

Steps 2 and A are operations on the same deque, and every operation on a deque is
atomic and runs under that deque's own lock: the GIL on a GIL build, the deque's
per-object lock on a free-threaded one (CPython 3.13+, ``deque_item`` and the
``@critical_section`` methods of ``Modules/_collectionsmodule.c``). So one of the two
comes first, and a lock orders what each thread did before it with what the other does
after it:

* step 2 first: our append (step 1, before step 2) happens before step B (after step
  A), so B finds the action and the thread takes it in instead of sleeping or exiting.
  (Only holders of the lock take actions out of ``_incoming``, and the thread has held
  it since before it last took them in; if another holder took ours into the heap
  first, the thread saw it there when it chose how long to sleep.)
* step A first: step 2 reads the value A wrote, or a later one; every value written is
  a promise the thread keeps (it looks by then, or there is no thread). So we see that
  the thread will look too late, or not at all, and take the lock: to wake it, or to
  start a new thread once the exiting one has let go of the lock (``_thread`` is None,
  set in the same locked step as its decision to exit).

Nothing here depends on how two threads' steps interleave. The same one-slot-deque
construction orders the deadline watch (``cancelpool._deadline``); ``docs/design.md``
("Without the GIL") lists every such place.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
from collections import deque
from typing import Callable, Optional

__all__ = ("ManualScheduler", "Scheduler", "TimerHandle", "get_scheduler")

LOGGER = logging.getLogger("cancelpool")

#: Sweep cancelled handles out of the heap once more than this many (and half of it) are.
SWEEP_AT = 256
#: Seconds the timer thread waits with nothing scheduled before it exits.
IDLE_TIMEOUT = 1.0
#: The longest single wait (``Lock.acquire`` rejects longer ones with OverflowError).
MAX_WAIT = min(threading.TIMEOUT_MAX, 86400.0)

# What ``_until`` holds (see the module docstring): the thread looks at ``_incoming``
# before it waits again (awake), or there is no thread to look (a new action starts one).
_AWAKE = -math.inf
_NO_THREAD = math.inf


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
        """Do not run the action (if it has not run). Cheap: no lock, no wake-up.

        A cancel racing with the thread that is about to run the action may not stop it
        (as with ``threading.Timer``): the actions scheduled here look at the state they
        act on when they run.
        """
        if not self.cancelled:
            self.cancelled = True
            # Drop the action now: a withdrawn deadline stays in the heap until it is
            # due or swept, and its action (``future._expire``) would keep the task's
            # future, and its result, alive that long. A runner that reads the new
            # ``action`` but the old ``cancelled`` runs ``_withdrawn``: nothing.
            self.action = _withdrawn
            # Unlocked, so concurrent cancels may lose a count (with or without a GIL:
            # ``+=`` is a read and a write): it only decides when the heap is swept, and
            # a low count only delays the sweep.
            self.scheduler._cancelled += 1


class Scheduler:
    """Runs actions at given times on one daemon thread, started when needed.

    Args:
        clock: The clock due times are read on (``time.monotonic``).
        idle_timeout: Seconds the thread waits with nothing scheduled before it exits.
    """

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, idle_timeout: float = IDLE_TIMEOUT
    ) -> None:
        self.clock = clock
        #: Seconds the thread waits with nothing scheduled before it exits (tests shorten it).
        self.idle_timeout = idle_timeout
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, TimerHandle]] = []
        #: Scheduled actions not yet in the heap (see call_at); appended without the lock.
        self._incoming: deque[TimerHandle] = deque()
        #: When the thread looks at ``_incoming`` next (see the module docstring). Written
        #: under ``_cond``; read by ``call_at`` without it, through the deque.
        self._until: deque[float] = deque((_NO_THREAD,), maxlen=1)
        self._seq = itertools.count()  # ties in the heap: under _cond
        self._thread: Optional[threading.Thread] = None
        #: Handles cancelled while still in the heap (approximate, see TimerHandle).
        self._cancelled = 0
        #: How many times the timer thread woke up (the benchmarks check it stays idle).
        self.wakeups = 0
        #: How many timer threads were started (the tests count restarts).
        self.starts = 0
        #: When actions were last taken in (the idle time counts from it), under _cond.
        self._scheduled_at = -math.inf

    def call_at(self, when: float, action: Callable[[], object]) -> TimerHandle:
        """Run ``action()`` at clock time *when* (at once if that has passed).

        Never fails, and never blocks for long: the action is appended to ``_incoming``
        (lock-free), which the timer thread moves into the heap whenever it looks at it.
        The lock is taken only to wake the thread (the action is due before the thread
        would look), to start one (none is running), or, every ``SWEEP_AT`` actions, to
        move them into the heap here. Every submitter of tasks with deadlines counted
        from submission schedules one per task: a lock per call made 8 contending
        threads queue up on it (measured: +70% per task on 3.9). The module docstring
        says why no action is missed, with or without a GIL. An action due at infinity
        is never run, and keeps no thread alive.
        """
        handle = TimerHandle(when, action, self)
        incoming = self._incoming
        incoming.append(handle)  # step 1
        if when < self._until[0] or len(incoming) > SWEEP_AT:  # step 2: read after 1
            self._settle()
        return handle

    def call_later(self, delay: float, action: Callable[[], object]) -> TimerHandle:
        """Run ``action()`` *delay* seconds from now."""
        return self.call_at(self.clock() + delay, action)

    def _settle(self) -> None:
        """Move ``_incoming`` into the heap; wake or start the thread if it looks too late."""
        with self._cond:
            earliest = self._absorb()
            if earliest < self._until[0]:
                if self._thread is None:
                    self._start_thread()
                else:
                    self._wake()

    def _absorb(self) -> float:
        """Under ``_cond``: move ``_incoming`` into the heap (not the cancelled ones).

        Returns:
            The earliest due time among the actions moved (infinity if none).
        """
        incoming, heap, seq = self._incoming, self._heap, self._seq
        earliest = math.inf
        while incoming:  # only holders of _cond take from it: it cannot empty meanwhile
            handle = incoming.popleft()
            when = handle.when
            if handle.cancelled:
                self._cancelled = max(0, self._cancelled - 1)
            elif when < math.inf:  # never due (infinity, NaN): nothing to wait for
                heapq.heappush(heap, (when, next(seq), handle))
                if when < earliest:
                    earliest = when
        if earliest < math.inf:
            self._scheduled_at = self.clock()  # (or a little later: taken in since)
        if self._cancelled > SWEEP_AT and self._cancelled > len(heap) >> 1:
            self._sweep()
        return earliest

    def _sweep(self) -> None:
        """Under ``_cond``: drop cancelled handles from the heap.

        Deadlines of tasks that finish in time are cancelled long before they are due;
        without a sweep they would pile up until their due time. Sweeping when at least
        half the heap is cancelled keeps the cost per handle constant.
        """
        self._heap = [entry for entry in self._heap if not entry[2].cancelled]
        heapq.heapify(self._heap)
        self._cancelled = 0

    def tidy(self) -> None:
        """Drop withdrawn actions now, so that the thread need not wake for them.

        A withdrawn action stays in the heap until due (withdrawing costs no lock and no
        wake-up), and the thread sleeps until the first of them: a withdrawn one-hour
        deadline would keep it alive for an hour. ``shutdown()`` calls this (through
        ``DeadlineWatch.close``) so that the thread sleeps until the next real action,
        or goes idle and exits. Costs a pass over the heap: not for every task.
        """
        with self._cond:
            self._absorb()
            before = self._heap[0][0] if self._heap else math.inf
            self._sweep()
            after = self._heap[0][0] if self._heap else math.inf
            if after > before and self._thread is not None and self._until[0] > _AWAKE:
                self._wake()  # it sleeps until a withdrawn one

    def retire_if_idle(self, timeout: float) -> None:
        """If nothing is scheduled, have the timer thread exit now, and wait for it.

        For ``shutdown(wait=True)``, after ``tidy()``: a program (or CPython's own test
        suite, whose ``threading_cleanup()`` runs right after an executor's shutdown)
        expects no thread of the executor to outlive ``shutdown(wait=True)``, and the idle
        thread would otherwise stay ``idle_timeout`` seconds more. The thread is told
        under ``_cond`` that its idle time is over (``_scheduled_at``); an action taken in
        meanwhile resets it, and the thread runs it instead of exiting, so nothing
        scheduled is ever dropped. Waits at most *timeout* seconds, and not at all once
        the thread has taken new work.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            self._absorb()
            self._sweep()
            thread = self._thread
            if thread is None or thread is threading.current_thread() or self._heap:
                return
            self._scheduled_at = -math.inf  # its idle time is over
            self._wake()
        while thread.is_alive():
            with self._cond:
                let_go = self._thread is not thread
                busy = not let_go and bool(self._heap or self._incoming)
            left = deadline - time.monotonic()
            if busy or left <= 0:
                return  # it has work again: it stays, as it should
            thread.join(left if let_go else min(left, 0.001))

    def _wake(self) -> None:
        """Under ``_cond``: re-arm the sleeping thread's wait; it looks first, then sleeps."""
        self._cond.notify()
        self._until.append(_AWAKE)

    def _start_thread(self) -> bool:
        """Under ``_cond``: start the timer thread; False if no thread can start now."""
        thread = threading.Thread(target=self._run, name="cancelpool-timer", daemon=True)
        try:
            thread.start()
        except RuntimeError:
            # The interpreter is exiting (3.12+ refuses new threads then) or out of
            # threads. Scheduling must not fail: the action waits in the heap, for
            # the next call_at to try again, or for the exit hook, which runs due
            # actions itself while it waits (run_due_without_thread).
            return False
        self._thread = thread
        self.starts += 1
        self._until.append(_AWAKE)  # it looks at the heap before it first waits
        return True

    def _let_go(self) -> bool:
        """Under ``_cond``: stop running actions, unless one arrived; True if stopped.

        For the thread that exits after ``idle_timeout`` with nothing scheduled, and for
        the exit hook standing in for it (``run_due_without_thread``). Steps A and B of
        the module docstring, with "no thread" as the time of the next look.
        """
        self._until.append(_NO_THREAD)  # A: from now on, call_at starts a new thread
        if self._incoming:  # B: an action appended before its call_at read A
            self._until.append(_AWAKE)
            return False
        self._thread = None
        return True

    def run_due_without_thread(self) -> Optional[float]:
        """Run due actions in the calling thread if there is no timer thread to run them.

        For the exit hook: at interpreter exit, 3.12+ refuses to start the timer thread,
        so the hook calls this while it waits for cancelled tasks to stop. If a thread
        can be started, one is, and it runs them. While the caller runs actions it
        stands in for the timer thread: no other thread runs actions meanwhile.

        Returns:
            Seconds until the next scheduled action, or None if none is scheduled or a
            timer thread runs them.
        """
        with self._cond:
            thread = self._thread
            if thread is not None and thread.is_alive():
                return None
            if self._start_thread():
                return None
            self._thread = threading.current_thread()
            self._until.append(_AWAKE)
        try:
            while True:
                with self._cond:
                    handle, delay = self._pop_due()
                    if handle is None and self._let_go():
                        return delay
                if handle is not None:
                    run_action(handle)
        except BaseException:
            self._thread_died()
            raise

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
        if self._heap and self._cancelled >= len(self._heap):
            # All withdrawn, as far as the count says: drop them, so that the thread
            # sleeps until a real action, or exits, instead of waking for nothing.
            self._sweep()
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
        try:
            while True:
                with self._cond:
                    handle = self._next_due()
                if handle is None:
                    return  # let go (_let_go): the next call_at starts a new thread
                run_action(handle)
        except BaseException:
            # run_action logs whatever actions raise; only a bug here (or a MemoryError)
            # gets this far. Hand the role to a new thread (_thread_died).
            self._thread_died()
            raise

    def _next_due(self) -> Optional[TimerHandle]:
        """Under ``_cond``, on the timer thread: wait for the next due action.

        Returns:
            The action to run (after releasing the lock), or None if the thread has let
            go of its role (``_let_go``) and must exit.
        """
        idle = False  # the last wait ran out with nothing scheduled
        while True:
            handle, delay = self._pop_due()
            if handle is not None:
                self._until.append(_AWAKE)  # running it: it looks again afterwards
                return handle
            if delay is None:
                now = self.clock()
                wait = self._scheduled_at + self.idle_timeout - now
                # (idle: a wait that ran out, whatever a test's clock says)
                if idle or wait <= 0:
                    if self._let_go():
                        return None
                    continue  # something arrived meanwhile: take it in
                wait = min(wait, MAX_WAIT)
                until = now + wait
            else:
                wait = min(delay, MAX_WAIT)  # waking earlier than promised is harmless
                until = self._heap[0][0]
            self._until.append(until)  # A: the time it looks next
            if self._incoming:  # B: appended before its call_at could read A
                continue
            notified = self._cond.wait(wait)
            self.wakeups += 1
            self._until.append(_AWAKE)
            idle = delay is None and not notified

    def _thread_died(self) -> None:
        """After the thread running actions died of an exception: start another.

        ``run_action`` catches everything an action raises, so only a bug here (or a
        ``MemoryError``) gets this far. Actions already scheduled must not wait for the
        next ``call_at``: if any is, a new thread is started for them now (or, if none
        can start, the next ``call_at`` or the exit hook runs them).
        """
        with self._cond:
            if self._thread is threading.current_thread():
                self._thread = None
                self._until.append(_NO_THREAD)
                if self._heap or self._incoming:
                    self._start_thread()

    def _after_fork_in_child(self) -> None:
        # The thread did not survive the fork; the heap's actions belong to the parent.
        self._cond = threading.Condition(threading.Lock())
        self._heap = []
        self._incoming = deque()
        self._until = deque((_NO_THREAD,), maxlen=1)
        self._cancelled = 0
        self._thread = None


class ManualScheduler(Scheduler):
    """A scheduler for tests: a fake clock, and actions run by ``advance()``."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        super().__init__(clock=lambda: self.now)

    def _start_thread(self) -> bool:
        return False  # no thread: actions run when the test advances the clock

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
    """Run one scheduled action, logging (not raising) whatever it raises.

    A ``BaseException`` too: an action runs user code (a future's done-callbacks, a
    token's callbacks), and a ``SystemExit`` or ``KeyboardInterrupt`` raised there would
    otherwise end the timer thread, which every executor's deadlines and escalations
    share, and ``threading``'s excepthook reports no ``SystemExit``: every deadline of the
    process would stop with no word said. The action is named, so the log says whose code
    it was.
    """
    if handle.cancelled:
        return
    action = handle.action
    try:
        action()
    except BaseException:  # the thread serves every executor: report it, and go on
        LOGGER.exception(
            "cancelpool's timer thread caught an exception from %r (a callback it ran "
            "raised it); the timer thread goes on running",
            action,
        )


_scheduler = Scheduler()


def get_scheduler() -> Scheduler:
    """The process-wide scheduler that executors created now will use."""
    return _scheduler


def _after_fork_in_child() -> None:
    """In a forked child: reset the process-wide scheduler (called by ``cancelpool._fork``).

    Looks ``_scheduler`` up at the call: tests replace it.
    """
    _scheduler._after_fork_in_child()

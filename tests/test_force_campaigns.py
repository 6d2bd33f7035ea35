"""Bounded random campaigns for forced cancellation (marker ``stress``, issue 10).

Each campaign repeats one race many times: its base trial count times
``CANCELPOOL_STRESS_SCALE`` (CI runs scale 1; ``scripts/force-campaigns`` runs larger
scales on every interpreter with every core kept busy by other processes), under a time
cap that scales with it.

The shape campaigns take one task shape each: a ``while True`` loop that never looks at
its token, around a user context manager, a ``try``/``finally``, a generator, a stdlib
primitive, ``logging`` or ``open()``. Each trial submits the task to one reused executor
(one worker, ``force=True, grace=0``), waits until it has run a random number of
iterations (a ``random.Random`` seeded per shape, so that the cancel lands at varied
points), calls ``cancel()`` and ``wait_stopped()`` (bounded), and checks the shape's
invariant. A trial is

* *broken* if the invariant does not hold (a lock left held, an ``__exit__`` or a
  ``finally`` skipped, a primitive's count lost, a torn line...) or the task ended with
  anything but ``TaskInterrupted``;
* *not stopped* if its code had not stopped ``WAIT`` seconds after the cancel, or its
  worker was abandoned (``abandon_after``).

Both counts must be 0. The loops over primitives, ``logging`` and ``open()`` spend most
of their time in protected code, which an interrupt never lands in: they show that the
task is still stopped, at the loop's back-edge.

The other campaigns:

* control: the naive recipe (``PyThreadState_SetAsyncExc`` sent from another thread,
  defined here, since cancelpool no longer has it) does break the same shapes, so the
  checks can see a break;
* an interrupt only ever reaches the task it was meant for;
* a lock taken inside ``shield()`` is never left held;
* whatever the timing, the worker survives interrupts racing the end of tasks, every
  future ends, and no cancelled future has a result.

With ``CANCELPOOL_CAMPAIGN_LOG`` naming a file, each campaign appends one JSON line with
its counts (``scripts/force-campaigns`` reads them); unset, nothing is written.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import linecache
import logging
import os
import platform
import queue
import random
import sys
import threading
import time
import traceback
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional, TextIO

import pytest

import cancelpool
from cancelpool import (
    CancellableFuture,
    CancellableThreadPoolExecutor,
    TaskCancelled,
    TaskInterrupted,
    TaskState,
    shield,
)

from .conftest import STRESS_SCALE, WAIT

#: Seconds a campaign may run before it stops short (``capped`` in its log line).
TIME_CAP = 30.0 * STRESS_SCALE

pytestmark = [
    pytest.mark.stress,
    pytest.mark.skipif(not cancelpool.FORCE_AVAILABLE, reason="no forced interrupts here"),
    # A campaign runs for up to TIME_CAP, then may wait for one stuck trial.
    pytest.mark.timeout(TIME_CAP + 4 * WAIT + 60),
]

#: Trials of each shape campaign at scale 1; ``CANCELPOOL_STRESS_SCALE=50`` makes 10,000.
SHAPE_TRIALS = 200
#: Iterations a task runs before the cancel: drawn from 1 to this, per trial.
MAX_WARMUP = 200
#: Iterations of the pure-Python work inside the user-code shapes.
WORK = 5
#: A campaign stops at this many failed trials: enough to report, and a stuck trial
#: costs ``WAIT`` seconds.
MAX_FAILURES = 5
#: The forced executor's ``abandon_after``: well inside ``WAIT``, so an abandoned
#: worker is seen as one, and far above any stop latency under load.
ABANDON_AFTER = WAIT / 2
#: The switch interval during the campaigns. The test's thread waits for a task that
#: holds the GIL (most shapes never release it); with the default 5 ms, each trial would
#: wait that long for its turn. A short one also varies where the task is when its
#: thread is armed (whether the point it raises at is safe must not depend on it).
SWITCH_INTERVAL = 1e-5
#: Where each campaign appends its counts as a JSON line (``scripts/force-campaigns``).
CAMPAIGN_LOG = os.environ.get("CANCELPOOL_CAMPAIGN_LOG")

Task = Callable[[threading.Event], None]
Check = Callable[[], Optional[str]]


def trials(base: int) -> int:
    return max(1, int(base * STRESS_SCALE))


def work(spins: int) -> None:
    """A user function with a loop of its own: candidate points inside the shape."""
    for _ in range(spins):
        pass


# ------------------------------------------------------------------------ the tally


class Tally:
    """One campaign's counts, written to ``CAMPAIGN_LOG`` as a JSON line."""

    def __init__(self, campaign: str, asked: int) -> None:
        self.campaign = campaign
        self.asked = asked
        self.trials = 0
        self.broken = 0
        self.not_stopped = 0
        self.capped = False
        self.failures: list[str] = []
        self.latencies: list[float] = []
        self.started = time.monotonic()
        self.deadline = self.started + TIME_CAP

    def more(self) -> bool:
        """Whether to run another trial: asked for, under the cap, few failures so far."""
        if self.trials >= self.asked or len(self.failures) >= MAX_FAILURES:
            return False
        if time.monotonic() > self.deadline:
            self.capped = True
            return False
        return True

    def fail(self, what: str) -> None:
        self.failures.append(f"{self.campaign}, trial {self.trials}: {what}")

    def report(self) -> str:
        return (
            f"{self.campaign}: {self.broken} broken and {self.not_stopped} not stopped "
            f"in {self.trials} trials\n" + "\n\n".join(self.failures)
        )

    def log(self) -> None:
        if not CAMPAIGN_LOG:
            return
        ms = sorted(1000 * s for s in self.latencies)
        record = {
            "campaign": self.campaign,
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "scale": STRESS_SCALE,
            "asked": self.asked,
            "trials": self.trials,
            "broken": self.broken,
            "not_stopped": self.not_stopped,
            "capped": self.capped,
            "seconds": round(time.monotonic() - self.started, 3),
            "stop_ms_p50": round(ms[len(ms) // 2], 3) if ms else None,
            "stop_ms_p99": round(ms[min(len(ms) - 1, len(ms) * 99 // 100)], 3) if ms else None,
            "stop_ms_max": round(ms[-1], 3) if ms else None,
            "failures": self.failures,
        }
        with open(CAMPAIGN_LOG, "a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")


class Landing:
    """Runs a task and keeps the exception that ended it: where did the interrupt land?"""

    exc: Optional[BaseException] = None

    def run(self, task: Task, started: threading.Event) -> None:
        try:
            task(started)
        except BaseException as exc:
            self.exc = exc
            raise

    def absorb(self, task: Task, started: threading.Event) -> None:
        """``run()`` for a plain thread, which must not end with an exception."""
        with contextlib.suppress(BaseException):  # kept in self.exc
            self.run(task, started)

    def unexpected(self, ends: tuple[type[BaseException], ...]) -> Optional[str]:
        """Why the task's end is not one of *ends*, or None."""
        if isinstance(self.exc, ends):
            return None
        return f"the task ended with {self.exc!r}, not {' or '.join(e.__name__ for e in ends)}"

    def where(self) -> str:
        """The innermost frames of the exception, with the offset each was at."""
        if self.exc is None:
            return "(no exception)"
        entries = []
        tb = self.exc.__traceback__
        while tb is not None:
            code = tb.tb_frame.f_code
            line = linecache.getline(code.co_filename, tb.tb_lineno).strip()
            entries.append(
                f"  {code.co_filename}:{tb.tb_lineno} in {code.co_name}, "
                f"offset {tb.tb_lasti}: {line}\n"
            )
            tb = tb.tb_next
        return f"{self.exc!r} raised at:\n" + "".join(entries[-5:])


# ------------------------------------------------------------------------ the shapes


class Shape:
    """A task shape: ``trial()`` makes a fresh task and the check of its invariant.

    Every task is a ``while True`` loop that sets *started* after *warmup* iterations and
    never looks at its token. ``halt`` is the test's escape hatch, set only once a trial
    has failed to stop, so that a stuck thread does not spin for the rest of the run.
    """

    name: ClassVar[str] = ""
    #: How the task may end: an interrupt.
    ends: ClassVar[tuple[type[BaseException], ...]] = (TaskInterrupted,)

    def __init__(self, folder: Path) -> None:
        self.halt = [False]
        self.folder = folder

    def trial(self, warmup: int) -> tuple[Task, Check]:
        raise NotImplementedError

    def after_cancel(self) -> None:
        """Called right after ``cancel()``."""

    def unstick(self) -> None:
        """After ``halt`` is set: wake a task blocked in a call, if the shape can block."""

    def close(self) -> None:
        """Release what the campaign's trials shared."""


def lock_check(lock: Any, what: str = "the lock") -> Check:
    """A check that *lock* can be taken by another thread than the task's (the test's)."""

    def check() -> Optional[str]:
        if not lock.acquire(blocking=False):
            return f"{what} is still held"
        lock.release()
        return None

    return check


class Guard:
    """A user context manager whose ``__exit__`` undoes what its ``__enter__`` did."""

    def __init__(self, lock: bool, exit_spins: int) -> None:
        self.lock = threading.Lock() if lock else None
        self.exit_spins = exit_spins
        self.entries = 0
        self.exits = 0

    def __enter__(self) -> Guard:
        if self.lock is not None:
            self.lock.acquire()
        self.entries += 1
        return self

    def __exit__(self, *exc_info: object) -> None:
        for _ in range(self.exit_spins):
            pass
        self.exits += 1
        if self.lock is not None:
            self.lock.release()

    def broken(self) -> Optional[str]:
        if self.entries != self.exits:
            return f"{self.entries} entries but {self.exits} exits"
        if self.lock is not None and self.lock.locked():
            return "the lock taken in __enter__ is still held"
        return None


class UserContextManager(Shape):
    """``while True: with guard: work()``; the guard counts entries and exits."""

    name = "cm-plain"
    lock = False
    exit_spins = 0

    def trial(self, warmup: int) -> tuple[Task, Check]:
        guard = Guard(self.lock, self.exit_spins)
        halt = self.halt

        def task(started: threading.Event) -> None:
            n = 0
            while True:
                with guard:
                    work(WORK)
                n += 1
                if n == warmup:
                    started.set()
                elif halt[0]:
                    return

        return task, guard.broken


class UserContextManagerWithLock(UserContextManager):
    """The same, with ``self.lock.acquire()`` in ``__enter__`` and the release in ``__exit__``."""

    name = "cm-lock"
    lock = True


class UserContextManagerWithLoopInExit(UserContextManager):
    """The same, with a loop in ``__exit__`` before it releases (candidate points there)."""

    name = "cm-exit-loop"
    lock = True
    exit_spins = 50


class TryFinallyInline(Shape):
    """``lock.acquire(); try: <a loop> finally: lock.release()``, all in the task's frame."""

    name = "try-finally"

    def trial(self, warmup: int) -> tuple[Task, Check]:
        lock = threading.Lock()
        halt = self.halt

        def task(started: threading.Event) -> None:
            n = 0
            while True:
                lock.acquire()
                try:
                    for _ in range(WORK):
                        pass
                finally:
                    lock.release()
                n += 1
                if n == warmup:
                    started.set()
                elif halt[0]:
                    return

        return task, lock_check(lock)


class TryFinallyCallee(Shape):
    """``lock.acquire(); try: work() finally: lock.release()``, the loop in ``work()``."""

    name = "try-finally-call"

    def trial(self, warmup: int) -> tuple[Task, Check]:
        lock = threading.Lock()
        halt = self.halt

        def task(started: threading.Event) -> None:
            n = 0
            while True:
                lock.acquire()
                try:
                    work(WORK)
                finally:
                    lock.release()
                n += 1
                if n == warmup:
                    started.set()
                elif halt[0]:
                    return

        return task, lock_check(lock)


class NestedWith(Shape):
    """``with outer: with inner: work()``, two guards that each take a lock."""

    name = "nested-with"

    def trial(self, warmup: int) -> tuple[Task, Check]:
        outer, inner = Guard(True, 0), Guard(True, 0)
        halt = self.halt

        def task(started: threading.Event) -> None:
            n = 0
            while True:
                with outer:  # noqa: SIM117 - the shape under test is two nested statements
                    with inner:
                        work(WORK)
                n += 1
                if n == warmup:
                    started.set()
                elif halt[0]:
                    return

        def check() -> Optional[str]:
            why = outer.broken() or inner.broken()
            return None if why is None else f"outer: {outer.broken()}; inner: {inner.broken()}"

        return task, check


class GeneratorCounts:
    def __init__(self) -> None:
        self.entered = 0
        self.finalized = 0


class GeneratorClose(Shape):
    """A generator with ``try``/``finally`` that the task iterates and holds.

    The generator counts the bodies that entered the ``try`` and the ``finally`` bodies
    that ran to their end (after a loop: a candidate point inside the ``finally``). The
    task takes two values in a ``for`` loop; then on odd rounds one more (``next()``) and
    closes the generator (``close()``), and on even rounds drops it suspended: rebinding
    the names finalizes it, in the task's thread. The test keeps the last generator; once
    the task is stopped, it closes it (a no-op unless the task left it suspended), so
    every generator that entered its ``try`` has been closed, and its ``finally`` must
    have run to the end exactly once. (An interrupt raised where a suspended generator
    resumes would leave the frame without running its ``finally`` on 3.9-3.11.)
    """

    name = "generator-close"

    def trial(self, warmup: int) -> tuple[Task, Check]:
        counts = GeneratorCounts()
        last: list[Optional[Generator[int, None, None]]] = [None]
        halt = self.halt

        def numbers() -> Generator[int, None, None]:
            counts.entered += 1
            try:
                i = 0
                while True:
                    yield i
                    i += 1
            finally:
                for _ in range(3):
                    pass
                counts.finalized += 1

        def task(started: threading.Event) -> None:
            n = 0
            while True:
                gen = numbers()
                last[0] = gen
                for value in gen:
                    if value == 1:
                        break
                if n % 2:
                    next(gen)  # one more value (a C call: the GIL may change hands here)
                    gen.close()
                n += 1
                if n == warmup:
                    started.set()
                elif halt[0]:
                    return

        def check() -> Optional[str]:
            gen = last[0]
            if gen is not None:
                gen.close()  # the last one, if the task left it suspended
            if counts.entered != counts.finalized:
                return f"{counts.entered} generators entered try, {counts.finalized} finally ran"
            return None

        return task, check


class QueueLoop(Shape):
    """``while True: q.put(n); q.get()``: the loop lives in ``queue``.

    Its only candidate point is the back-edge, after ``get()``: the queue must be empty.
    """

    name = "queue"

    def trial(self, warmup: int) -> tuple[Task, Check]:
        q: queue.Queue[int] = queue.Queue()
        halt = self.halt

        def task(started: threading.Event) -> None:
            n = 0
            while True:
                q.put(n)
                q.get()
                n += 1
                if n == warmup:
                    started.set()
                elif halt[0]:
                    return

        def check() -> Optional[str]:
            if q.mutex.locked():
                return "the queue's mutex is still held"
            if q.qsize() != 0:
                return f"{q.qsize()} items left in the queue"
            return None

        return task, check


class QueueConsumer(Shape):
    """``while True: seen.append(q.get())``, blocked in ``get()`` when cancelled.

    The test puts *warmup* items, and two more right after the cancel: the consumer stops
    at its first back-edge after the cancel, so it takes at most the first of the two.
    """

    name = "queue-consumer"

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.q: queue.Queue[int] = queue.Queue()

    def trial(self, warmup: int) -> tuple[Task, Check]:
        q: queue.Queue[int] = queue.Queue()
        self.q = q
        seen: list[int] = []
        halt = self.halt
        for item in range(warmup):
            q.put(item)

        def task(started: threading.Event) -> None:
            while True:
                seen.append(q.get())
                if len(seen) == warmup:
                    started.set()
                elif halt[0]:
                    return

        def check() -> Optional[str]:
            if q.mutex.locked():
                return "the queue's mutex is still held"
            after = len(seen) - warmup
            if after not in (0, 1) or len(seen) + q.qsize() != warmup + 2:
                return f"{after} items taken after the cancel, {q.qsize()} left of 2"
            return None

        return task, check

    def after_cancel(self) -> None:
        self.q.put(-1)
        self.q.put(-2)

    def unstick(self) -> None:
        self.q.put(-3)


class ConditionLoop(Shape):
    """``while True: with cond: cond.notify_all()``: the loop lives in ``threading``."""

    name = "condition"

    def trial(self, warmup: int) -> tuple[Task, Check]:
        cond = threading.Condition()
        halt = self.halt

        def task(started: threading.Event) -> None:
            n = 0
            while True:
                with cond:
                    cond.notify_all()
                n += 1
                if n == warmup:
                    started.set()
                elif halt[0]:
                    return

        return task, lock_check(cond, "the condition's lock")


class SemaphoreLoop(Shape):
    """``while True: with sem: n += 1``: the loop lives in ``threading.Semaphore``."""

    name = "semaphore"

    def trial(self, warmup: int) -> tuple[Task, Check]:
        sem = threading.Semaphore(1)
        halt = self.halt

        def task(started: threading.Event) -> None:
            n = 0
            while True:
                with sem:
                    n += 1
                if n == warmup:
                    started.set()
                elif halt[0]:
                    return

        def check() -> Optional[str]:
            value: int = sem._value
            return None if value == 1 else f"the semaphore's count is {value}, not 1"

        return task, check


class RLockLoop(Shape):
    """``while True: with rlock: n += 1``; the test's thread must be able to take it."""

    name = "rlock"

    def trial(self, warmup: int) -> tuple[Task, Check]:
        rlock = threading.RLock()
        halt = self.halt

        def task(started: threading.Event) -> None:
            n = 0
            while True:
                with rlock:
                    n += 1
                if n == warmup:
                    started.set()
                elif halt[0]:
                    return

        return task, lock_check(rlock, "the RLock")


class LoggingLoop(Shape):
    """``while True: log.info(...)`` to a ``FileHandler``: the loop lives in ``logging``.

    One logger and handler for the campaign; the test empties the file before each trial
    (the handler appends), and checks that the handler's lock is free and that the file
    holds whole lines, numbered from 0 without a gap.
    """

    name = "logging"

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.path = folder / "log.txt"
        self.handler = logging.FileHandler(self.path, mode="a", encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("%(message)s"))
        self.log = logging.getLogger(f"force-campaigns.{id(self)}")
        self.log.propagate = False  # not through pytest's capturing handlers
        self.log.setLevel(logging.INFO)
        self.log.addHandler(self.handler)

    def trial(self, warmup: int) -> tuple[Task, Check]:
        self.path.write_text("", encoding="utf-8")
        log, halt = self.log, self.halt
        handler_lock = lock_check(self.handler.lock, "the handler's lock")
        path = self.path

        def task(started: threading.Event) -> None:
            n = 0
            while True:
                log.info("%d", n)
                n += 1
                if n == warmup:
                    started.set()
                elif halt[0]:
                    return

        def check() -> Optional[str]:
            return handler_lock() or numbered_lines(path)

        return task, check

    def close(self) -> None:
        self.log.removeHandler(self.handler)
        self.handler.close()


def numbered_lines(path: Path) -> Optional[str]:
    """Why *path* does not hold whole lines ``0``, ``1``, ... in order, or None."""
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    if lines[-1]:
        return f"the last line is torn: {lines[-1]!r}"
    expected = [str(n) for n in range(len(lines) - 1)]
    if lines[:-1] != expected:
        bad = next(n for n, (a, b) in enumerate(zip(lines, expected)) if a != b)
        return f"line {bad} is {lines[bad]!r}, not {expected[bad]!r}"
    return None


class OpenLoop(Shape):
    """``while True: with open(path, "a") as fh: fh.write(...)``.

    The last file object the task opened must be closed, and the file must hold whole
    lines in order. (A file object left open would also be finalized with a
    ``ResourceWarning``, an error in this suite.)
    """

    name = "open"

    def trial(self, warmup: int) -> tuple[Task, Check]:
        path = self.folder / "open.txt"
        path.write_text("", encoding="utf-8")
        last: list[Optional[TextIO]] = [None]
        halt = self.halt

        def task(started: threading.Event) -> None:
            n = 0
            while True:
                with open(path, "a", encoding="utf-8") as fh:
                    last[0] = fh
                    fh.write(f"{n}\n")
                n += 1
                if n == warmup:
                    started.set()
                elif halt[0]:
                    return

        def check() -> Optional[str]:
            fh = last[0]
            if fh is not None and not fh.closed:
                return "the last file object opened is still open"
            return numbered_lines(path)

        return task, check


class ShieldLoop(Shape):
    """``while True: with shield(), lock: n += 1``: refused inside, stopped outside."""

    name = "shield"
    #: Or the deferred cancel, delivered by the shield's exit (``cancelpool.shield``).
    ends = (TaskInterrupted, TaskCancelled)

    def trial(self, warmup: int) -> tuple[Task, Check]:
        lock = threading.Lock()
        halt = self.halt

        def task(started: threading.Event) -> None:
            n = 0
            while True:
                with shield(), lock:
                    n += 1
                if n == warmup:
                    started.set()
                elif halt[0]:
                    return

        return task, lock_check(lock)


SHAPES: dict[str, type[Shape]] = {
    cls.name: cls
    for cls in (
        UserContextManager,
        UserContextManagerWithLock,
        UserContextManagerWithLoopInExit,
        TryFinallyInline,
        TryFinallyCallee,
        NestedWith,
        GeneratorClose,
        QueueLoop,
        QueueConsumer,
        ConditionLoop,
        SemaphoreLoop,
        RLockLoop,
        LoggingLoop,
        OpenLoop,
    )
}


# ------------------------------------------------------------------- the campaigns


@pytest.fixture
def force_pool() -> Iterator[CancellableThreadPoolExecutor]:
    """The one executor a campaign's trials share: one worker, forced at once."""
    sys.setswitchinterval(SWITCH_INTERVAL)  # conftest puts it back
    ex = CancellableThreadPoolExecutor(
        max_workers=1, force=True, grace=0.0, abandon_after=ABANDON_AFTER
    )
    yield ex
    ex.shutdown(wait=True, cancel_futures=True, timeout=WAIT)


def run_campaign(shape: Shape, pool: CancellableThreadPoolExecutor, tally: Tally) -> None:
    rng = random.Random(shape.name)
    while tally.more():
        if not forced_trial(shape, pool, rng.randrange(1, MAX_WARMUP + 1), tally):
            return  # a task would not stop: reported; the pool is not worth more trials


def forced_trial(
    shape: Shape, pool: CancellableThreadPoolExecutor, warmup: int, tally: Tally
) -> bool:
    """One forced cancel of a fresh task of *shape*; False if it would not stop."""
    task, check = shape.trial(warmup)
    started = threading.Event()
    landing = Landing()
    abandoned = pool.statistics().abandoned_workers
    future = pool.submit(landing.run, task, started)
    assert started.wait(WAIT), f"{shape.name}: the task did not start ({future!r})"
    begin = time.perf_counter()
    future.cancel()
    shape.after_cancel()
    stopped = future.wait_stopped(WAIT)
    tally.latencies.append(time.perf_counter() - begin)
    tally.trials += 1
    if not stopped or pool.statistics().abandoned_workers != abandoned:
        tally.not_stopped += 1
        tally.fail(stuck_report(future, warmup, stopped))
        shape.halt[0] = True  # let the thread go, and stop the campaign
        shape.unstick()
        future.wait_stopped(WAIT)
        return False
    why = check() or landing.unexpected(shape.ends)
    if why is None and future.task_state is not TaskState.STOPPED:
        why = f"the future's task state is {future.task_state}"
    if why is not None:
        tally.broken += 1
        tally.fail(
            f"broken after {warmup} warm-up iterations: {why}\n"
            f"last refusal: {future._refusal!r}\n{landing.where()}"
        )
    landing.exc = None  # the traceback's frames refer to the landing: break the cycle
    return True


def stuck_report(future: CancellableFuture[Any], warmup: int, stopped: bool) -> str:
    """What a task that would not stop was doing, for the report."""
    what = "abandoned, then stopped" if stopped else f"not stopped {WAIT} s after the cancel"
    tally = future._tally
    frame = sys._current_frames().get(tally.tid) if tally is not None else None
    stack = "".join(traceback.format_stack(frame)[-6:]) if frame is not None else "(gone)\n"
    return (
        f"{what}, after {warmup} warm-up iterations; {future!r}\n"
        f"last refusal: {future._refusal!r}\nits thread's stack:\n{stack}"
    )


def run_and_log(shape: Shape, pool: CancellableThreadPoolExecutor, base: int) -> Tally:
    tally = Tally(shape.name, trials(base))
    try:
        run_campaign(shape, pool, tally)
    finally:
        shape.close()
        tally.log()
    return tally


@pytest.mark.parametrize("name", list(SHAPES))
def test_forced_cancel_keeps_the_shape_intact(
    name: str, force_pool: CancellableThreadPoolExecutor, tmp_path: Path
) -> None:
    tally = run_and_log(SHAPES[name](tmp_path), force_pool, SHAPE_TRIALS)
    assert tally.broken == 0 and tally.not_stopped == 0, tally.report()
    assert tally.trials == tally.asked or tally.capped, tally.report()
    assert force_pool.statistics().abandoned_workers == 0


def test_lock_inside_shield_is_never_left_held(
    force_pool: CancellableThreadPoolExecutor, tmp_path: Path
) -> None:
    tally = run_and_log(ShieldLoop(tmp_path), force_pool, SHAPE_TRIALS)
    assert tally.broken == 0 and tally.not_stopped == 0, tally.report()
    assert tally.trials == tally.asked or tally.capped, tally.report()


# ----------------------------------------------------------------------- the control


def naive_interrupt(thread: threading.Thread) -> None:
    """The recipe cancelpool replaced: ask CPython to raise in *thread*, from outside.

    ``PyThreadState_SetAsyncExc`` makes the target raise at its next check point,
    wherever that is: in ``threading``, in an ``__exit__``, in a ``finally``.
    """
    send = ctypes.pythonapi.PyThreadState_SetAsyncExc
    send.argtypes = (ctypes.c_ulong, ctypes.py_object)
    send.restype = ctypes.c_int
    assert send(thread.ident, TaskInterrupted) == 1


#: Shapes the naive recipe breaks often on every version (issue 10's measurements).
CONTROL_SHAPES = ("cm-lock", "semaphore", "condition")


@pytest.mark.skipif(platform.python_implementation() != "CPython", reason="CPython's C API")
@pytest.mark.parametrize("name", CONTROL_SHAPES)
def test_control_naive_injection_does_break_them(name: str, tmp_path: Path) -> None:
    """The same trials, interrupted by the naive recipe: the checks must see a break."""
    shape = SHAPES[name](tmp_path)
    rng = random.Random(name)
    tally = Tally(f"control-{name}", trials(100))
    try:
        while tally.more() and tally.broken < 3:
            task, check = shape.trial(rng.randrange(1, MAX_WARMUP + 1))
            started = threading.Event()
            landing = Landing()
            thread = threading.Thread(target=landing.absorb, args=(task, started))
            thread.start()
            assert started.wait(WAIT)
            naive_interrupt(thread)
            thread.join(WAIT)
            if thread.is_alive():  # the exception was swallowed: not what we count
                shape.halt[0] = True
                thread.join(WAIT)
                shape.halt[0] = False
            assert not thread.is_alive()
            tally.trials += 1
            tally.broken += (check() or landing.unexpected(shape.ends)) is not None
            landing.exc = None
    finally:
        tally.log()
    assert tally.broken >= 1, "the naive recipe never broke the shape: the check is blind"


# ---------------------------------------------------- interrupts and the end of tasks


def test_interrupt_reaches_only_its_own_task() -> None:
    """One worker, a stream of short tasks, random forced cancels racing their ends."""
    rng = random.Random(7)
    ex = CancellableThreadPoolExecutor(max_workers=1, force=True, grace=0.0)
    interrupted_in: list[int] = []
    futures: list[CancellableFuture[int]] = []
    tally = Tally("only-its-own-task", trials(1000))

    def task(task_id: int, spins: int) -> int:
        try:
            for _ in range(spins):
                pass
            return task_id
        except TaskInterrupted:
            interrupted_in.append(task_id)
            raise

    try:
        while tally.more():
            i = tally.trials
            # Mostly short tasks, some long enough to be interrupted mid-way.
            long = rng.random() < 0.1
            spins = rng.randrange(10**5, 10**6) if long else rng.randrange(0, 3000)
            futures.append(ex.submit(task, i, spins))
            tally.trials += 1
            if rng.random() < 0.5:
                # Cancel one of the recent tasks (pending, running or just finished) at
                # a random moment.
                work(rng.randrange(0, 400))
                rng.choice(futures[-8:]).cancel()
            if i % 8 == 7 and not futures[-8].wait_stopped(WAIT):
                # Keep the queue short, so that cancels often find their task running.
                tally.not_stopped += 1
        assert ex.shutdown(timeout=WAIT) == ()
        for task_id, future in enumerate(futures):
            if not future.done():
                tally.not_stopped += 1
            elif future.cancelled():
                continue
            elif future.result(0) != task_id or task_id in interrupted_in:
                tally.broken += 1
                tally.fail(f"task {task_id} was interrupted but not cancelled")
    finally:
        tally.log()
    assert tally.broken == 0 and tally.not_stopped == 0, tally.report()
    stats = ex.statistics()
    assert stats.completed + stats.cancelled == stats.submitted == len(futures)
    assert stats.abandoned_workers == 0
    assert stats.interrupts >= 1, "the campaign never interrupted anything"


def test_worker_survives_interrupts_racing_the_end_of_tasks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Forced cancels right after submit: they race the start and the end of short tasks."""
    rng = random.Random(3)
    ex = CancellableThreadPoolExecutor(max_workers=2, force=True, grace=0.0)
    futures: list[CancellableFuture[None]] = []
    tally = Tally("racing-the-end", trials(2000))
    try:
        with caplog.at_level(logging.CRITICAL, logger="concurrent.futures"):
            while tally.more():
                future = ex.submit(work, rng.randrange(0, 2000))
                futures.append(future)
                tally.trials += 1
                future.cancel()
            assert ex.shutdown(timeout=WAIT) == ()
        for future in futures:
            if not future.done():
                tally.not_stopped += 1
            elif future.task_state not in (
                TaskState.FINISHED,
                TaskState.CANCELLED,
                TaskState.STOPPED,
            ) or (future.cancelled() and future._result is not None):
                tally.broken += 1
                tally.fail(f"{future!r} ended as {future.task_state}")
    finally:
        tally.log()
    assert "Exception in worker" not in caplog.text
    assert tally.broken == 0 and tally.not_stopped == 0, tally.report()
    stats = ex.statistics()
    assert stats.completed + stats.cancelled + stats.failed == stats.submitted
    assert stats.failed == 0
    assert stats.abandoned_workers == 0

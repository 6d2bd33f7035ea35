"""Bounded random campaigns for forced cancellation (marker ``stress``).

Each campaign repeats one race many times (trial counts times
``CANCELPOOL_STRESS_SCALE``; CI runs scale 1, the closing notes report larger runs) under
a time cap, and checks an invariant on every trial:

* the stdlib primitives a task was using are intact after it is interrupted (a queue's
  mutex, a condition's lock, a semaphore's count) — and, as a control, the same
  campaign with a naive injection does break them, so the check can fail;
* an interrupt only ever reaches the task it was meant for;
* a lock taken inside ``shield()`` is never left held;
* whatever the timing, the worker survives, every future ends, and no cancelled future
  has a result.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable

import pytest

import cancelpool
from cancelpool import CancellableThreadPoolExecutor, TaskInterrupted, TaskState, shield
from cancelpool._inject import _send_exc

from .conftest import STRESS_SCALE, WAIT

pytestmark = [
    pytest.mark.stress,
    pytest.mark.skipif(not cancelpool.FORCE_AVAILABLE, reason="needs injection"),
]

TIME_CAP = 30.0 * STRESS_SCALE
WORK = 20


def trials(base: int) -> int:
    return max(1, int(base * STRESS_SCALE))


Check = Callable[[], bool]


def user_work(spins: int) -> None:
    for _ in range(spins):
        pass


def queue_task() -> tuple[Callable[[threading.Event, int], None], Check]:
    q: queue.Queue[int] = queue.Queue()

    def task(started: threading.Event, warmup: int) -> None:
        n = 0
        while True:
            q.put(1)
            q.get()
            user_work(WORK)
            n += 1
            if n == warmup:
                started.set()

    def check() -> bool:
        return not q.mutex.locked() and q.qsize() in (0, 1)

    return task, check


def condition_task() -> tuple[Callable[[threading.Event, int], None], Check]:
    cond = threading.Condition()

    def task(started: threading.Event, warmup: int) -> None:
        n = 0
        while True:
            with cond:
                cond.notify_all()
            user_work(WORK)
            n += 1
            if n == warmup:
                started.set()

    def check() -> bool:
        acquired = cond.acquire(blocking=False)
        if acquired:
            cond.release()
        return acquired

    return task, check


def semaphore_task() -> tuple[Callable[[threading.Event, int], None], Check]:
    sem = threading.Semaphore(1)

    def task(started: threading.Event, warmup: int) -> None:
        n = 0
        while True:
            with sem:
                n += 1
            user_work(WORK)
            if n == warmup:
                started.set()

    def check() -> bool:
        value: int = sem._value
        return value == 1

    return task, check


def primitive_task(kind: str) -> tuple[Callable[[threading.Event, int], None], Check]:
    """A task hammering one primitive, and a check that the primitive is intact.

    Between two uses of the primitive the task does a little pure-Python work of its own
    (``WORK`` iterations), as real tasks do; the share of time spent inside the primitive
    decides only how long an interrupt waits for a safe point, not whether it is safe.
    """
    return {"queue": queue_task, "condition": condition_task, "semaphore": semaphore_task}[kind]()


@pytest.fixture
def force_pool() -> Iterator[CancellableThreadPoolExecutor]:
    ex = CancellableThreadPoolExecutor(max_workers=1, force=True, grace=0.0, abandon_after=5.0)
    yield ex
    ex.shutdown(wait=True, cancel_futures=True, timeout=WAIT)


@pytest.mark.parametrize("kind", ["queue", "condition", "semaphore"])
def test_interrupt_never_breaks_stdlib_primitives(
    kind: str, force_pool: CancellableThreadPoolExecutor
) -> None:
    rng = random.Random(kind)
    deadline = time.monotonic() + TIME_CAP
    done = broken = 0
    for _ in range(trials(300)):
        task, check = primitive_task(kind)
        started = threading.Event()
        future = force_pool.submit(task, started, rng.randrange(1, 200))
        assert started.wait(WAIT)
        future.cancel()  # force, grace 0: interrupted at the next safe point
        assert future.wait_stopped(WAIT), future
        assert future.task_state is TaskState.STOPPED
        broken += not check()
        done += 1
        if time.monotonic() > deadline:
            break
    assert broken == 0, f"{broken} of {done} trials left the {kind} broken"
    assert force_pool.statistics().abandoned_workers == 0


@pytest.mark.parametrize("kind", ["queue", "condition", "semaphore"])
def test_control_naive_injection_does_break_them(kind: str) -> None:
    """The same campaign, injecting without looking: it must find broken primitives."""
    assert _send_exc is not None
    rng = random.Random(kind)
    broken = 0
    for _ in range(trials(100)):
        task, check = primitive_task(kind)
        started = threading.Event()
        caught: list[BaseException] = []

        def runner(
            task: Any = task, started: threading.Event = started, out: list[Any] = caught
        ) -> None:
            try:
                task(started, rng.randrange(1, 200))
            except BaseException as exc:
                out.append(exc)

        thread = threading.Thread(target=runner)
        thread.start()
        assert started.wait(WAIT)
        _send_exc(thread.ident or 0, TaskInterrupted)
        thread.join(WAIT)
        assert not thread.is_alive()
        broken += not check()
        if broken >= 3:
            break
    assert broken >= 1, "the naive injection never broke the primitive: the check is blind"


def test_interrupt_reaches_only_its_own_task() -> None:
    """One worker, a stream of short tasks, random forced cancels racing their ends."""
    rng = random.Random(7)
    ex = CancellableThreadPoolExecutor(max_workers=1, force=True, grace=0.0)
    interrupted_in: list[int] = []
    futures: list[Any] = []
    deadline = time.monotonic() + TIME_CAP

    def work(task_id: int, spins: int) -> int:
        try:
            for _ in range(spins):
                pass
            return task_id
        except TaskInterrupted:
            interrupted_in.append(task_id)
            raise

    for i in range(trials(3000)):
        # Mostly short tasks, some long enough to be interrupted mid-way.
        spins = rng.randrange(0, 3000) if rng.random() < 0.9 else rng.randrange(10**6, 3 * 10**6)
        future = ex.submit(work, i, spins)
        futures.append(future)
        if rng.random() < 0.5:
            # Cancel one of the recent tasks (pending, running or just finished) at a
            # random moment.
            for _ in range(rng.randrange(0, 400)):
                pass
            rng.choice(futures[-8:]).cancel()
        if i % 8 == 7:
            # Keep the queue short, so that cancels often find their task running.
            futures[-8].wait_stopped(WAIT)
        if time.monotonic() > deadline:
            break
    assert ex.shutdown(timeout=WAIT) == ()
    by_id = dict(enumerate(futures))
    for task_id in interrupted_in:
        assert by_id[task_id].cancelled(), f"task {task_id} was interrupted but never cancelled"
    for task_id, future in by_id.items():
        assert future.done()
        if not future.cancelled():
            assert future.result(0) == task_id
            assert task_id not in interrupted_in
    stats = ex.statistics()
    assert stats.completed + stats.cancelled == stats.submitted == len(futures)
    assert stats.abandoned_workers == 0
    assert stats.interrupts >= 1, "the campaign never interrupted anything"


def test_lock_inside_shield_is_never_left_held() -> None:
    ex = CancellableThreadPoolExecutor(max_workers=1, force=True, grace=0.0)
    lock = threading.Lock()
    counter = [0]
    deadline = time.monotonic() + TIME_CAP
    rng = random.Random(11)
    for _ in range(trials(1000)):
        started = threading.Event()
        warmup = rng.randrange(1, 50)

        def task(started: threading.Event = started, warmup: int = warmup) -> None:
            n = 0
            while True:
                with shield(), lock:
                    counter[0] += 1
                n += 1
                if n == warmup:
                    started.set()

        future = ex.submit(task)
        assert started.wait(WAIT)
        future.cancel()
        assert future.wait_stopped(WAIT)
        assert not lock.locked()
        if time.monotonic() > deadline:
            break
    ex.shutdown(timeout=WAIT)
    assert ex.statistics().abandoned_workers == 0


def test_worker_survives_interrupts_racing_the_end_of_tasks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rng = random.Random(3)
    ex = CancellableThreadPoolExecutor(max_workers=2, force=True, grace=0.0)
    futures = []
    deadline = time.monotonic() + TIME_CAP
    with caplog.at_level(logging.CRITICAL, logger="concurrent.futures"):
        for i in range(trials(3000)):
            future = ex.submit(sum, range(rng.randrange(0, 2000)))
            futures.append((i, future))
            future.cancel()
            if time.monotonic() > deadline:
                break
        assert ex.shutdown(timeout=WAIT) == ()
    assert "Exception in worker" not in caplog.text
    for _, future in futures:
        assert future.done()
        assert future.task_state in (TaskState.FINISHED, TaskState.CANCELLED, TaskState.STOPPED)
        if future.cancelled():
            assert future._result is None
    stats = ex.statistics()
    assert stats.completed + stats.cancelled + stats.failed == stats.submitted
    assert stats.failed == 0

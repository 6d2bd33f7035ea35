"""The executor's watch over deadlines counted from a task's start (``_deadline``).

The watch is driven here directly, on the fake clock, with stand-ins for the workers and
futures: it reads only a worker's ``current_item.future`` and a future's
``_deadline_at``, and calls ``_expire()``. Each interleaving of a worker starting a task
with a check running is forced, not hoped for. ``test_deadlines`` covers the same through
real executors.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Optional

import pytest

from cancelpool._deadline import DeadlineWatch
from cancelpool._timer import ManualScheduler


class Future:
    """What the watch uses of a CancellableFuture."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._deadline_at = math.inf
        self.expired = 0

    def _expire(self) -> None:
        self.expired += 1


class Item:
    def __init__(self, future: Future) -> None:
        self.future = future


class Worker:
    """A worker whose task the test sets; ``on_read`` runs when a check reads it."""

    def __init__(self) -> None:
        self._item: Optional[Item] = None
        self.on_read: Optional[Any] = None

    @property
    def current_item(self) -> Optional[Item]:
        item = self._item
        if self.on_read is not None:
            on_read, self.on_read = self.on_read, None
            on_read()  # the worker moves on right after the check read its item
        return item


def make(workers: int) -> tuple[ManualScheduler, DeadlineWatch, list[Worker]]:
    scheduler = ManualScheduler()
    pool = [Worker() for _ in range(workers)]
    watch = DeadlineWatch(scheduler, set(pool))  # type: ignore[arg-type]
    return scheduler, watch, pool


def start(watch: DeadlineWatch, worker: Worker, name: str, timeout: float) -> Future:
    """What a worker does: publish the item, then start the deadline."""
    future = Future(name)
    worker._item = Item(future)
    watch.start(future, timeout)  # type: ignore[arg-type]
    return future


def test_one_check_for_many_tasks_and_none_per_task() -> None:
    scheduler, watch, (worker,) = make(1)
    first = start(watch, worker, "first", 10.0)
    for i in range(100):  # each ends in time; the next starts a little later
        scheduler.advance(0.03125)  # exact in binary: the times below are exact too
        start(watch, worker, f"t{i}", 10.0)
    # One check, at the first deadline: the later ones are no earlier.
    assert scheduler.pending() == [1010.0]
    scheduler.advance(6.875)  # the clock is at 1010.0: the check runs
    assert first.expired == 0  # it ended in time: its worker no longer names it
    # The check found the running task and scheduled the next check for its deadline.
    assert scheduler.pending() == [1013.125]


def test_an_earlier_deadline_schedules_an_earlier_check() -> None:
    scheduler, watch, (slow_worker, quick_worker) = make(2)
    slow = start(watch, slow_worker, "slow", 60.0)
    quick = start(watch, quick_worker, "quick", 1.0)
    assert scheduler.pending() == [1001.0]  # the 60 s check was replaced
    scheduler.advance(1.0)
    assert (quick.expired, slow.expired) == (1, 0)
    assert scheduler.pending() == [1060.0]  # the slow task's deadline is still watched
    scheduler.advance(59.0)
    assert (quick.expired, slow.expired) == (1, 1)
    assert scheduler.pending() == []  # nothing left running with a deadline


def test_a_task_is_expired_once_however_long_it_keeps_running() -> None:
    scheduler, watch, (stuck_worker, other_worker) = make(2)
    stuck = start(watch, stuck_worker, "stuck", 1.0)
    scheduler.advance(1.0)
    assert stuck.expired == 1
    start(watch, other_worker, "other", 1.0)
    scheduler.advance(1.0)  # this check sees the stuck task again
    assert stuck.expired == 1


def test_a_task_started_while_a_check_scans_is_watched() -> None:
    # The check reads the worker's item (none), then the worker starts a task before
    # the check has scheduled anything: the worker must schedule a check itself.
    scheduler, watch, (worker,) = make(1)
    start(watch, worker, "first", 1.0)
    worker._item = None  # the first task ended in time
    late: list[Future] = []
    worker.on_read = lambda: late.append(start(watch, worker, "late", 2.0))
    scheduler.advance(1.0)
    assert late and late[0].expired == 0
    assert scheduler.pending() == [1003.0]
    scheduler.advance(2.0)
    assert late[0].expired == 1


def test_a_task_whose_worker_read_the_old_check_time_is_seen_by_that_check() -> None:
    # The worker read ``armed_at`` (an earlier check) and scheduled nothing; that check
    # must find the task and schedule the next check for it.
    scheduler, watch, (first_worker, second_worker) = make(2)
    first = start(watch, first_worker, "first", 1.0)
    second = start(watch, second_worker, "second", 5.0)
    assert watch.armed_at == 1001.0 and scheduler.pending() == [1001.0]
    first_worker._item = None
    scheduler.advance(1.0)
    assert (first.expired, second.expired) == (0, 0)
    assert scheduler.pending() == [1005.0]
    scheduler.advance(4.0)
    assert second.expired == 1


def test_a_zero_deadline_expires_at_start_with_nothing_scheduled() -> None:
    # timeout=0 has passed when the task starts: expired there, by the worker, before the
    # task's code runs (not left to a race with the timer thread; issue 11).
    scheduler, watch, (worker,) = make(1)
    future = start(watch, worker, "zero", 0.0)
    assert future.expired == 1
    assert scheduler.pending() == []
    assert watch.armed_at == math.inf


def test_a_deadline_already_passed_expires_at_the_next_check() -> None:
    scheduler, watch, (worker,) = make(1)
    future = start(watch, worker, "tiny", 1e-9)
    scheduler.advance(1.0)
    assert future.expired == 1


def test_a_later_check_never_replaces_an_earlier_one() -> None:
    # Two workers read ``armed_at`` (none scheduled) at once; the one with the earlier
    # deadline schedules first. The other, arming after it, must keep the earlier check.
    scheduler, watch, (quick_worker, slow_worker) = make(2)
    quick = start(watch, quick_worker, "quick", 1.0)
    slow = Future("slow")
    slow_worker._item = Item(slow)
    slow._deadline_at = 1060.0
    watch._arm(1060.0)  # what the slow worker does after reading armed_at == inf
    assert scheduler.pending() == [1001.0]
    scheduler.advance(1.0)
    assert (quick.expired, slow.expired) == (1, 0)
    assert scheduler.pending() == [1060.0]


def test_a_failing_expiry_leaves_the_other_deadlines_watched(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scheduler, watch, (bad_worker, good_worker, later_worker) = make(3)

    class Failing(Future):
        def _expire(self) -> None:
            super()._expire()
            raise RuntimeError("a callback went wrong")

    bad = Failing("bad")
    bad_worker._item = Item(bad)
    watch.start(bad, 1.0)  # type: ignore[arg-type]
    good = start(watch, good_worker, "good", 1.0)
    later = start(watch, later_worker, "later", 2.0)
    with caplog.at_level(logging.ERROR, logger="cancelpool"):
        scheduler.advance(1.0)
    assert (bad.expired, good.expired, later.expired) == (1, 1, 0)
    assert "failing" in caplog.text and "a callback went wrong" in caplog.text
    scheduler.advance(1.0)
    assert later.expired == 1


def test_check_now_withdraws_the_check_when_nothing_runs() -> None:
    # What shutdown() does once its workers have exited: nothing stays on the timer, so
    # its thread can exit when idle.
    scheduler, watch, (worker,) = make(1)
    start(watch, worker, "ended", 60.0)
    worker._item = None  # the task ended in time
    assert scheduler.pending() == [1060.0]
    watch.check_now()
    assert scheduler.pending() == []
    assert watch.armed_at == math.inf


def test_check_now_keeps_watching_tasks_still_running() -> None:
    scheduler, watch, (stuck_worker, due_worker) = make(2)
    stuck = start(watch, stuck_worker, "stuck", 60.0)
    due = start(watch, due_worker, "due", 0.0)
    watch.check_now()
    assert (due.expired, stuck.expired) == (1, 0)
    assert scheduler.pending() == [1060.0]  # one check, for the task still running
    scheduler.advance(60.0)
    assert stuck.expired == 1


def test_a_task_started_while_check_now_scans_is_watched() -> None:
    # check_now() withdraws the scheduled check before it reads the workers, like a
    # scheduled check: a worker that starts a task meanwhile schedules its own.
    scheduler, watch, (worker,) = make(1)
    start(watch, worker, "first", 60.0)
    worker._item = None
    late: list[Future] = []
    worker.on_read = lambda: late.append(start(watch, worker, "late", 2.0))
    watch.check_now()
    assert scheduler.pending() == [1002.0]
    scheduler.advance(2.0)
    assert late[0].expired == 1

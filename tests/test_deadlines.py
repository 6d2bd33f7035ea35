"""Per-task deadlines: ``with_options(timeout=...)`` and ``task_timeout=``.

Every test runs on the fake clock (``manual_clock``): a deadline passes exactly when the
test advances the clock, in the test's thread, so no test sleeps to wait for one.
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import pytest

import cancelpool
from cancelpool import (
    CancellableThreadPoolExecutor,
    CancelSource,
    DeadlineExceeded,
    StillRunningWarning,
    TaskCancelled,
    TaskState,
    current_token,
)
from cancelpool._timer import ManualScheduler, Scheduler

from .conftest import WAIT, run_forking_program


@pytest.fixture
def pool(manual_clock: ManualScheduler) -> Iterator[CancellableThreadPoolExecutor]:
    ex = CancellableThreadPoolExecutor(max_workers=2)
    yield ex
    ex.shutdown(wait=True, cancel_futures=True, timeout=WAIT)


class Waiter:
    """A task that waits on its token and records what it saw."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.seen: list[TaskCancelled] = []
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        self.started.set()
        try:
            current_token().wait(WAIT)
            current_token().raise_if_cancelled()
        except TaskCancelled as exc:
            self.seen.append(exc)
            raise
        return "finished"


class TestDeadlineFromStart:
    def test_future_fails_with_deadline_exceeded_and_task_stops(
        self, pool: CancellableThreadPoolExecutor, manual_clock: ManualScheduler
    ) -> None:
        task = Waiter()
        done: list[Any] = []
        future = pool.with_options(timeout=2.0).submit(task)
        future.add_done_callback(done.append)
        assert task.started.wait(WAIT)
        manual_clock.advance(1.999)
        assert not future.done()
        manual_clock.advance(0.001)
        # The future is done at once, failed, not cancelled.
        assert future.done() and not future.cancelled()
        exc = future.exception(0)
        assert isinstance(exc, DeadlineExceeded)
        assert isinstance(exc, futures.TimeoutError)
        assert (exc.timeout, exc.counted_from) == (2.0, "start")
        with pytest.raises(DeadlineExceeded, match="within 2 s of when it started"):
            future.result(0)
        assert done == [future]
        # The task was asked to stop with reason "deadline" and did.
        assert future.token.reason == "deadline"
        assert future.wait_stopped(WAIT)
        assert future.task_state is TaskState.STOPPED
        assert [e.reason for e in task.seen] == ["deadline"]
        assert "deadline passed" in repr(future)
        stats = pool.statistics()
        assert (stats.timed_out, stats.cancelled, stats.failed, stats.stopping) == (1, 0, 0, 0)

    def test_wait_and_as_completed_see_the_failure(
        self, pool: CancellableThreadPoolExecutor, manual_clock: ManualScheduler
    ) -> None:
        task = Waiter()
        future = pool.with_options(timeout=1.0).submit(task)
        assert task.started.wait(WAIT)
        waiter = threading.Thread(target=lambda: seen.extend(futures.as_completed([future])))
        seen: list[Any] = []
        waiter.start()
        manual_clock.advance(1.0)
        waiter.join(WAIT)
        assert seen == [future]
        done, not_done = futures.wait([future], timeout=0)
        assert done == {future} and not not_done

    def test_task_that_ends_in_time_keeps_its_result_and_nothing_stays_scheduled(
        self, pool: CancellableThreadPoolExecutor, manual_clock: ManualScheduler
    ) -> None:
        future = pool.with_options(timeout=5.0).submit(pow, 2, 8)
        assert future.result(WAIT) == 256
        assert future.wait_stopped(WAIT)
        # Nothing was withdrawn: the executor's one check stays due at the deadline...
        assert manual_clock.pending() == [manual_clock.now + 5.0]
        manual_clock.advance(10.0)
        assert future.result(0) == 256 and future.token.reason is None
        # ... where it finds no task running with a deadline, and schedules no other.
        assert manual_clock.pending() == []

    def test_time_spent_queued_does_not_count(self, manual_clock: ManualScheduler) -> None:
        ex = CancellableThreadPoolExecutor(max_workers=1)
        try:
            blocker, task = Waiter(), Waiter()
            first = ex.submit(blocker)
            assert blocker.started.wait(WAIT)
            second = ex.with_options(timeout=1.0).submit(task)
            manual_clock.advance(5.0)  # far past 1 s, but the task has not started
            assert not second.done() and manual_clock.pending() == []
            first.cancel()
            assert task.started.wait(WAIT)
            # The worker armed the deadline when it started the task: 1 s from now.
            assert manual_clock.now + 1.0 in manual_clock.pending()
            manual_clock.advance(1.0)
            assert isinstance(second.exception(0), DeadlineExceeded)
        finally:
            ex.shutdown(cancel_futures=True, timeout=WAIT)

    def test_cancel_before_the_deadline_wins(
        self, pool: CancellableThreadPoolExecutor, manual_clock: ManualScheduler
    ) -> None:
        task = Waiter()
        future = pool.with_options(timeout=1.0).submit(task)
        assert task.started.wait(WAIT)
        assert future.cancel(reason="user")
        manual_clock.advance(1.0)
        assert future.cancelled()
        with pytest.raises(futures.CancelledError):
            future.result(0)
        assert future.token.reason == "user"
        assert future.wait_stopped(WAIT)
        assert pool.statistics().timed_out == 0

    def test_cancel_after_the_deadline_returns_false(
        self, pool: CancellableThreadPoolExecutor, manual_clock: ManualScheduler
    ) -> None:
        task = Waiter()
        future = pool.with_options(timeout=1.0).submit(task)
        assert task.started.wait(WAIT)
        manual_clock.advance(1.0)
        assert future.cancel() is False  # it failed; it is not cancelled
        assert future.token.reason == "deadline"
        assert not future.cancelled()
        assert future.wait_stopped(WAIT)

    def test_zero_timeout_expires_at_once(
        self, pool: CancellableThreadPoolExecutor, manual_clock: ManualScheduler
    ) -> None:
        task = Waiter()
        future = pool.with_options(timeout=0).submit(task)
        assert task.started.wait(WAIT)
        manual_clock.run_due()
        assert isinstance(future.exception(0), DeadlineExceeded)
        assert future.wait_stopped(WAIT)


class TestDeadlineFromSubmit:
    def test_a_task_still_queued_never_runs(self, manual_clock: ManualScheduler) -> None:
        ex = CancellableThreadPoolExecutor(max_workers=1)
        try:
            blocker, task = Waiter(), Waiter()
            first = ex.submit(blocker)
            assert blocker.started.wait(WAIT)
            late = ex.with_options(timeout=1.0, timeout_from="submit").submit(task)
            manual_clock.advance(1.0)
            exc = late.exception(0)
            assert isinstance(exc, DeadlineExceeded) and exc.counted_from == "submit"
            assert "of when it was submitted" in str(exc)
            assert late.task_state is TaskState.CANCELLED  # its code never ran
            assert late.wait_stopped(0)
            first.cancel()
            assert first.wait_stopped(WAIT)
            # The worker skips the expired task and takes the next one.
            assert ex.submit(pow, 3, 2).result(WAIT) == 9
            assert task.calls == 0
            stats = ex.statistics()
            assert (stats.timed_out, stats.pending, stats.cancelled) == (1, 0, 1)
        finally:
            ex.shutdown(cancel_futures=True, timeout=WAIT)

    def test_shutdown_with_an_expired_task_still_queued(
        self, manual_clock: ManualScheduler
    ) -> None:
        ex = CancellableThreadPoolExecutor(max_workers=1)
        blocker = Waiter()
        first = ex.submit(blocker)
        assert blocker.started.wait(WAIT)
        late = ex.with_options(timeout=1.0, timeout_from="submit").submit(Waiter())
        manual_clock.advance(1.0)
        assert ex.shutdown(cancel_futures=True, timeout=WAIT) == ()
        assert isinstance(late.exception(0), DeadlineExceeded)  # not overwritten
        assert first.cancelled()


class TestEscalation:
    def test_deadline_without_force_warns_after_grace(
        self, pool: CancellableThreadPoolExecutor, manual_clock: ManualScheduler
    ) -> None:
        started, release = threading.Event(), threading.Event()

        def deaf() -> None:
            started.set()
            release.wait(WAIT)  # never looks at its token

        future = pool.with_options(timeout=1.0, grace=0.5).submit(deaf)
        assert started.wait(WAIT)
        manual_clock.advance(1.0)
        assert future.task_state is TaskState.STOPPING
        with pytest.warns(StillRunningWarning, match="reason 'deadline'"):
            manual_clock.advance(0.5)
        release.set()
        assert future.wait_stopped(WAIT)

    @pytest.mark.skipif(not cancelpool.FORCE_AVAILABLE, reason="needs injection")
    def test_forced_deadline_interrupts_a_task_that_never_checks(
        self, pool: CancellableThreadPoolExecutor, manual_clock: ManualScheduler
    ) -> None:
        started = threading.Event()
        caught: list[TaskCancelled] = []

        def spin() -> None:
            started.set()
            try:
                while True:
                    sum(range(20))
            except TaskCancelled as exc:
                caught.append(exc)
                raise

        future = pool.with_options(timeout=1.0, force=True, grace=0.25).submit(spin)
        assert started.wait(WAIT)
        manual_clock.advance(1.0)
        assert future.task_state is TaskState.STOPPING
        manual_clock.advance(0.25)
        assert future.wait_stopped(WAIT)
        assert [type(e).__name__ for e in caught] == ["TaskInterrupted"]
        assert caught[0].reason == "deadline"
        assert isinstance(future.exception(0), DeadlineExceeded)
        assert pool.statistics().interrupts == 1

    def test_view_force_and_grace_are_the_defaults_of_cancel(
        self, pool: CancellableThreadPoolExecutor, manual_clock: ManualScheduler
    ) -> None:
        task = Waiter()
        future = pool.with_options(force=True, grace=3.0).submit(task)
        assert task.started.wait(WAIT)
        future.cancel()
        ladder = future._ladder
        assert ladder is not None and ladder.force
        assert ladder.first_at == manual_clock.now + 3.0
        assert future.wait_stopped(WAIT)


class TestExecutorDefault:
    def test_task_timeout_applies_to_submit_and_map(self, manual_clock: ManualScheduler) -> None:
        ex = CancellableThreadPoolExecutor(max_workers=2, task_timeout=1.0)
        try:
            task = Waiter()
            future = ex.submit(task)
            assert task.started.wait(WAIT)
            manual_clock.advance(1.0)
            assert isinstance(future.exception(0), DeadlineExceeded)
            slow = Waiter()
            results = ex.map(lambda f: f(), [slow])
            assert slow.started.wait(WAIT)
            manual_clock.advance(1.0)
            with pytest.raises(DeadlineExceeded):
                next(results)
        finally:
            ex.shutdown(cancel_futures=True, timeout=WAIT)

    def test_a_view_can_turn_it_off(self, manual_clock: ManualScheduler) -> None:
        ex = CancellableThreadPoolExecutor(max_workers=1, task_timeout=1.0)
        try:
            task = Waiter()
            future = ex.with_options(timeout=None).submit(task)
            assert task.started.wait(WAIT)
            manual_clock.advance(100.0)
            assert not future.done()
            future.cancel()
        finally:
            ex.shutdown(cancel_futures=True, timeout=WAIT)

    def test_map_through_a_view_gives_each_item_its_deadline(
        self, pool: CancellableThreadPoolExecutor, manual_clock: ManualScheduler
    ) -> None:
        slow = Waiter()

        def work(item: int) -> int:
            if item == 1:
                slow()
            return item

        results = pool.with_options(timeout=1.0).map(work, [0, 1, 2])
        assert next(results) == 0
        assert slow.started.wait(WAIT)
        manual_clock.advance(1.0)
        with pytest.raises(DeadlineExceeded):
            next(results)


class TestOptionsAndView:
    def test_views_merge_and_report_their_options(self) -> None:
        ex = CancellableThreadPoolExecutor(max_workers=1, task_timeout=3.0)
        source = CancelSource()
        view = ex.with_options(force=True).with_options(grace=0.5, token=source.token)
        assert view.executor is ex
        assert view.options.timeout == 3.0 and view.options.force is True
        assert view.options.grace == 0.5 and view.options.token is source.token
        assert "force=True" in repr(view) and "grace=0.5" in repr(view)
        assert view.submit(pow, 2, 3).result(WAIT) == 8
        assert list(view.map(pow, [2, 3], [2, 2])) == [4, 9]
        ex.shutdown()
        with pytest.raises(RuntimeError, match="after shutdown"):
            view.submit(pow, 2, 3)

    @pytest.mark.parametrize(
        ("kwargs", "error", "message"),
        [
            ({"timeout": "1"}, TypeError, "timeout must be a number of seconds or None, got '1'"),
            ({"timeout": -1}, ValueError, "timeout must be >= 0 or None, got -1"),
            ({"timeout_from": "end"}, ValueError, "timeout_from must be 'start' or 'submit'"),
            ({"force": 1}, TypeError, "force must be True or False, got 1"),
            ({"grace": -0.5}, ValueError, "grace must be >= 0, got -0.5"),
            ({"token": object()}, TypeError, "token must be a cancelpool.CancelToken or None"),
            ({"inherit": "no"}, TypeError, "inherit must be True or False, got 'no'"),
        ],
    )
    def test_bad_options_are_named(
        self, kwargs: dict[str, Any], error: type[Exception], message: str
    ) -> None:
        ex = CancellableThreadPoolExecutor(max_workers=1)
        with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
            ex.with_options(**kwargs)
        ex.shutdown()

    def test_bad_executor_defaults_are_named(self) -> None:
        with pytest.raises(ValueError, match="task_timeout must be >= 0 or None, got -2"):
            CancellableThreadPoolExecutor(task_timeout=-2)
        with pytest.raises(TypeError, match="inherit_token must be True or False, got None"):
            CancellableThreadPoolExecutor(inherit_token=None)  # type: ignore[arg-type]

    def test_deadline_exceeded_pickles(self) -> None:
        exc = pickle.loads(pickle.dumps(DeadlineExceeded(1.5, "submit")))
        assert (exc.timeout, exc.counted_from) == (1.5, "submit")
        assert str(exc) == str(DeadlineExceeded(1.5, "submit"))


@pytest.mark.subprocess
def test_an_executor_used_in_a_forked_child_still_expires_deadlines() -> None:
    # The parent's check was scheduled on the parent's timer thread, which a forked
    # child does not have: the child's tasks must get checks of their own, also when
    # their deadlines come after the parent's check would have.
    import os

    if not hasattr(os, "fork"):
        pytest.skip("needs os.fork")
    code = """
        import os, signal, sys, threading, time, warnings
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads, 3.12+
        from cancelpool import CancellableThreadPoolExecutor, DeadlineExceeded, current_token
        def wait_on_token():
            current_token().wait(10)
        started = threading.Event()
        def hold():
            started.set()
            current_token().wait(30)
        ex = CancellableThreadPoolExecutor(max_workers=2)
        held = ex.with_options(timeout=1.0).submit(hold)  # the parent's check: in 1 s
        started.wait(30)
        pid = os.fork()
        if pid == 0:
            # Due after the parent's check: only a check in the child can expire it.
            future = ex.with_options(timeout=1.2).submit(wait_on_token)
            exc = future.exception(10)
            os._exit(0 if isinstance(exc, DeadlineExceeded) else 3)
    """
    after = """
        held.cancel()
        ex.shutdown(timeout=10)
    """
    proc = run_forking_program(code, after)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "0", (proc.stdout, proc.stderr)


class TestTimerStaysIdle:
    def test_deadlines_of_tasks_that_finish_in_time_do_not_wake_the_timer(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from cancelpool import _timer

        scheduler = Scheduler()  # a real timer thread, on the real clock
        monkeypatch.setattr(_timer, "_scheduler", scheduler)
        ex = CancellableThreadPoolExecutor(max_workers=2)
        try:
            view = ex.with_options(timeout=60.0)
            for _ in range(3):
                batch = [view.submit(pow, 2, i) for i in range(1000)]
                assert [f.result(WAIT) for f in batch] == [2**i for i in range(1000)]
            for f in batch:
                assert f.wait_stopped(WAIT)
            # At most the wake-up that re-arms the thread's wait for the executor's one
            # check; none for the 3,000 tasks that ended in time.
            assert scheduler.wakeups <= 1
            # One check is scheduled, not an entry per task.
            assert len(scheduler._heap) + len(scheduler._incoming) <= 1
        finally:
            ex.shutdown(cancel_futures=True, timeout=WAIT)
            with scheduler._cond:
                for _, _, handle in scheduler._heap:
                    handle.cancel()

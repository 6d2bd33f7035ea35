"""Token composition: ``CancelSource``, groups of tasks, linked tokens, child tasks."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from concurrent.futures import CancelledError
from typing import Any

import pytest

from cancelpool import (
    CancellableFuture,
    CancellableThreadPoolExecutor,
    CancelSource,
    DeadlineExceeded,
    TaskCancelled,
    TaskState,
    current_token,
)
from cancelpool._timer import ManualScheduler

from .conftest import WAIT, wait_for


@pytest.fixture
def pool() -> Iterator[CancellableThreadPoolExecutor]:
    ex = CancellableThreadPoolExecutor(max_workers=2)
    yield ex
    ex.shutdown(wait=True, cancel_futures=True, timeout=WAIT)


def wait_on_token(started: threading.Barrier | None = None) -> str:
    if started is not None:
        started.wait()
    token = current_token()
    token.wait(WAIT)
    token.raise_if_cancelled()
    return "not cancelled"


class TestCancelSource:
    def test_cancel_once_first_reason_wins(self) -> None:
        fresh = CancelSource()
        assert not fresh.cancelled
        assert fresh.reason is None
        assert "active" in repr(fresh)
        source = CancelSource()
        assert source.cancel("first") is True
        assert source.cancel("second") is False
        assert source.cancelled
        assert source.reason == "first"
        assert source.token.reason == "first"
        assert "reason='first'" in repr(source)
        with pytest.raises(TaskCancelled, match="first"):
            source.token.raise_if_cancelled()

    def test_bad_arguments_are_named(self) -> None:
        with pytest.raises(TypeError, match="parents must be CancelTokens, got 'x'"):
            CancelSource("x")  # type: ignore[arg-type]
        source = CancelSource()
        with pytest.raises(ValueError, match="reason must be a non-empty str"):
            source.cancel("")
        with pytest.raises(ValueError, match="seconds must be >= 0, got -1"):
            source.cancel_after(-1)
        with pytest.raises(TypeError, match="reason must be a str, got 3"):
            source.cancel_after(1, reason=3)  # type: ignore[arg-type]

    def test_cancel_after_on_the_fake_clock(self, manual_clock: ManualScheduler) -> None:
        source = CancelSource()
        source.cancel_after(5.0)
        source.cancel_after(2.0, reason="too slow")  # replaces the first
        assert manual_clock.pending() == [manual_clock.now + 2.0]
        manual_clock.advance(1.999)
        assert not source.cancelled
        manual_clock.advance(0.001)
        assert source.reason == "too slow"
        assert manual_clock.pending() == []

    def test_cancel_after_is_a_cancel_not_a_deadline(self, manual_clock: ManualScheduler) -> None:
        # Its default reason is "cancel_after": "deadline" goes with DeadlineExceeded, a
        # task's own deadline (issue 12: one reason, one exception).
        source = CancelSource()
        source.cancel_after(1.0)
        started = threading.Event()
        with CancellableThreadPoolExecutor(max_workers=1) as ex:

            def task() -> bool:
                started.set()
                return current_token().wait(WAIT)

            future = ex.with_options(token=source.token).submit(task)
            assert started.wait(WAIT)
            manual_clock.advance(1.0)
            assert source.reason == "cancel_after"
            assert future.cancelled()
            with pytest.raises(CancelledError):
                future.result(0)
            assert future.token.reason == "cancel_after"
            assert future.wait_stopped(WAIT)

    def test_close_drops_the_timer_and_the_links(self, manual_clock: ManualScheduler) -> None:
        parent = CancelSource()
        child = CancelSource(parent.token)
        child.cancel_after(1.0)
        child.close()
        manual_clock.advance(2.0)
        parent.cancel()
        assert not child.cancelled
        assert not parent.token._callbacks

    def test_linked_sources_take_the_first_parents_reason(self) -> None:
        a, b = CancelSource(), CancelSource()
        child = CancelSource(a.token, b.token)
        grandchild = CancelSource(child.token)
        b.cancel("b went first")
        a.cancel("a went second")
        assert child.reason == "b went first"
        assert grandchild.reason == "b went first"

    def test_a_parent_already_cancelled_cancels_at_once(self) -> None:
        parent = CancelSource()
        parent.cancel("early")
        assert CancelSource(parent.token).reason == "early"

    def test_a_task_token_can_be_a_parent(self, pool: CancellableThreadPoolExecutor) -> None:
        scopes: list[CancelSource] = []
        started = threading.Event()

        def task() -> None:
            scope = CancelSource(current_token())  # a sub-scope of this task
            scopes.append(scope)
            started.set()
            scope.token.wait(WAIT)

        future = pool.submit(task)
        assert started.wait(WAIT)
        future.cancel(reason="stop")
        assert future.wait_stopped(WAIT)
        assert scopes[0].reason == "stop"


class TestGroups:
    def test_one_cancel_stops_running_and_queued_tasks(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        group = CancelSource()
        started = threading.Barrier(3, timeout=WAIT)
        calls: list[int] = []

        def work(i: int) -> str:
            calls.append(i)
            return wait_on_token(started if i < 2 else None)

        view = pool.with_options(token=group.token)
        futures = [view.submit(work, i) for i in range(6)]
        started.wait()  # 0 and 1 run; 2..5 are queued
        assert group.cancel("user pressed stop")
        assert all(f.cancelled() for f in futures)
        for f in futures:
            assert f.wait_stopped(WAIT)
            assert f.token.reason == "user pressed stop"
        # The queued ones were cancelled before the running ones freed their workers.
        assert sorted(calls) == [0, 1]
        assert [f.task_state for f in futures] == [TaskState.STOPPED] * 2 + [
            TaskState.CANCELLED
        ] * 4
        # Each link is dropped right after its task's outcome, out of the future's lock.
        wait_for(lambda: not group.token._callbacks, "every link to be dropped")

    def test_submitting_with_a_cancelled_group_token(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        group = CancelSource()
        group.cancel("closed")
        calls: list[int] = []
        future = pool.with_options(token=group.token).submit(calls.append, 1)
        assert future.cancelled() and future.token.reason == "closed"
        pool.submit(pow, 1, 1).result(WAIT)  # the worker has passed the item by now
        assert calls == []

    def test_links_are_dropped_when_tasks_end(self, pool: CancellableThreadPoolExecutor) -> None:
        group = CancelSource()
        view = pool.with_options(token=group.token)
        for f in [view.submit(pow, 2, i) for i in range(50)]:
            f.result(WAIT)
            assert f.wait_stopped(WAIT)
        # The last link is dropped right after its task's outcome, out of the future's
        # lock: result() may return first.
        wait_for(lambda: not group.token._callbacks, "every link to be dropped")
        assert not group.cancelled

    def test_group_and_deadline_together(self, manual_clock: ManualScheduler) -> None:
        ex = CancellableThreadPoolExecutor(max_workers=1)
        try:
            group = CancelSource()
            started = threading.Barrier(2, timeout=WAIT)
            view = ex.with_options(token=group.token, timeout=1.0)
            first = view.submit(wait_on_token, started)
            started.wait()
            manual_clock.advance(1.0)
            assert isinstance(first.exception(0), DeadlineExceeded)
            group.cancel()  # no effect on a task already failed by its deadline
            assert first.token.reason == "deadline"
            assert first.wait_stopped(WAIT)
        finally:
            ex.shutdown(cancel_futures=True, timeout=WAIT)


class TestChildTasks:
    def spawn(
        self, parent_ex: CancellableThreadPoolExecutor, child_ex: Any, **options: Any
    ) -> tuple[CancellableFuture[Any], CancellableFuture[Any]]:
        """Start a parent task that submits a child and waits; return both futures."""
        children: list[CancellableFuture[Any]] = []
        ready = threading.Barrier(3, timeout=WAIT)

        def parent() -> str:
            target = child_ex.with_options(**options) if options else child_ex
            children.append(target.submit(wait_on_token, ready))
            ready.wait()
            return wait_on_token()

        future = parent_ex.submit(parent)
        ready.wait()
        return future, children[0]

    def test_cancelling_the_parent_cancels_the_child(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        other = CancellableThreadPoolExecutor(max_workers=1)
        try:
            for child_ex in (pool, other):
                parent, child = self.spawn(pool, child_ex)
                parent.cancel(reason="parent stopped")
                assert child.cancelled()
                assert child.wait_stopped(WAIT) and parent.wait_stopped(WAIT)
                assert child.token.reason == "parent stopped"
        finally:
            other.shutdown(cancel_futures=True, timeout=WAIT)

    def test_a_parent_deadline_reaches_the_child(self, manual_clock: ManualScheduler) -> None:
        ex = CancellableThreadPoolExecutor(max_workers=2, task_timeout=1.0)
        try:
            parent, child = self.spawn(ex, ex, timeout=None)
            manual_clock.advance(1.0)
            assert isinstance(parent.exception(0), DeadlineExceeded)
            assert child.cancelled() and child.token.reason == "deadline"
            assert child.wait_stopped(WAIT)
        finally:
            ex.shutdown(cancel_futures=True, timeout=WAIT)

    def test_inherit_false_keeps_the_child_running(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        parent, child = self.spawn(pool, pool, inherit=False)
        parent.cancel()
        assert parent.wait_stopped(WAIT)
        assert not child.done() and not child.token.cancelled
        child.cancel()
        assert child.wait_stopped(WAIT)

    def test_executor_wide_opt_out(self, pool: CancellableThreadPoolExecutor) -> None:
        free = CancellableThreadPoolExecutor(max_workers=1, inherit_token=False)
        try:
            parent, child = self.spawn(pool, free)
            parent.cancel()
            assert parent.wait_stopped(WAIT)
            assert not child.done()
            child.cancel()
            assert child.wait_stopped(WAIT)
        finally:
            free.shutdown(cancel_futures=True, timeout=WAIT)

    def test_a_parent_that_finishes_leaves_its_children_alone(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        release = threading.Event()
        children: list[CancellableFuture[Any]] = []

        def parent() -> None:
            children.append(pool.submit(release.wait, WAIT))

        future = pool.submit(parent)
        future.result(WAIT)
        assert future.cancel() is False
        release.set()
        assert children[0].result(WAIT) is True
        assert children[0].wait_stopped(WAIT)
        # The child's link is dropped by its worker right after its outcome is set, out
        # of the future's lock (``_transition``): result() may return first (seen on PyPy).
        wait_for(lambda: not future.token._callbacks, "the child's link to be dropped")


class TestGroupCancelWhenACallbackRaises:
    """Issue 11, item 5: a group cancel cancels every member before re-raising."""

    def test_every_child_source_is_cancelled(self) -> None:
        parent = CancelSource()
        children = [CancelSource(parent.token) for _ in range(4)]

        def interrupted() -> None:
            raise KeyboardInterrupt

        children[2].token.register(interrupted)
        with pytest.raises(KeyboardInterrupt):
            parent.cancel("closing")
        assert [child.reason for child in children] == ["closing"] * 4

    def test_every_task_is_cancelled_and_its_done_callbacks_run(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        group = CancelSource()
        view = pool.with_options(token=group.token)
        running = threading.Barrier(3)  # the two tasks that get a worker, and us

        def raises_when_cancelled() -> str:
            current_token().register(functools.partial(raise_, TaskCancelled("elsewhere")))
            return wait_on_token(running)

        futures = [
            view.submit(wait_on_token, running),
            view.submit(raises_when_cancelled),
            view.submit(wait_on_token),  # queued
            view.submit(wait_on_token),  # queued
        ]
        done: list[object] = []
        for future in futures:
            future.add_done_callback(done.append)
        running.wait(WAIT)
        with pytest.raises(TaskCancelled, match="elsewhere"):
            group.cancel("user closed the window")
        assert all(future.cancelled() for future in futures)
        assert sorted(map(id, done)) == sorted(map(id, futures))
        assert all(future.wait_stopped(WAIT) for future in futures)
        assert {future.token.reason for future in futures} == {"user closed the window"}


def raise_(exc: BaseException) -> None:
    raise exc

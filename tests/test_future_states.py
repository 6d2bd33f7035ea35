"""The future of a task, state by state: pending, running, stopping, stopped, finished."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from concurrent.futures import (
    FIRST_COMPLETED,
    CancelledError,
    Future,
    as_completed,
    wait,
)
from typing import Any

import pytest

from cancelpool import (
    CancellableFuture,
    CancellableThreadPoolExecutor,
    TaskCancelled,
    TaskState,
    current_token,
)

from .conftest import WAIT, wait_for


def state(future: CancellableFuture[Any]) -> TaskState:
    """The task state, read through a call: mypy would narrow a property read."""
    return future.task_state


class Blocker:
    """A task that signals it started and then waits on its token (cooperative)."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.saw_cancel = threading.Event()

    def cooperative(self, value: Any = "done") -> Any:
        self.started.set()
        if current_token().wait(WAIT):
            self.saw_cancel.set()
            # Keep running after the cancel until the test releases us: lets tests
            # observe STOPPING.
            self.release.wait(WAIT)
            current_token().raise_if_cancelled()
        return value

    def stubborn(self, value: Any = "done") -> Any:
        """Never looks at its token: runs until released."""
        self.started.set()
        self.release.wait(WAIT)
        return value


@pytest.fixture
def one_worker() -> Iterator[CancellableThreadPoolExecutor]:
    ex = CancellableThreadPoolExecutor(max_workers=1)
    try:
        yield ex
    finally:
        ex.shutdown(wait=True, cancel_futures=True, timeout=WAIT)


def occupy(ex: CancellableThreadPoolExecutor) -> tuple[Blocker, CancellableFuture[Any]]:
    """Make the (single) worker busy so the next submission stays pending."""
    blocker = Blocker()
    future = ex.submit(blocker.stubborn)
    assert blocker.started.wait(WAIT)
    return blocker, future


class TestPending:
    def test_cancel_pending_is_stdlib_cancel(
        self, one_worker: CancellableThreadPoolExecutor
    ) -> None:
        blocker, busy = occupy(one_worker)
        calls: list[Future[Any]] = []
        ran = threading.Event()
        future = one_worker.submit(ran.set)
        future.add_done_callback(calls.append)
        assert state(future) is TaskState.PENDING
        assert not future.running()
        assert future.cancel()
        assert future.cancel()  # again: still True, as the stdlib
        assert future.cancelled() and future.done()
        assert state(future) is TaskState.CANCELLED
        assert future.token.cancelled
        assert future.token.reason == "cancel"
        assert future.wait_stopped(0)  # never started: stopped at once
        assert calls == [future]
        with pytest.raises(CancelledError):
            future.result(0)
        blocker.release.set()
        assert busy.result(WAIT) == "done"
        one_worker.shutdown(wait=True)
        assert not ran.is_set()
        assert calls == [future]


class TestRunning:
    def test_cancel_running_cancels_future_at_once(
        self, one_worker: CancellableThreadPoolExecutor
    ) -> None:
        blocker = Blocker()
        future = one_worker.submit(blocker.cooperative)
        assert blocker.started.wait(WAIT)
        assert future.running()
        assert state(future) is TaskState.RUNNING
        assert not future.wait_stopped(0)

        assert future.cancel() is True
        assert future.cancelled() and future.done() and not future.running()
        assert state(future) is TaskState.STOPPING
        with pytest.raises(CancelledError):
            future.result(0)
        with pytest.raises(CancelledError):
            future.exception(0)
        assert blocker.saw_cancel.wait(WAIT)  # the token reached the task
        assert not future.wait_stopped(0)  # still running (waits for release)
        assert "cancelled, still stopping" in repr(future)

        blocker.release.set()
        assert future.wait_stopped(WAIT)
        assert state(future) is TaskState.STOPPED
        assert future.cancelled()
        assert "cancelled, still stopping" not in repr(future)
        # The worker is back in the pool, unharmed.
        assert one_worker.submit(lambda: 7).result(WAIT) == 7

    def test_done_callbacks_run_once_in_cancelling_thread(
        self, one_worker: CancellableThreadPoolExecutor
    ) -> None:
        blocker = Blocker()
        future = one_worker.submit(blocker.cooperative)
        assert blocker.started.wait(WAIT)
        threads: list[str] = []
        future.add_done_callback(lambda _: threads.append(threading.current_thread().name))
        future.cancel()
        assert threads == [threading.current_thread().name]
        blocker.release.set()
        assert future.wait_stopped(WAIT)
        one_worker.shutdown(wait=True)
        assert len(threads) == 1

    def test_outcome_of_stopped_task_is_dropped_and_logged(
        self, one_worker: CancellableThreadPoolExecutor, caplog: pytest.LogCaptureFixture
    ) -> None:
        blocker = Blocker()
        future = one_worker.submit(blocker.stubborn, "late result")
        assert blocker.started.wait(WAIT)
        assert future.cancel()
        with caplog.at_level(logging.DEBUG, logger="cancelpool"):
            blocker.release.set()
            assert future.wait_stopped(WAIT)
            # The worker logs after releasing the future's lock (logging handlers are
            # user code), so the record may follow wait_stopped() by a moment.
            wait_for(lambda: "dropped" in caplog.text, "the debug record")
        with pytest.raises(CancelledError):
            future.result(0)
        assert state(future) is TaskState.STOPPED
        assert re.search(
            r"stopped after its cancel and returned 'late result'; dropped", caplog.text
        )

    def test_exception_of_stopped_task_is_dropped(
        self, one_worker: CancellableThreadPoolExecutor
    ) -> None:
        started = threading.Event()

        def task() -> None:
            started.set()
            current_token().wait(WAIT)
            raise OSError("connection closed by our cancel callback")

        future = one_worker.submit(task)
        assert started.wait(WAIT)
        future.cancel()
        assert future.wait_stopped(WAIT)
        with pytest.raises(CancelledError):
            future.exception(0)
        assert one_worker.statistics().failed == 0

    @pytest.mark.parametrize("method", ["set_result", "set_exception", "set_running"])
    def test_executor_only_methods_are_refused_on_task_futures(
        self, one_worker: CancellableThreadPoolExecutor, method: str
    ) -> None:
        blocker = Blocker()
        future = one_worker.submit(blocker.stubborn)
        assert blocker.started.wait(WAIT)
        call = {
            "set_result": lambda: future.set_result(1),
            "set_exception": lambda: future.set_exception(ValueError()),
            "set_running": future.set_running_or_notify_cancel,
        }[method]
        with pytest.raises(RuntimeError, match="only its worker sets its state"):
            call()
        assert state(future) is TaskState.RUNNING  # untouched
        blocker.release.set()
        assert future.result(WAIT) == "done"

    def test_wait_stopped_from_the_task_itself_is_an_error(
        self, one_worker: CancellableThreadPoolExecutor
    ) -> None:
        def task() -> None:
            me = current_future[0]
            me.wait_stopped(0)

        current_future: list[CancellableFuture[None]] = []
        gate = threading.Event()
        one_worker.submit(gate.wait, WAIT)  # hold the worker until the list is filled
        current_future.append(one_worker.submit(task))
        gate.set()
        with pytest.raises(RuntimeError, match="it would wait for itself"):
            current_future[0].result(WAIT)

    def test_base_exception_from_done_callback_does_not_kill_worker(
        self, one_worker: CancellableThreadPoolExecutor, caplog: pytest.LogCaptureFixture
    ) -> None:
        gate = threading.Event()
        future = one_worker.submit(gate.wait, WAIT)

        def callback(_: object) -> None:
            raise SystemExit("from a done-callback")

        future.add_done_callback(callback)
        with caplog.at_level(logging.CRITICAL, logger="concurrent.futures"):
            gate.set()
            assert future.result(WAIT) is True
            assert one_worker.submit(lambda: 5).result(WAIT) == 5
        assert len(one_worker._threads) == 1
        assert "the worker carries on" in caplog.text

    @pytest.mark.parametrize("waiter_first", [True, False], ids=["waiter-first", "cancel-first"])
    def test_wait_first_completed_wakes_on_running_cancel(
        self, one_worker: CancellableThreadPoolExecutor, waiter_first: bool
    ) -> None:
        blocker = Blocker()
        future = one_worker.submit(blocker.cooperative)
        assert blocker.started.wait(WAIT)
        result: list[Any] = []

        def waiter() -> None:
            result.append(wait([future], timeout=WAIT, return_when=FIRST_COMPLETED))

        if not waiter_first:
            future.cancel()
        t = threading.Thread(target=waiter)
        t.start()
        if waiter_first:
            # Cancel only once wait() has installed its waiter on the future.
            wait_for(lambda: bool(future._waiters), "wait() to install its waiter")
            future.cancel()
        t.join(WAIT)
        assert not t.is_alive()
        done, not_done = result[0]
        assert done == {future} and not not_done
        blocker.release.set()

    def test_as_completed_yields_cancelled_running_future(
        self, one_worker: CancellableThreadPoolExecutor
    ) -> None:
        blocker = Blocker()
        future = one_worker.submit(blocker.cooperative)
        assert blocker.started.wait(WAIT)

        def cancel_when_waited_on() -> None:
            wait_for(lambda: bool(future._waiters), "as_completed() to install its waiter")
            future.cancel()

        canceller = threading.Thread(target=cancel_when_waited_on)
        canceller.start()
        assert next(as_completed([future], timeout=WAIT)) is future
        canceller.join(WAIT)
        blocker.release.set()

    def test_task_raising_taskcancelled_after_cancel_is_stopped(
        self, one_worker: CancellableThreadPoolExecutor
    ) -> None:
        started = threading.Event()

        def task() -> None:
            started.set()
            current_token().sleep(WAIT)

        future = one_worker.submit(task)
        assert started.wait(WAIT)
        future.cancel(reason="enough")
        assert future.wait_stopped(WAIT)
        assert state(future) is TaskState.STOPPED
        assert future.token.reason == "enough"


class TestFinished:
    def test_cancel_finished_returns_false(self, one_worker: CancellableThreadPoolExecutor) -> None:
        future = one_worker.submit(lambda: 42)
        assert future.result(WAIT) == 42
        assert future.cancel() is False
        assert not future.cancelled()
        assert not future.token.cancelled
        assert state(future) is TaskState.FINISHED
        assert future.wait_stopped(0)
        assert re.fullmatch(
            r"<CancellableFuture at 0x[0-9a-f]+ state=finished returned int>", repr(future)
        )

    def test_exception_finished(self, one_worker: CancellableThreadPoolExecutor) -> None:
        def fail() -> None:
            raise KeyError("x")

        future = one_worker.submit(fail)
        assert isinstance(future.exception(WAIT), KeyError)
        assert future.cancel() is False
        assert "state=finished raised KeyError" in repr(future)

    def test_task_raising_taskcancelled_uncancelled_is_an_outcome(
        self, one_worker: CancellableThreadPoolExecutor
    ) -> None:
        def task() -> None:
            raise TaskCancelled("someone else's token")

        future = one_worker.submit(task)
        exc = future.exception(WAIT)
        assert isinstance(exc, TaskCancelled)
        assert not future.cancelled()

    def test_base_exception_from_task_does_not_kill_worker(
        self, one_worker: CancellableThreadPoolExecutor
    ) -> None:
        def task() -> None:
            raise SystemExit(3)

        future = one_worker.submit(task)
        assert isinstance(future.exception(WAIT), SystemExit)
        assert one_worker.submit(lambda: 1).result(WAIT) == 1
        assert len(one_worker._threads) == 1


class TestRepr:
    def test_repr_of_each_state(self, one_worker: CancellableThreadPoolExecutor) -> None:
        blocker, busy = occupy(one_worker)
        assert re.fullmatch(r"<CancellableFuture at 0x[0-9a-f]+ state=running>", repr(busy))
        pending = one_worker.submit(int)
        assert "state=pending>" in repr(pending)
        pending.cancel(reason="shutdown")
        assert "state=cancelled reason='shutdown'" in repr(pending)
        busy.cancel()
        assert "state=cancelled, still stopping reason='cancel'" in repr(busy)
        blocker.release.set()
        assert busy.wait_stopped(WAIT)
        assert "state=cancelled reason='cancel'" in repr(busy)


class TestUnboundFuture:
    """A CancellableFuture made by user code behaves exactly like the stdlib's."""

    def test_running_cannot_be_cancelled(self) -> None:
        future: CancellableFuture[int] = CancellableFuture()
        assert state(future) is TaskState.PENDING
        assert future.set_running_or_notify_cancel()
        assert state(future) is TaskState.RUNNING
        assert future.cancel() is False
        future.set_result(5)
        assert future.result(0) == 5
        assert state(future) is TaskState.FINISHED
        assert future.wait_stopped(0)

    def test_pending_cancel_sets_token_and_runs_callbacks(self) -> None:
        future: CancellableFuture[int] = CancellableFuture()
        calls: list[object] = []
        future.add_done_callback(calls.append)
        assert future.cancel(reason="bye")
        assert future.cancel()
        assert future.token.reason == "bye"
        assert calls == [future]
        assert not future.set_running_or_notify_cancel()
        assert state(future) is TaskState.CANCELLED

    def test_wait_stopped_times_out_while_pending(self) -> None:
        future: CancellableFuture[int] = CancellableFuture()
        assert future.wait_stopped(0) is False


class TestValidation:
    @pytest.mark.parametrize("bad", [-0.1, float("nan")])
    def test_wait_stopped_bad_timeout(self, bad: float) -> None:
        with pytest.raises(ValueError, match=r"timeout must be >= 0 or None, got"):
            CancellableFuture().wait_stopped(bad)

    def test_cancel_bad_reason(self) -> None:
        with pytest.raises(TypeError, match="reason must be a str, got 3"):
            CancellableFuture().cancel(reason=3)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="reason must be a non-empty str"):
            CancellableFuture().cancel(reason="")

    def test_generic_alias(self) -> None:
        alias: Any = CancellableFuture[int]
        assert alias.__origin__ is CancellableFuture

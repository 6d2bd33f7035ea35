"""The stop token, seen from task code: poll, wait, sleep, register, current_token()."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

import pytest

import cancelpool
from cancelpool import (
    CancellableFuture,
    CancellableThreadPoolExecutor,
    CancelSource,
    CancelToken,
    TaskCancelled,
    TaskState,
    checkpoint,
    current_token,
    current_token_or_none,
)

from .conftest import WAIT


def cancelled_token(reason: str = "cancel") -> CancelToken:
    token = CancelToken()
    wakeup = token._cancel(reason)
    assert wakeup is not None
    wakeup.fire()
    return token


class TestPolling:
    def test_new_token_is_not_cancelled(self) -> None:
        token = CancelToken()
        assert not token.cancelled
        assert token.reason is None
        token.raise_if_cancelled()  # no exception

    def test_cancel_sets_flag_and_reason(self) -> None:
        token = cancelled_token("shutdown")
        assert token.cancelled
        assert token.reason == "shutdown"
        with pytest.raises(TaskCancelled) as info:
            token.raise_if_cancelled()
        assert info.value.reason == "shutdown"

    def test_first_reason_wins(self) -> None:
        token = cancelled_token("first")
        assert token._cancel("second") is None
        assert token.reason == "first"

    def test_repr_shows_state(self) -> None:
        assert "active" in repr(CancelToken())
        assert "cancelled reason='map'" in repr(cancelled_token("map"))


class TestTaskCancelled:
    def test_is_base_exception_not_exception(self) -> None:
        assert issubclass(TaskCancelled, BaseException)
        assert not issubclass(TaskCancelled, Exception)

    def test_except_exception_does_not_swallow_it(self) -> None:
        token = cancelled_token()

        def user_code() -> None:
            try:
                token.raise_if_cancelled()
            except Exception:  # what careless task code does
                pytest.fail("except Exception caught TaskCancelled")

        with pytest.raises(TaskCancelled):
            user_code()

    def test_message_and_pickle(self) -> None:
        import pickle

        exc = TaskCancelled("deadline")
        assert str(exc) == "task cancelled (reason: deadline)"
        again = pickle.loads(pickle.dumps(exc))
        assert isinstance(again, TaskCancelled)
        assert again.reason == "deadline"
        assert repr(exc) == "TaskCancelled('deadline')"


class TestWaitAndSleep:
    def test_wait_times_out_false(self) -> None:
        assert CancelToken().wait(0) is False

    def test_wait_returns_true_when_cancelled(self) -> None:
        assert cancelled_token().wait(0) is True
        assert cancelled_token().wait() is True

    def test_wait_wakes_on_cancel_from_other_thread(self) -> None:
        token = CancelToken()
        waiting = threading.Event()
        result: list[bool] = []

        def waiter() -> None:
            waiting.set()
            result.append(token.wait(WAIT))

        t = threading.Thread(target=waiter)
        t.start()
        assert waiting.wait(WAIT)
        wakeup = token._cancel("cancel")
        assert wakeup is not None
        wakeup.fire()
        t.join(WAIT)
        assert result == [True]

    def test_sleep_zero_on_fresh_token_returns(self) -> None:
        CancelToken().sleep(0)

    def test_sleep_raises_when_cancelled(self) -> None:
        with pytest.raises(TaskCancelled) as info:
            cancelled_token("shutdown").sleep(WAIT)
        assert info.value.reason == "shutdown"

    @pytest.mark.parametrize("bad", [-1, -0.5, float("nan")])
    def test_negative_or_nan_timeouts_rejected(self, bad: float) -> None:
        token = CancelToken()
        with pytest.raises(ValueError, match=r"timeout must be >= 0 or None, got"):
            token.wait(bad)
        with pytest.raises(ValueError, match=r"must be >= 0"):
            token.sleep(bad)

    @pytest.mark.parametrize("bad", ["1", True, [1]])
    def test_wrong_type_timeouts_rejected(self, bad: object) -> None:
        with pytest.raises(TypeError, match=r"timeout must be a number of seconds or None, got"):
            CancelToken().wait(bad)  # type: ignore[arg-type]

    def test_sleep_none_rejected(self) -> None:
        with pytest.raises(TypeError, match="seconds must be a number"):
            CancelToken().sleep(None)  # type: ignore[arg-type]


class TestRegister:
    def test_callback_runs_once_on_cancel(self) -> None:
        token = CancelToken()
        calls: list[str] = []
        token.register(lambda: calls.append("a"))
        token.register(lambda: calls.append("b"))
        wakeup = token._cancel("cancel")
        assert wakeup is not None
        assert calls == []  # nothing runs until the owner fires, outside its locks
        wakeup.fire()
        assert calls == ["b", "a"]  # the last registered first
        assert token._cancel("again") is None
        assert calls == ["b", "a"]  # the last registered first

    def test_register_on_cancelled_token_runs_at_once(self) -> None:
        token = cancelled_token()
        calls: list[int] = []
        handle = token.register(lambda: calls.append(1))
        assert calls == [1]
        assert handle.unregister() is False

    def test_unregister_before_cancel(self) -> None:
        token = CancelToken()
        calls: list[int] = []
        handle = token.register(lambda: calls.append(1))
        assert handle.unregister() is True
        assert handle.unregister() is False
        wakeup = token._cancel("cancel")
        assert wakeup is not None
        wakeup.fire()
        assert calls == []

    def test_handle_as_context_manager(self) -> None:
        token = CancelToken()
        calls: list[int] = []
        with token.register(lambda: calls.append(1)) as handle:
            assert handle.callback is not None
        wakeup = token._cancel("cancel")
        assert wakeup is not None
        wakeup.fire()
        assert calls == []

    def test_failing_callback_is_logged_and_others_still_run(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        token = CancelToken()
        calls: list[int] = []

        def boom() -> None:
            raise OSError("socket already closed")

        token.register(boom)
        token.register(lambda: calls.append(1))
        wakeup = token._cancel("cancel")
        assert wakeup is not None
        with caplog.at_level(logging.ERROR, logger="cancelpool"):
            wakeup.fire()
        assert calls == [1]
        assert "exception in cancellation callback" in caplog.text
        assert "socket already closed" in caplog.text

    def test_non_callable_rejected(self) -> None:
        with pytest.raises(TypeError, match="callback must be callable, got 42"):
            CancelToken().register(42)  # type: ignore[arg-type]


class TestCurrentToken:
    def test_outside_a_task(self) -> None:
        with pytest.raises(RuntimeError, match=r"outside a cancelpool task.*current_token_or_none"):
            current_token()
        assert current_token_or_none() is None
        checkpoint()  # outside a task: does nothing

    def test_inside_a_task_it_is_the_futures_token(self) -> None:
        with CancellableThreadPoolExecutor(max_workers=1) as ex:
            future = ex.submit(current_token)
            assert future.result(WAIT) is future.token

    def test_each_task_has_its_own_token(self) -> None:
        with CancellableThreadPoolExecutor(max_workers=1) as ex:
            tokens = [ex.submit(current_token).result(WAIT) for _ in range(3)]
        assert len({id(t) for t in tokens}) == 3

    def test_token_is_cleared_between_tasks_and_in_done_callbacks(self) -> None:
        seen_in_callback: list[Optional[CancelToken]] = []
        with CancellableThreadPoolExecutor(max_workers=1) as ex:
            gate = threading.Event()
            first = ex.submit(gate.wait, WAIT)
            # Runs in the worker when the task completes, after the task's code.
            first.add_done_callback(lambda _: seen_in_callback.append(current_token_or_none()))
            gate.set()
            first.result(WAIT)
            assert ex.submit(current_token_or_none).result(WAIT) is not None
        assert seen_in_callback == [None]

    def test_checkpoint_raises_in_cancelled_task(self) -> None:
        started = threading.Event()
        seen: list[str] = []

        def task() -> None:
            started.set()
            current_token().wait(WAIT)
            try:
                checkpoint()
            except TaskCancelled as exc:
                seen.append(exc.reason)
                raise

        with CancellableThreadPoolExecutor(max_workers=1) as ex:
            future = ex.submit(task)
            assert started.wait(WAIT)
            assert future.cancel(reason="user pressed stop")
            assert future.wait_stopped(WAIT)
        assert seen == ["user pressed stop"]

    @pytest.mark.parametrize("inner_cls", [ThreadPoolExecutor, CancellableThreadPoolExecutor])
    def test_token_does_not_leak_into_work_the_task_submits(
        self, inner_cls: type[ThreadPoolExecutor]
    ) -> None:
        def inner() -> Optional[CancelToken]:
            return current_token_or_none()

        def outer() -> tuple[CancelToken, Optional[CancelToken]]:
            with inner_cls(max_workers=1) as inner_ex:
                return current_token(), inner_ex.submit(inner).result(WAIT)

        with CancellableThreadPoolExecutor(max_workers=1) as ex:
            outer_token, inner_token = ex.submit(outer).result(WAIT)
        assert inner_token is not outer_token
        if inner_cls is ThreadPoolExecutor:
            assert inner_token is None

    def test_public_names_are_exported(self) -> None:
        assert cancelpool.current_token is current_token


# What a token callback may raise that is not an Exception: each must reach the canceller,
# but only after every other callback, the future's state and its done-callbacks.
STOPS = [KeyboardInterrupt, SystemExit, TaskCancelled]


def raiser(cls: type[BaseException], calls: Optional[list[str]] = None) -> Callable[[], None]:
    def stop() -> None:
        if calls is not None:
            calls.append(cls.__name__)
        raise cls()

    return stop


class TestCallbackRaisesBaseException:
    """Issue 11, item 5: one callback's BaseException no longer cuts a cancel short."""

    @pytest.mark.parametrize("cls", STOPS)
    def test_every_other_callback_runs_then_it_reaches_the_canceller(
        self, cls: type[BaseException]
    ) -> None:
        source = CancelSource()
        calls: list[str] = []
        source.token.register(lambda: calls.append("registered first"))
        source.token.register(raiser(cls, calls))
        source.token.register(lambda: calls.append("registered last"))
        with pytest.raises(cls):
            source.cancel("stop")
        assert calls == ["registered last", cls.__name__, "registered first"]
        assert source.cancelled
        assert source.reason == "stop"
        assert source.token.wait(0)
        assert source.cancel("again") is False

    def test_the_first_is_reraised_and_the_others_are_logged(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        source = CancelSource()
        calls: list[str] = []
        source.token.register(raiser(SystemExit, calls))
        source.token.register(raiser(KeyboardInterrupt, calls))  # runs first
        with caplog.at_level(logging.ERROR, logger="cancelpool"), pytest.raises(KeyboardInterrupt):
            source.cancel("closing")
        assert calls == ["KeyboardInterrupt", "SystemExit"]
        assert "SystemExit" in caplog.text
        assert "raiser.<locals>.stop" in caplog.text  # names the callback...
        assert "'closing'" in caplog.text  # ...and the token's reason

    def test_an_exception_is_logged_with_the_callback_and_the_reason(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        source = CancelSource()

        def close_socket() -> None:
            raise OSError("socket already closed")

        source.token.register(close_socket)
        with caplog.at_level(logging.ERROR, logger="cancelpool"):
            assert source.cancel("user pressed stop") is True
        assert "close_socket" in caplog.text
        assert "'user pressed stop'" in caplog.text
        assert "socket already closed" in caplog.text

    def test_on_a_cancelled_token_register_raises_it_at_once(self) -> None:
        source = CancelSource()
        source.cancel()
        with pytest.raises(KeyboardInterrupt):
            source.token.register(raiser(KeyboardInterrupt))

    @pytest.mark.parametrize("cls", STOPS)
    def test_a_running_tasks_cancel_completes_before_it_is_reraised(
        self, cls: type[BaseException]
    ) -> None:
        registered = threading.Event()

        def task() -> None:
            token = current_token()
            token.register(raiser(cls))
            registered.set()
            token.wait(WAIT)
            token.raise_if_cancelled()

        with CancellableThreadPoolExecutor(max_workers=1) as ex:
            future = ex.submit(task)
            done: list[object] = []
            future.add_done_callback(done.append)
            assert registered.wait(WAIT)
            with pytest.raises(cls):
                future.cancel(reason="stop", force=False)
            assert future.done()
            assert future.cancelled()
            assert done == [future]  # the done-callbacks ran before it was re-raised
            assert future._ladder is not None  # and the escalation started
            assert future.wait_stopped(WAIT)  # the task was woken and stopped
            assert future.task_state is TaskState.STOPPED
            assert future.token.reason == "stop"
            assert future.cancel() is True  # cancelled, for good

    @pytest.mark.skipif(not cancelpool.FORCE_AVAILABLE, reason="needs forced interrupts")
    def test_a_forced_cancel_escalates_although_a_callback_raised(self) -> None:
        started = threading.Event()
        flags = {"release": False}

        def spin() -> None:
            current_token().register(raiser(KeyboardInterrupt))
            started.set()
            while not flags["release"]:  # never looks at its token
                pass

        with CancellableThreadPoolExecutor(max_workers=1, abandon_after=WAIT) as ex:
            future = ex.submit(spin)
            assert started.wait(WAIT)
            try:
                with pytest.raises(KeyboardInterrupt):
                    future.cancel(force=True, grace=0)
                stopped = future.wait_stopped(WAIT)
            finally:
                flags["release"] = True
            assert stopped
            assert future._interrupts_landed == 1
            assert future.task_state is TaskState.STOPPED

    def test_an_unbound_futures_done_callbacks_run(self) -> None:
        future: CancellableFuture[int] = CancellableFuture()
        calls: list[str] = []
        future.token.register(raiser(SystemExit, calls))
        future.add_done_callback(lambda _: calls.append("done-callback"))
        with pytest.raises(SystemExit):
            future.cancel()
        assert calls == ["SystemExit", "done-callback"]
        assert future.cancelled()
        assert future.task_state is TaskState.CANCELLED

"""asyncio: cancelling the task that awaits a thread task stops the thread task.

Every test runs a real event loop (``asyncio.run``). Events are ordered, never timed: the
thread task sets a ``threading.Event`` when it starts, and the coroutine waits for it
with ``until()``, which polls with ``asyncio.sleep(0.001)`` for at most ``WAIT`` seconds
(a blocking wait would stall the loop). After the loop, ``future.wait_stopped(WAIT)``
says when the thread task's code has really stopped. The futures that
``loop.run_in_executor`` submits are hidden from the caller, so the executor under test
records them (``Recording``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import threading
import time
import types
from collections.abc import Awaitable, Iterator
from typing import Any, Callable, Optional, TypeVar

import pytest

import cancelpool
from cancelpool import (
    CancellableFuture,
    CancellableThreadPoolExecutor,
    CancelToken,
    TaskCancelled,
    TaskInterrupted,
    TaskState,
    current_token,
)
from cancelpool._asyncio import cancel_message, chained_destinations

from .conftest import WAIT

T = TypeVar("T")

needs_311 = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="asyncio.timeout and TaskGroup are new in 3.11"
)
needs_injection = pytest.mark.skipif(not cancelpool.FORCE_AVAILABLE, reason="needs injection")


class Recording(CancellableThreadPoolExecutor):
    """Our executor, keeping the future of every task it is given."""

    def __init__(self, max_workers: int = 2, **options: Any) -> None:
        super().__init__(max_workers, **options)
        self.submitted: list[CancellableFuture[Any]] = []

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> CancellableFuture[T]:
        future = super().submit(fn, *args, **kwargs)
        self.submitted.append(future)
        return future

    def only_future(self) -> CancellableFuture[Any]:
        (future,) = self.submitted
        return future


class Worker:
    """The thread side: signals that it started, records how it was stopped."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.token: Optional[CancelToken] = None
        self.caught: list[BaseException] = []

    def cooperative(self) -> str:
        """Sleeps on its token: a cancel stops it at once with TaskCancelled."""
        self.token = current_token()
        self.started.set()
        try:
            self.token.sleep(WAIT)
        except BaseException as exc:
            self.caught.append(exc)
            raise
        return "slept through"

    def stubborn(self) -> str:
        """Never looks at its token, and swallows every Exception: only forcing stops it.

        The handler that records the interrupt is in a frame of its own, not in the
        loop's: on 3.13.0 an exception injected at a loop's back edge can skip the
        handlers of the frame it lands in (CPython issue #139622, see cancelpool._inject).
        """
        try:  # the interrupt may land as soon as started is set
            return self._spin()
        except BaseException as exc:
            self.caught.append(exc)
            raise

    def _spin(self) -> str:
        self.token = current_token()
        deadline = time.monotonic() + WAIT
        self.started.set()
        while time.monotonic() < deadline:
            try:
                sum(range(50))
            except Exception:
                continue
        return "ran out"


@pytest.fixture
def ex() -> Iterator[Recording]:
    executor = Recording()
    try:
        yield executor
    finally:
        executor.shutdown(wait=True, cancel_futures=True, timeout=WAIT)


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Yield to the loop until *predicate()* is true; fail after ``WAIT`` seconds."""
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {WAIT}s waiting for {what}")
        await asyncio.sleep(0.001)


async def cancel_when_started(
    awaitable: Callable[[], Awaitable[object]],
    started: threading.Event,
    msg: Optional[str] = None,
) -> None:
    """Await *awaitable()* in a task; once the thread task started, cancel that task."""
    task = asyncio.ensure_future(awaitable())
    await until(started.is_set, "the thread task to start")
    assert not task.done()
    task.cancel(msg)
    with pytest.raises(asyncio.CancelledError):
        await task


def assert_stopped(
    future: CancellableFuture[Any],
    worker: Worker,
    reason: str,
    caught: type[BaseException] = TaskCancelled,
) -> None:
    """The thread task was asked to stop for *reason*, and its code has stopped."""
    assert future.wait_stopped(WAIT), future
    assert future.task_state is TaskState.STOPPED
    assert future.cancelled()
    assert worker.token is future.token
    assert future.token.reason == reason
    (exc,) = worker.caught
    assert type(exc) is caught
    assert isinstance(exc, TaskCancelled)
    assert exc.reason == reason


class TestRunInExecutor:
    def test_result_flows_through_when_not_cancelled(self, ex: Recording) -> None:
        async def main() -> int:
            return await asyncio.get_running_loop().run_in_executor(ex, pow, 2, 10)

        assert asyncio.run(main()) == 1024
        assert not ex.only_future().token.cancelled

    def test_cancelling_the_awaiting_task_stops_the_thread_task(self, ex: Recording) -> None:
        worker = Worker()

        async def main() -> None:
            loop = asyncio.get_running_loop()
            await cancel_when_started(
                lambda: loop.run_in_executor(ex, worker.cooperative), worker.started
            )

        asyncio.run(main())
        assert_stopped(ex.only_future(), worker, "cancel")

    def test_cancel_message_becomes_the_reason(self, ex: Recording) -> None:
        worker = Worker()

        async def main() -> None:
            loop = asyncio.get_running_loop()
            await cancel_when_started(
                lambda: loop.run_in_executor(ex, worker.cooperative), worker.started, "user left"
            )

        asyncio.run(main())
        assert_stopped(ex.only_future(), worker, "user left")

    def test_wrap_future_of_a_submitted_task(self, ex: Recording) -> None:
        """The documented way to keep the future: submit, then wrap it yourself."""
        worker = Worker()
        future = ex.submit(worker.cooperative)

        async def main() -> None:
            await cancel_when_started(lambda: asyncio.wrap_future(future), worker.started, "bye")

        asyncio.run(main())
        assert_stopped(future, worker, "bye")

    @pytest.mark.parametrize("msg", [None, "user left"])
    def test_queued_task_is_cancelled_before_it_runs(self, msg: Optional[str]) -> None:
        ex = Recording(max_workers=1)
        busy = Worker()
        ran: list[bool] = []
        try:

            async def main() -> None:
                loop = asyncio.get_running_loop()
                first = loop.run_in_executor(ex, busy.cooperative)
                await cancel_when_started(
                    lambda: loop.run_in_executor(ex, ran.append, True), busy.started, msg
                )
                first.cancel()

            asyncio.run(main())
            running, queued = ex.submitted
            assert queued.wait_stopped(WAIT)
            assert queued.task_state is TaskState.CANCELLED
            assert queued.token.reason == (msg or "cancel")
            assert ran == []
            assert_stopped(running, busy, "cancel")
        finally:
            ex.shutdown(wait=True, cancel_futures=True, timeout=WAIT)

    def test_what_the_thread_does_after_the_cancel_is_dropped(self, ex: Recording) -> None:
        worker = Worker()
        errors: list[dict[str, Any]] = []

        def fails_on_cancel() -> None:
            try:
                worker.cooperative()
            except TaskCancelled:
                raise RuntimeError("cleanup failed") from None

        async def main() -> None:
            loop = asyncio.get_running_loop()
            loop.set_exception_handler(lambda _, context: errors.append(context))
            await cancel_when_started(
                lambda: loop.run_in_executor(ex, fails_on_cancel), worker.started
            )
            future = ex.only_future()
            await until(lambda: future.wait_stopped(0), "the thread task to stop")
            for _ in range(10):  # room for a late callback, if there were one
                await asyncio.sleep(0)

        asyncio.run(main())
        future = ex.only_future()
        assert future.task_state is TaskState.STOPPED
        with pytest.raises(concurrent.futures.CancelledError):
            future.result(0)
        assert errors == []


class TestToThread:
    @pytest.mark.parametrize(("msg", "reason"), [(None, "cancel"), ("user left", "user left")])
    def test_default_executor_task_is_stopped(
        self, ex: Recording, msg: Optional[str], reason: str
    ) -> None:
        worker = Worker()

        async def main() -> None:
            asyncio.get_running_loop().set_default_executor(ex)
            await cancel_when_started(
                lambda: asyncio.to_thread(worker.cooperative), worker.started, msg
            )

        asyncio.run(main())
        assert_stopped(ex.only_future(), worker, reason)


class TestDeadlines:
    @pytest.mark.parametrize("timeout", [0, 0.01])
    def test_wait_for(self, ex: Recording, timeout: float) -> None:
        worker = Worker()

        async def main() -> None:
            fut = asyncio.get_running_loop().run_in_executor(ex, worker.cooperative)
            await until(worker.started.is_set, "the thread task to start")
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(fut, timeout=timeout)

        asyncio.run(main())
        assert_stopped(ex.only_future(), worker, "cancel")

    @needs_311
    @pytest.mark.parametrize("delay", [0, 0.01])
    def test_timeout(self, ex: Recording, delay: float) -> None:
        worker = Worker()

        async def main() -> None:
            if sys.version_info >= (3, 11):  # mypy checks this file as 3.9
                fut = asyncio.get_running_loop().run_in_executor(ex, worker.cooperative)
                await until(worker.started.is_set, "the thread task to start")
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(delay):
                        await fut

        asyncio.run(main())
        assert_stopped(ex.only_future(), worker, "cancel")

    @needs_311
    def test_task_group_sibling_failure(self, ex: Recording) -> None:
        worker = Worker()

        async def sibling() -> None:
            await until(worker.started.is_set, "the thread task to start")
            raise ValueError("sibling failed")

        async def main() -> None:
            if sys.version_info >= (3, 11):  # mypy checks this file as 3.9
                loop = asyncio.get_running_loop()

                async def in_thread() -> str:
                    return await loop.run_in_executor(ex, worker.cooperative)

                async def group() -> None:
                    async with asyncio.TaskGroup() as tasks:
                        tasks.create_task(in_thread())
                        tasks.create_task(sibling())

                # ExceptionGroup is a builtin from 3.11 on; this block runs there only.
                with pytest.raises(ExceptionGroup) as info:  # noqa: F821
                    await group()
                assert [type(e) for e in info.value.exceptions] == [ValueError]

        asyncio.run(main())
        assert_stopped(ex.only_future(), worker, "cancel")


@needs_injection
class TestForced:
    @pytest.mark.parametrize(("msg", "reason"), [(None, "cancel"), ("user left", "user left")])
    def test_task_that_never_checks_is_interrupted(self, msg: Optional[str], reason: str) -> None:
        ex = Recording(max_workers=1, force=True, grace=0.0)
        worker = Worker()
        try:

            async def main() -> None:
                loop = asyncio.get_running_loop()
                await cancel_when_started(
                    lambda: loop.run_in_executor(ex, worker.stubborn), worker.started, msg
                )

            asyncio.run(main())
            assert_stopped(ex.only_future(), worker, reason, caught=TaskInterrupted)
            assert ex.statistics().interrupts == 1
        finally:
            ex.shutdown(wait=True, cancel_futures=True, timeout=WAIT)

    def test_wait_for_escalates_too(self) -> None:
        ex = Recording(max_workers=1, force=True, grace=0.0)
        worker = Worker()
        try:

            async def main() -> None:
                fut = asyncio.get_running_loop().run_in_executor(ex, worker.stubborn)
                await until(worker.started.is_set, "the thread task to start")
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(fut, timeout=0)

            asyncio.run(main())
            assert_stopped(ex.only_future(), worker, "cancel", caught=TaskInterrupted)
        finally:
            ex.shutdown(wait=True, cancel_futures=True, timeout=WAIT)


def test_stdlib_executor_leaves_the_thread_running() -> None:
    """The difference cancelpool makes: the stdlib's thread task never hears of it."""
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def task() -> None:
        started.set()
        release.wait(WAIT)
        finished.set()

    stdlib = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:

        async def main() -> None:
            loop = asyncio.get_running_loop()
            await cancel_when_started(lambda: loop.run_in_executor(stdlib, task), started)

        asyncio.run(main())
        assert not finished.is_set()  # still running: it was never told
    finally:
        release.set()
        stdlib.shutdown(wait=True)
    assert finished.is_set()


class TestChainShape:
    """asyncio's private ``_chain_future`` still looks as ``cancelpool._asyncio`` expects.

    If one of these fails, this interpreter's asyncio changed the shape of
    ``_chain_future.<locals>._call_set_state``: cancels still work, but the asyncio cancel
    message no longer becomes the reason. Update ``cancelpool._asyncio``.
    """

    def test_the_closure_is_where_we_look(self) -> None:
        import asyncio.futures

        nested = [
            const
            for const in asyncio.futures._chain_future.__code__.co_consts  # type: ignore[attr-defined]
            if isinstance(const, types.CodeType) and const.co_name == "_call_set_state"
        ]
        assert len(nested) == 1, f"no _call_set_state in {sys.version}'s _chain_future"
        assert "destination" in nested[0].co_freevars, nested[0].co_freevars

    def test_wrap_future_chains_a_findable_destination(self) -> None:
        async def main() -> None:
            source: CancellableFuture[int] = CancellableFuture()
            destination = asyncio.wrap_future(source)
            found = chained_destinations(source)
            assert found == [destination], (
                f"asyncio's _chain_future changed shape on {sys.version}: "
                f"done-callbacks {vars(source).get('_done_callbacks')!r}"
            )
            destination.cancel()  # leave nothing pending

        asyncio.run(main())

    @pytest.mark.parametrize(("msg", "expected"), [(None, None), ("why", "why"), ("", None)])
    def test_message_of_the_cancelled_destination(
        self, msg: Optional[str], expected: Optional[str]
    ) -> None:
        async def main() -> CancellableFuture[int]:
            source: CancellableFuture[int] = CancellableFuture()
            destination = asyncio.wrap_future(source)
            assert cancel_message(source) is None  # not cancelled yet
            destination.cancel(msg)
            assert cancel_message(source) == expected
            await until(source.done, "asyncio to cancel the source")  # a loop turn
            return source

        source = asyncio.run(main())
        assert source.cancelled()
        assert source.token.reason == (expected or "cancel")

    def test_non_str_message_is_no_reason(self) -> None:
        async def main() -> CancellableFuture[int]:
            source: CancellableFuture[int] = CancellableFuture()
            asyncio.wrap_future(source).cancel(42)
            await until(source.done, "asyncio to cancel the source")
            return source

        assert asyncio.run(main()).token.reason == "cancel"


def impostor(destination: object) -> Callable[[object], None]:
    """A callback named like asyncio's, holding *destination*: internals that changed."""

    def _call_set_state(source: object) -> None:
        del source
        id(destination)  # a closure over it, as asyncio's

    _call_set_state.__module__ = "asyncio.futures"
    _call_set_state.__qualname__ = "_chain_future.<locals>._call_set_state"
    return _call_set_state


class CancelledError(Exception):
    """Stands for asyncio's, matched by name."""


class FakeDestination:
    def __init__(self, error: Optional[BaseException]) -> None:
        self.error = error

    def cancelled(self) -> bool:
        return self.error is not None

    def exception(self) -> None:
        if self.error is not None:
            raise self.error


class TestCancelMessageNeverRaises:
    def with_callback(self, callback: Callable[[Any], object]) -> CancellableFuture[int]:
        future: CancellableFuture[int] = CancellableFuture()
        future.add_done_callback(callback)
        return future

    def test_no_callbacks(self) -> None:
        assert cancel_message(CancellableFuture()) is None

    def test_unrelated_callbacks(self) -> None:
        assert cancel_message(self.with_callback(print)) is None
        assert cancel_message(self.with_callback(lambda f: None)) is None

    def test_a_message_read_by_name(self) -> None:
        future = self.with_callback(impostor(FakeDestination(CancelledError("why"))))
        assert cancel_message(future) == "why"
        assert future.cancel()
        assert future.token.reason == "why"

    @pytest.mark.parametrize(
        "destination",
        [
            object(),  # no cancelled()
            FakeDestination(None),  # not cancelled
            FakeDestination(RuntimeError("boom")),  # not a CancelledError
            FakeDestination(CancelledError()),  # no message
            FakeDestination(CancelledError(42)),  # not a str
        ],
        ids=["not-a-future", "not-cancelled", "other-error", "no-message", "non-str"],
    )
    def test_surprises_give_none(self, destination: object) -> None:
        future = self.with_callback(impostor(destination))
        assert cancel_message(future) is None
        assert future.cancel()
        assert future.token.reason == "cancel"

    def test_missing_closure_variable(self) -> None:
        def _call_set_state(source: object) -> None:
            del source

        _call_set_state.__module__ = "asyncio.futures"
        _call_set_state.__qualname__ = "_chain_future.<locals>._call_set_state"
        future = self.with_callback(_call_set_state)
        with pytest.raises(ValueError, match="not in tuple"):
            chained_destinations(future)
        assert cancel_message(future) is None
        assert future.cancel()
        assert future.token.reason == "cancel"

"""Hooks on ``submit()`` see every task: ``map()``'s, its refills', and views'.

Two hooks from the wild, written out here: tqdm's ``thread_map`` wraps ``submit`` on the
executor instance to count progress; dask's ``ContextAwareThreadPoolExecutor`` overrides
``submit`` to run each task in a copy of the submitter's ``contextvars`` context. Both
expect what the stdlib gives them, a ``map()`` that calls ``self.submit(fn, *args)``.
A view's tasks (``with_options()``) pass through the hooks too, and keep the view's
options even when the hook wraps ``fn``; the options never reach another task.
"""

from __future__ import annotations

import contextvars
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor, wait
from typing import Any, Callable, TypeVar

import pytest

from cancelpool import (
    CancellableFuture,
    CancellableThreadPoolExecutor,
    CancelSource,
    DeadlineExceeded,
    ExecutorView,
    TaskOptions,
    current_token,
)
from cancelpool._timer import ManualScheduler

from .conftest import WAIT, ExecutorClass

T = TypeVar("T")

#: What the context-carrying executors pass on from the submitting thread to the task.
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


def items(n: int) -> Iterator[int]:
    """An iterable of unknown length (a generator), as ``thread_map`` often gets."""
    yield from range(n)


def map_keywords(cls: ExecutorClass, buffersize: int | None) -> dict[str, Any]:
    """``map()``'s keywords; skips *buffersize* on a stdlib without it (before 3.14)."""
    if buffersize is None:
        return {}
    if cls is ThreadPoolExecutor and sys.version_info < (3, 14):
        pytest.skip("the stdlib's map() takes buffersize from 3.14")
    return {"buffersize": buffersize}


def set_submit(ex: ThreadPoolExecutor, hook: Callable[..., Future[Any]]) -> None:
    """Patch *hook* over *ex*'s ``submit``, on the instance."""
    ex.submit = hook  # type: ignore[method-assign]


def unset_submit(ex: ThreadPoolExecutor) -> None:
    """Remove the instance's patch: ``submit`` is the class's again."""
    del vars(ex)["submit"]


def options_of(future: Future[Any]) -> TaskOptions | None:
    """The per-task options the executor gave *future*'s task (None: none)."""
    assert isinstance(future, CancellableFuture)
    return future._options


def wrap_submit(ex: ThreadPoolExecutor, *, fold: bool = False) -> list[Future[Any]]:
    """Wrap *ex*'s ``submit`` on the instance, as tqdm's ``thread_map`` does.

    Args:
        ex: The executor to patch.
        fold: Fold ``fn`` and its arguments into a closure and submit that (a hook that
            wraps ``fn``), instead of passing them on unchanged.

    Returns:
        The list of the futures the wrapper returned, in call order.
    """
    submitted: list[Future[Any]] = []
    original = ex.submit

    def submit(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        # A hook that wraps fn (fold) or passes it on as it came.
        future = original(lambda: fn(*args, **kwargs)) if fold else original(fn, *args, **kwargs)
        submitted.append(future)
        return future

    set_submit(ex, submit)
    return submitted


class StdlibInContext(ThreadPoolExecutor):
    """dask's ``ContextAwareThreadPoolExecutor``: each task runs in its submitter's context."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.submitted: list[Future[Any]] = []

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = super().submit(contextvars.copy_context().run, fn, *args, **kwargs)
        self.submitted.append(future)
        return future


class OursInContext(CancellableThreadPoolExecutor):
    """The same override, on our class."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.submitted: list[Future[Any]] = []

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> CancellableFuture[T]:
        future: CancellableFuture[T] = super().submit(
            contextvars.copy_context().run, fn, *args, **kwargs
        )
        self.submitted.append(future)
        return future


def in_context(cls: ExecutorClass) -> type[StdlibInContext] | type[OursInContext]:
    return StdlibInContext if cls is ThreadPoolExecutor else OursInContext


def tag_and_request_id(x: int) -> tuple[int, str]:
    return x, request_id.get()


def wait_on_token(started: threading.Semaphore) -> str:
    """A task that runs until it is cancelled (or WAIT passes)."""
    started.release()
    token = current_token()
    token.wait(WAIT)
    token.raise_if_cancelled()
    return "not cancelled"


# ---------------------------------------------------------------- both classes


@pytest.mark.parametrize("buffersize", [None, 1, 3])
def test_an_instance_wrapper_counts_every_map_call(
    executor_class: ExecutorClass, buffersize: int | None
) -> None:
    # tqdm's thread_map: the bar counts the wrapper's calls; it must reach the length.
    keywords = map_keywords(executor_class, buffersize)
    with executor_class(max_workers=2) as ex:
        submitted = wrap_submit(ex)
        assert list(ex.map(abs, items(25), **keywords)) == list(range(25))
    assert len(submitted) == 25


@pytest.mark.parametrize("buffersize", [None, 1, 3])
def test_a_context_carrying_subclass_sees_every_map_call(
    executor_class: ExecutorClass, buffersize: int | None
) -> None:
    keywords = map_keywords(executor_class, buffersize)
    with in_context(executor_class)(max_workers=2) as ex:
        token = request_id.set("r-42")
        try:
            results = list(ex.map(tag_and_request_id, items(10), **keywords))
        finally:
            request_id.reset(token)
    # Every call went through the override, so every task ran in the caller's context.
    assert results == [(i, "r-42") for i in range(10)]
    assert len(ex.submitted) == 10


def test_a_hook_that_raises_stops_map(executor_class: ExecutorClass) -> None:
    with executor_class(max_workers=1) as ex:
        original = ex.submit
        calls: list[int] = []

        def refusing(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
            calls.append(args[0])
            if len(calls) == 3:
                raise RuntimeError("refused")
            return original(fn, *args, **kwargs)

        set_submit(ex, refusing)
        with pytest.raises(RuntimeError, match="refused"):
            ex.map(abs, items(5))
        assert calls == [0, 1, 2]  # nothing submitted after the failing call


# ---------------------------------------------------------------- views (ours)

HOOKS = ["instance", "instance-folding-fn", "subclass-in-context"]


@pytest.fixture(params=HOOKS)
def hooked(
    request: pytest.FixtureRequest, manual_clock: ManualScheduler
) -> Iterator[tuple[CancellableThreadPoolExecutor, list[Future[Any]]]]:
    """Our executor with a hook on submit (three kinds), and the futures the hook returned.

    On the fake clock (``manual_clock``): deadlines pass when the test advances it.
    """
    ex: CancellableThreadPoolExecutor
    if request.param == "subclass-in-context":
        ex = OursInContext(max_workers=2)
        submitted = ex.submitted
    else:
        ex = CancellableThreadPoolExecutor(max_workers=2)
        submitted = wrap_submit(ex, fold=request.param == "instance-folding-fn")
    try:
        yield ex, submitted
    finally:
        ex.shutdown(wait=True, cancel_futures=True, timeout=WAIT)


def assert_all_cancelled(futures: list[Future[Any]]) -> None:
    done, not_done = wait(futures, timeout=WAIT)
    assert not not_done
    assert all(future.cancelled() for future in done)


class TestViewsThroughHooks:
    def test_submit_keeps_the_views_token(
        self, hooked: tuple[CancellableThreadPoolExecutor, list[Future[Any]]]
    ) -> None:
        ex, submitted = hooked
        source = CancelSource()
        view = ex.with_options(timeout=60.0, force=False, token=source.token)
        started = threading.Semaphore(0)
        future = view.submit(wait_on_token, started)
        assert submitted == [future]
        assert options_of(future) == view.options
        assert started.acquire(timeout=WAIT)
        source.cancel()
        assert future.wait_stopped(WAIT)
        assert future.cancelled()

    @pytest.mark.parametrize("timeout_from", ["start", "submit"])
    def test_submit_keeps_the_views_deadline(
        self,
        hooked: tuple[CancellableThreadPoolExecutor, list[Future[Any]]],
        manual_clock: ManualScheduler,
        timeout_from: str,
    ) -> None:
        ex, submitted = hooked
        view = ex.with_options(timeout=5.0, timeout_from=timeout_from)
        started = threading.Semaphore(0)
        future = view.submit(wait_on_token, started)
        assert submitted == [future]
        assert started.acquire(timeout=WAIT)
        manual_clock.advance(4.999)
        assert not future.done()
        manual_clock.advance(0.001)
        exc = future.exception(WAIT)
        assert isinstance(exc, DeadlineExceeded) and exc.counted_from == timeout_from
        assert future.wait_stopped(WAIT)

    def test_map_keeps_the_views_token(
        self, hooked: tuple[CancellableThreadPoolExecutor, list[Future[Any]]]
    ) -> None:
        ex, submitted = hooked
        source = CancelSource()
        view = ex.with_options(timeout=60.0, token=source.token)
        started = threading.Semaphore(0)
        results = view.map(wait_on_token, [started] * 4)  # 2 run, 2 queued
        assert len(submitted) == 4
        assert all(options_of(future) == view.options for future in submitted)
        assert started.acquire(timeout=WAIT) and started.acquire(timeout=WAIT)
        source.cancel()
        assert_all_cancelled(submitted)
        with pytest.raises(CancelledError):
            next(results)

    def test_map_with_buffersize_keeps_the_views_options(
        self, hooked: tuple[CancellableThreadPoolExecutor, list[Future[Any]]]
    ) -> None:
        # The refills (submitted as results are taken) go through the hook with them too.
        ex, submitted = hooked
        source = CancelSource()
        view = ex.with_options(timeout=60.0, token=source.token)
        results = view.map(abs, items(7), buffersize=2)
        assert len(submitted) == 2
        assert list(results) == list(range(7))
        assert len(submitted) == 7
        assert all(options_of(future) == view.options for future in submitted)
        # Linked to the token: a refill submitted after the group's cancel is cancelled.
        source.cancel()
        results = view.map(abs, items(3), buffersize=1)
        with pytest.raises(CancelledError):
            next(results)
        assert_all_cancelled(submitted[7:])

    def test_a_plain_submit_after_a_view_gets_the_executors_defaults(
        self, hooked: tuple[CancellableThreadPoolExecutor, list[Future[Any]]]
    ) -> None:
        ex, submitted = hooked
        source = CancelSource()
        source.cancel()  # a task that got this token would be cancelled at once
        view = ex.with_options(timeout=60.0, token=source.token)
        assert view.submit(abs, -1).cancelled()
        with pytest.raises(CancelledError):
            next(view.map(abs, [-1, -2], buffersize=1))
        assert all(future.cancelled() for future in submitted)
        plain = ex.submit(abs, -3)
        assert plain.result(WAIT) == 3
        assert options_of(plain) is None
        assert list(ex.map(abs, [-4, -5])) == [4, 5]

    def test_a_view_of_a_context_carrying_subclass_carries_the_context(
        self, manual_clock: ManualScheduler
    ) -> None:
        with OursInContext(max_workers=2) as ex:
            view: ExecutorView = ex.with_options(timeout=60.0)
            token = request_id.set("r-7")
            try:
                assert view.submit(tag_and_request_id, 1).result(WAIT) == (1, "r-7")
                assert list(view.map(tag_and_request_id, items(3), buffersize=1)) == [
                    (0, "r-7"),
                    (1, "r-7"),
                    (2, "r-7"),
                ]
            finally:
                request_id.reset(token)
        assert len(ex.submitted) == 4
        assert all(options_of(future) == view.options for future in ex.submitted)


class TestNoLeaks:
    """The options reach the view's task and no other, whatever the hook does."""

    def test_a_hook_that_raises(self, executor: CancellableThreadPoolExecutor) -> None:
        source = CancelSource()
        source.cancel()  # a task that got this token would be cancelled at once
        view = executor.with_options(timeout=60.0, token=source.token)

        def raising(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
            raise RuntimeError("hook failed")

        set_submit(executor, raising)
        with pytest.raises(RuntimeError, match="hook failed"):
            view.submit(abs, -1)
        with pytest.raises(RuntimeError, match="hook failed"):
            view.map(abs, [-1])
        unset_submit(executor)
        plain = executor.submit(abs, -2)
        assert plain.result(WAIT) == 2
        assert options_of(plain) is None

    def test_a_hook_that_raises_on_a_refill(self, executor: CancellableThreadPoolExecutor) -> None:
        source = CancelSource()
        view = executor.with_options(timeout=60.0, token=source.token)
        results = view.map(abs, items(5), buffersize=1)
        original = executor.submit

        def raising(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
            raise RuntimeError("hook failed")

        set_submit(executor, raising)
        with pytest.raises(RuntimeError, match="hook failed"):
            next(results)
        set_submit(executor, original)
        source.cancel()
        plain = executor.submit(abs, -2)
        assert plain.result(WAIT) == 2
        assert options_of(plain) is None

    def test_a_hook_that_never_calls_the_original(
        self, executor: CancellableThreadPoolExecutor
    ) -> None:
        source = CancelSource()
        source.cancel()
        view = executor.with_options(timeout=60.0, token=source.token)
        original = executor.submit

        def answering(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
            future: Future[Any] = Future()  # a future of another kind, answered at once
            future.set_result(fn(*args, **kwargs))
            return future

        set_submit(executor, answering)
        assert view.submit(abs, -1).result(0) == 1
        assert list(view.map(abs, [-1, -2], buffersize=1)) == [1, 2]
        # map() cancels such futures too (without the reason keyword they do not take).
        results = view.map(abs, [-3, -4])
        results.close()  # type: ignore[attr-defined]
        set_submit(executor, original)
        plain = executor.submit(abs, -2)
        assert plain.result(WAIT) == 2
        assert options_of(plain) is None
        assert executor.statistics().submitted == 1

    def test_a_done_callback_run_by_the_hook_submits_with_the_defaults(
        self, executor: CancellableThreadPoolExecutor
    ) -> None:
        # The hook calls the original (which takes the options), then adds a callback to
        # the future, already done (cancelled by the group's token): it runs at once, in
        # this thread, still inside the view's call, and submits a task of its own.
        source = CancelSource()
        source.cancel()
        view = executor.with_options(timeout=60.0, token=source.token)
        original = executor.submit
        from_callback: list[Future[Any]] = []

        def hook(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
            future = original(fn, *args, **kwargs)
            if not from_callback:
                future.add_done_callback(lambda _: from_callback.append(executor.submit(abs, -5)))
            return future

        set_submit(executor, hook)
        assert view.submit(abs, -1).cancelled()
        (inner,) = from_callback
        assert inner.result(WAIT) == 5  # not cancelled: it did not get the view's token
        assert options_of(inner) is None

    def test_a_view_used_inside_a_hook_before_the_original(
        self, executor: CancellableThreadPoolExecutor
    ) -> None:
        # Nested views: each task gets its own view's options.
        outer = executor.with_options(timeout=60.0)
        inner = executor.with_options(timeout=30.0)
        original = executor.submit
        from_hook: list[Future[Any]] = []
        mapped: list[int] = []
        calls = 0

        def hook(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
            nonlocal calls
            calls += 1
            if calls == 1:  # the outer view's call; the nested ones come here too
                from_hook.append(inner.submit(abs, -2))
                mapped.extend(executor.map(abs, [-3]))  # plain, and run to the end
            return original(fn, *args, **kwargs)

        set_submit(executor, hook)
        future = outer.submit(abs, -1)
        assert options_of(future) == outer.options
        assert options_of(from_hook[0]) == inner.options
        assert future.result(WAIT) == 1 and from_hook[0].result(WAIT) == 2
        assert mapped == [3]
        assert calls == 3

    def test_a_hook_that_submits_to_another_executor_first(
        self, executor: CancellableThreadPoolExecutor
    ) -> None:
        view = executor.with_options(timeout=60.0)
        original = executor.submit
        with CancellableThreadPoolExecutor(max_workers=1) as other:
            elsewhere: list[CancellableFuture[Any]] = []

            def hook(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
                elsewhere.append(other.submit(abs, -2))
                return original(fn, *args, **kwargs)

            set_submit(executor, hook)
            future = view.submit(abs, -1)
            assert options_of(future) == view.options
            assert options_of(elsewhere[0]) is None
            assert elsewhere[0].result(WAIT) == 2

    def test_another_thread_never_sees_them(self, executor: CancellableThreadPoolExecutor) -> None:
        # A plain submit made by another thread while the view's call is in its hook.
        view = executor.with_options(timeout=60.0)
        original = executor.submit
        from_thread: list[CancellableFuture[Any]] = []

        def hook(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
            thread = threading.Thread(target=lambda: from_thread.append(original(abs, -2)))
            thread.start()
            thread.join(WAIT)
            return original(fn, *args, **kwargs)

        set_submit(executor, hook)
        future = view.submit(abs, -1)
        assert options_of(future) == view.options
        assert options_of(from_thread[0]) is None
        assert from_thread[0].result(WAIT) == 2

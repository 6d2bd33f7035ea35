"""Worker start-up as the stdlib's of the same Python: initializer, worker context, BROKEN.

3.14 moved worker start-up into ``concurrent.futures.thread.WorkerContext``
(``prepare_context``; see ``cancelpool._compat``). Each test runs against the stdlib
class and ours, subclassed the same way, so a difference is a broken drop-in promise.
"""

from __future__ import annotations

import logging
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures.thread import BrokenThreadPool
from typing import Any, Callable

import pytest

from cancelpool import CancellableThreadPoolExecutor

from .conftest import WAIT, ExecutorClass

needs_context = pytest.mark.skipif(
    sys.version_info < (3, 14), reason="the worker-context protocol is 3.14+"
)


def test_initializer_runs_once_in_each_worker_before_its_tasks(
    executor_class: ExecutorClass,
) -> None:
    events: list[tuple[str, int]] = []
    both_running = threading.Barrier(2, timeout=WAIT)

    def init(tag: str) -> None:
        events.append((tag, threading.get_ident()))

    def task() -> int:
        both_running.wait()  # two tasks at once: two workers
        events.append(("task", threading.get_ident()))
        return threading.get_ident()

    with executor_class(max_workers=2, initializer=init, initargs=("init",)) as ex:
        workers = {f.result(WAIT) for f in [ex.submit(task), ex.submit(task)]}
    assert len(workers) == 2
    for ident in workers:
        mine = [tag for tag, thread in events if thread == ident]
        assert mine == ["init", "task"]


def test_unknown_keyword_argument_is_a_type_error(executor_class: ExecutorClass) -> None:
    # 3.9-3.13: __init__ has no **ctxkwargs; 3.14+: prepare_context() refuses it.
    with pytest.raises(TypeError, match="unexpected keyword argument 'flavor'"):
        executor_class(max_workers=1, flavor="vanilla")


@needs_context
def test_non_callable_initializer_is_refused_by_prepare_context(
    executor_class: ExecutorClass,
) -> None:
    with pytest.raises(TypeError, match=r"^initializer must be a callable$"):
        executor_class(max_workers=1, initializer="setup")


@needs_context
def test_initargs_need_not_be_a_tuple(executor_class: ExecutorClass) -> None:
    seen: list[tuple[int, ...]] = []
    with executor_class(
        max_workers=1, initializer=lambda *a: seen.append(a), initargs=[1, 2]
    ) as ex:
        ex.submit(int).result(WAIT)
    assert seen == [(1, 2)]


# ------------------------------------------------------------------ a context of one's own


class RecordingContext:
    """A worker context that records what the worker calls, and in which thread."""

    log: list[tuple[str, Any, int]]

    def __init__(self, log: list[tuple[str, Any, int]], fail: bool) -> None:
        self.log = log
        self.fail = fail

    def _record(self, what: str, detail: Any = None) -> None:
        self.log.append((what, detail, threading.get_ident()))

    def initialize(self) -> None:
        self._record("initialize")
        if self.fail:
            raise RuntimeError("no database")

    def finalize(self) -> None:
        self._record("finalize")

    def run(self, task: tuple[str, Callable[..., Any], tuple[Any, ...]]) -> Any:
        tag, fn, args = task  # the shape our resolver gave it
        self._record("run", tag)
        return fn(*args)


def with_context(base: Any, log: list[tuple[str, Any, int]], *, fail: bool = False) -> Any:
    """A subclass of *base* whose prepare_context() makes RecordingContexts."""

    def prepare_context(
        cls: type, initializer: Any, initargs: Any, *, flavor: str = "plain"
    ) -> tuple[Callable[[], RecordingContext], Callable[..., Any]]:
        log.append(("prepare", (initializer, initargs, flavor), threading.get_ident()))

        def resolve(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if fn is divmod:
                raise ValueError("divmod is not welcome here")
            log.append(("resolve", fn, threading.get_ident()))
            return (f"{flavor}:{fn.__name__}", fn, args)

        return (lambda: RecordingContext(log, fail)), resolve

    namespace: dict[str, Any] = {"prepare_context": classmethod(prepare_context)}
    return type(f"Recording{base.__name__}", (base,), namespace)


@needs_context
def test_a_subclass_prepare_context_is_honoured(executor_class: ExecutorClass) -> None:
    log: list[tuple[str, Any, int]] = []
    me = threading.get_ident()
    gate = threading.Event()
    cls = with_context(executor_class, log)
    ex = cls(max_workers=1, flavor="mint")
    first = ex.submit(gate.wait, WAIT)
    second = ex.submit(pow, 2, 5)
    # Both tasks were resolved at submit, in the submitting thread, before the second ran.
    assert [(what, thread) for what, _, thread in log if what == "resolve"] == [
        ("resolve", me),
        ("resolve", me),
    ]
    assert not second.done()
    gate.set()
    assert first.result(WAIT) is True
    assert second.result(WAIT) == 32
    ex.shutdown(wait=True)
    assert log[0] == ("prepare", (None, (), "mint"), me)
    worker = [(what, detail) for what, detail, thread in log if thread != me]
    assert worker == [
        ("initialize", None),
        ("run", "mint:wait"),
        ("run", "mint:pow"),
        ("finalize", None),  # when the worker exits
    ]


@needs_context
def test_a_resolver_error_is_raised_by_submit(executor_class: ExecutorClass) -> None:
    log: list[tuple[str, Any, int]] = []
    with with_context(executor_class, log)(max_workers=1) as ex:
        with pytest.raises(ValueError, match="divmod is not welcome here"):
            ex.submit(divmod, 7, 2)
        assert ex.submit(pow, 3, 2).result(WAIT) == 9
    assert [detail for what, detail, _ in log if what == "run"] == ["plain:pow"]


@needs_context
def test_a_failing_context_breaks_the_pool_without_finalize(
    executor_class: ExecutorClass, caplog: pytest.LogCaptureFixture
) -> None:
    log: list[tuple[str, Any, int]] = []
    ex = with_context(executor_class, log, fail=True)(max_workers=1)
    with caplog.at_level(logging.CRITICAL, logger="concurrent.futures"):
        future = ex.submit(pow, 2, 2)
        with pytest.raises(BrokenThreadPool):
            future.result(WAIT)
    ex.shutdown(wait=True)
    assert any("Exception in initializer" in r.getMessage() for r in caplog.records)
    assert [what for what, _, _ in log if what in ("initialize", "run", "finalize")] == [
        "initialize"
    ]


class NoDatabase(BrokenThreadPool):
    """What the subclasses below raise when broken (3.14's ``BROKEN``)."""


def test_broken_is_the_class_attribute(
    executor_class: ExecutorClass, caplog: pytest.LogCaptureFixture
) -> None:
    if sys.version_info < (3, 14) and executor_class is ThreadPoolExecutor:
        pytest.skip("the stdlib's BROKEN is 3.14+ (ours honours it on every version)")

    def init() -> None:
        raise RuntimeError("no database")

    base: Any = executor_class
    cls: Any = type("NoDatabasePool", (base,), {"BROKEN": NoDatabase})
    ex = cls(max_workers=1, initializer=init)
    with caplog.at_level(logging.CRITICAL, logger="concurrent.futures"):
        future = ex.submit(int)
        with pytest.raises(NoDatabase):  # the queued task, failed by the worker
            future.result(WAIT)
    with pytest.raises(NoDatabase):  # submit() of a broken pool
        ex.submit(int)
    ex.shutdown(wait=True)


def test_ours_defines_broken_on_every_version() -> None:
    assert CancellableThreadPoolExecutor.BROKEN is BrokenThreadPool


@needs_context
def test_the_interpreter_pool_context_works_in_ours(caplog: pytest.LogCaptureFixture) -> None:
    # InterpreterPoolExecutor is the stdlib's own subclass of the protocol: its context
    # runs each task in a subinterpreter of the worker's own, closed at finalize().
    interpreter = pytest.importorskip("concurrent.futures.interpreter")
    namespace = {
        "BROKEN": interpreter.BrokenInterpreterPool,
        "prepare_context": vars(interpreter.InterpreterPoolExecutor)["prepare_context"],
    }
    cls: Any = type("Interpreters", (CancellableThreadPoolExecutor,), namespace)
    with cls(max_workers=2) as ex:
        assert [f.result(WAIT) for f in [ex.submit(pow, 2, 5), ex.submit(divmod, 7, 2)]] == [
            32,
            (3, 1),
        ]
    ex = cls(max_workers=1, initializer=int, initargs=("x",))  # int("x") raises there
    with caplog.at_level(logging.CRITICAL, logger="concurrent.futures"):
        future = ex.submit(pow, 2, 2)
        with pytest.raises(interpreter.BrokenInterpreterPool):
            future.result(WAIT)
    ex.shutdown(wait=True)


@pytest.mark.skipif(
    sys.implementation.name != "cpython", reason="only CPython frees objects without its GC"
)
def test_a_stopped_worker_is_freed_without_the_collector() -> None:
    # As the stdlib's: once shut down and dropped, nothing keeps a pool's threads alive
    # in a reference cycle (CPython's own tests count a thread still referenced after
    # its test as dangling, and they do not run the collector first).
    import gc
    import weakref

    gc.disable()
    try:
        ex = CancellableThreadPoolExecutor(max_workers=2)
        both_running = threading.Barrier(2, timeout=WAIT)
        for future in [ex.submit(both_running.wait), ex.submit(both_running.wait)]:
            future.result(WAIT)
        workers = [weakref.ref(worker) for worker in ex._threads]
        ex.shutdown(wait=True)
        del ex, future
        assert len(workers) == 2
        assert [ref() for ref in workers] == [None, None]
    finally:
        gc.enable()


@pytest.mark.skipif(
    sys.implementation.name != "cpython", reason="only CPython frees objects without its GC"
)
def test_a_failed_future_and_its_worker_are_freed_without_the_collector(
    executor_class: ExecutorClass,
) -> None:
    # The task's exception holds its traceback, whose frames include the one the worker
    # called the task from: that frame must not hold the future (the stdlib's
    # _WorkItem.run() drops its references for the same reason).
    import gc
    import weakref

    gc.disable()
    try:
        ex = executor_class(max_workers=1)
        failed = ex.submit(int, "not a number")
        assert isinstance(failed.exception(WAIT), ValueError)
        (worker,) = [weakref.ref(thread) for thread in ex._threads]
        ex.shutdown(wait=True)
        del ex
        future = weakref.ref(failed)
        del failed
        assert future() is None
        assert worker() is None
    finally:
        gc.enable()

"""The private stdlib internals cancelpool depends on (see cancelpool._compat) still exist.

If one of these fails on a new Python, _compat is the one place to adapt.
"""

from __future__ import annotations

import _thread
import queue
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from cancelpool import _compat

from .conftest import WAIT

PY = "Python " + ".".join(map(str, sys.version_info[:3]))
#: Where cancelpool expects 3.14's worker-context protocol (see cancelpool._compat).
CONTEXT_VERSIONS = sys.version_info >= (3, 14)


def test_future_state_strings() -> None:
    states = [
        _compat.PENDING,
        _compat.RUNNING,
        _compat.CANCELLED,
        _compat.CANCELLED_AND_NOTIFIED,
        _compat.FINISHED,
    ]
    assert states == ["PENDING", "RUNNING", "CANCELLED", "CANCELLED_AND_NOTIFIED", "FINISHED"], (
        f"{PY}: concurrent.futures._base future states changed; adapt cancelpool._compat"
    )


def test_future_private_fields() -> None:
    future: Future[int] = Future()
    fields = {
        "_state": getattr(future, "_state", None) == _compat.PENDING,
        "_condition": isinstance(getattr(future, "_condition", None), threading.Condition),
        "_waiters": getattr(future, "_waiters", None) == [],
        "_done_callbacks": getattr(future, "_done_callbacks", None) == [],
        "_invoke_callbacks": callable(getattr(future, "_invoke_callbacks", None)),
        "_result": getattr(future, "_result", 0) is None,
        "_exception": getattr(future, "_exception", 0) is None,
    }
    changed = sorted(name for name, ok in fields.items() if not ok)
    assert not changed, f"{PY}: Future fields changed: {changed}; adapt cancelpool._compat"


def test_bound_futures_get_the_base_attributes_in_the_base_order() -> None:
    # CancellableFuture._for_task sets Future.__init__'s attributes itself (with a
    # FutureCondition): the stdlib's list must not have changed under it.
    from cancelpool._future import CancellableFuture
    from cancelpool._stats import SharedCounts

    base = list(vars(Future()))
    bound = CancellableFuture._for_task(SharedCounts(), None)
    assert list(vars(bound))[: len(base)] == base
    assert isinstance(bound._condition, threading.Condition)


def test_future_condition_behaves_as_the_stdlib_condition() -> None:
    # The RLock methods FutureCondition calls through its class exist everywhere.
    from cancelpool._condition import FutureCondition

    lock = threading.RLock()
    for name in ("_is_owned", "_release_save", "_acquire_restore"):
        assert callable(getattr(lock, name)), name
    cond = FutureCondition()
    assert not cond._is_owned()
    with cond:
        with cond:  # re-entrant
            assert cond._is_owned()
            assert not cond.wait(0.001)  # releases both levels, then restores them
            assert cond._is_owned()
        cond.notify_all()
    assert not cond._is_owned()
    with pytest.raises(RuntimeError):
        cond.notify()  # not owned: the stdlib's error
    assert cond.acquire(timeout=1.0)
    cond.release()
    woken = threading.Event()

    def waiter() -> None:
        with cond:
            ready.set()
            if cond.wait(WAIT):
                woken.set()

    ready = threading.Event()
    thread = threading.Thread(target=waiter)
    thread.start()
    assert ready.wait(WAIT)
    with cond:  # the waiter is inside wait() once we hold the lock
        cond.notify_all()
    thread.join(WAIT)
    assert woken.is_set()


def test_thread_pool_attributes_set_by_init() -> None:
    ex = ThreadPoolExecutor(max_workers=2)
    start_up = (
        ("_create_worker_context", "_resolve_work_item_task")
        if CONTEXT_VERSIONS
        else ("_initializer", "_initargs")
    )
    for name in (
        "_max_workers", "_work_queue", "_idle_semaphore", "_threads", "_broken",
        "_shutdown", "_shutdown_lock", "_thread_name_prefix", *start_up,
    ):  # fmt: skip
        assert hasattr(ex, name), (
            f"{PY}: ThreadPoolExecutor.__init__ no longer sets {name}; adapt cancelpool._compat"
        )
    ex.shutdown()


# ------------------------------------------------------------------ worker start-up


def test_worker_start_up_protocol_is_the_one_expected_for_this_version() -> None:
    expected = "the worker-context protocol" if CONTEXT_VERSIONS else "_initializer/_initargs"
    assert _compat.WORKER_CONTEXT is CONTEXT_VERSIONS, (
        f"{PY}: ThreadPoolExecutor.prepare_context is "
        f"{'present' if _compat.WORKER_CONTEXT else 'missing'}; cancelpool._compat expects "
        f"workers to start through {expected} on this version: adapt it"
    )


@pytest.mark.skipif(CONTEXT_VERSIONS, reason="3.14+ starts workers through a context")
def test_initializer_attributes_before_3_14() -> None:
    calls: list[tuple[Any, ...]] = []
    ex = ThreadPoolExecutor(1, initializer=lambda *a: calls.append(a), initargs=(1, 2))
    ctx = _compat.new_worker_context(ex)
    assert isinstance(ctx, _compat.InitializerContext)
    ctx.initialize()
    ctx.finalize()
    assert calls == [(1, 2)]
    assert _compat.context_runner(ctx) is None
    assert _compat.task_resolver(ex) is None
    assert _compat.CONTEXT_RUN_CODE is None
    ex.shutdown()
    with pytest.raises(TypeError, match="unexpected keyword argument 'flavor'"):
        _compat.reject_context_kwargs(ThreadPoolExecutor, {"flavor": 1})


@pytest.mark.skipif(not CONTEXT_VERSIONS, reason="the worker-context protocol is 3.14+")
def test_worker_context_protocol_names() -> None:
    import concurrent.futures.thread as stdlib_thread

    def check(ok: bool, detail: str) -> None:
        assert ok, f"{PY}: {detail}; cancelpool._compat expects it on 3.14+: adapt it"

    context_cls = getattr(stdlib_thread, "WorkerContext", None)
    check(context_cls is not None, "concurrent.futures.thread.WorkerContext is missing")
    for name in ("prepare", "initialize", "finalize", "run"):
        check(callable(getattr(context_cls, name, None)), f"WorkerContext.{name} is missing")
    prepare = vars(ThreadPoolExecutor).get("prepare_context")
    check(
        isinstance(prepare, classmethod),
        "ThreadPoolExecutor.prepare_context is no longer a classmethod",
    )
    check(
        getattr(ThreadPoolExecutor, "BROKEN", None) is _compat.BrokenThreadPool,
        "ThreadPoolExecutor.BROKEN is not BrokenThreadPool",
    )
    with pytest.raises(TypeError, match=r"^initializer must be a callable$"):
        ThreadPoolExecutor.prepare_context("setup", ())  # type: ignore[attr-defined]
    create, resolve = ThreadPoolExecutor.prepare_context(None, ())  # type: ignore[attr-defined]
    check(callable(create) and callable(resolve), "prepare_context() returns no pair of callables")
    check(
        resolve(int, ("7",), {}) == (int, ("7",), {}), "the default task is not (fn, args, kwargs)"
    )


@pytest.mark.skipif(not CONTEXT_VERSIONS, reason="the worker-context protocol is 3.14+")
def test_worker_context_adapter_uses_the_executors_context() -> None:
    import concurrent.futures.thread as stdlib_thread

    calls: list[tuple[Any, ...]] = []
    ex = ThreadPoolExecutor(1, initializer=lambda *a: calls.append(a), initargs=(1, 2))
    ctx = _compat.new_worker_context(ex)
    assert type(ctx) is stdlib_thread.WorkerContext  # type: ignore[attr-defined]
    ctx.initialize()
    assert calls == [(1, 2)]
    resolve = _compat.task_resolver(ex)
    run = _compat.context_runner(ctx)
    assert resolve is not None and run is not None
    assert run(resolve(divmod, (7, 2), {})) == (3, 1)
    ctx.finalize()
    ex.shutdown()
    _compat.reject_context_kwargs(ThreadPoolExecutor, {"flavor": 1})  # passed on, not here


@pytest.mark.skipif(not CONTEXT_VERSIONS, reason="the worker-context protocol is 3.14+")
def test_context_run_is_the_frame_that_calls_the_task() -> None:
    # cancelpool._inject walks a task's stack down to this frame, and may let an
    # interrupt land in it: it must call the task's function itself, and hold nothing.
    import concurrent.futures.thread as stdlib_thread

    code = _compat.CONTEXT_RUN_CODE
    run = stdlib_thread.WorkerContext.run  # type: ignore[attr-defined]
    assert code is not None and code is run.__code__, f"{PY}: WorkerContext.run changed"
    caller = []
    ctx = stdlib_thread.WorkerContext(None, ())  # type: ignore[attr-defined]
    ctx.run((lambda: caller.append(sys._getframe(1).f_code), (), {}))
    assert caller == [code], f"{PY}: WorkerContext.run no longer calls the task's function itself"
    names = set(code.co_names)
    assert not names, f"{PY}: WorkerContext.run now uses {sorted(names)}: check it holds no lock"


def test_worker_thread_attributes_are_not_threads_own() -> None:
    # WorkerThread subclasses threading.Thread: an attribute of ours with the name of one
    # of Thread's private ones replaces it (3.14 added Thread._context, and a worker
    # that set its own _context could not start).
    import inspect
    import re

    from cancelpool._worker import WorkerThread

    ours = set(re.findall(r"self\.(\w+)\s*(?::[^=]*)?=", inspect.getsource(WorkerThread)))
    threads = set(re.findall(r"self\.(\w+)", inspect.getsource(threading.Thread)))
    threads |= set(vars(threading.Thread()))
    clash = ours & threads
    assert not clash, f"{PY}: WorkerThread sets threading.Thread's own {sorted(clash)}"


def test_register_atexit_and_daemon_probe() -> None:
    assert callable(_compat.register_atexit)
    assert isinstance(_compat.daemon_threads_allowed(), bool)


def test_broken_thread_pool_is_public_class() -> None:
    from concurrent.futures import BrokenExecutor

    assert issubclass(_compat.BrokenThreadPool, BrokenExecutor)


# ------------------------------------------------------------------ used by cancelpool._wait


def test_condition_waiter_protocol() -> None:
    """What _wait does: queue our own waiter lock, release, be notified, take back."""
    for cond in (threading.Condition(), threading.Condition(threading.Lock())):
        assert not _compat.condition_is_owned(cond)
        with cond:
            assert _compat.condition_is_owned(cond)
            waiter = _thread.allocate_lock()
            waiter.acquire()
            _compat.condition_waiters(cond).append(waiter)
            saved = _compat.condition_release_save(cond)
            assert not _compat.condition_is_owned(cond)
            notifier = threading.Thread(target=notify, args=(cond,))
            notifier.start()
            assert waiter.acquire(True, 10)  # notify() released it...
            _compat.condition_acquire_restore(cond, saved)
            assert not _compat.condition_waiters(cond)  # ...and removed it
            notifier.join(10)


def notify(cond: threading.Condition) -> None:
    with cond:
        cond.notify()


def test_release_save_undoes_rlock_recursion() -> None:
    cond = threading.Condition()
    cond.acquire()
    cond.acquire()
    saved = _compat.condition_release_save(cond)
    taken: list[bool] = []

    def take() -> None:
        taken.append(cond.acquire(False))
        cond.release()

    other = threading.Thread(target=take)
    other.start()
    other.join(10)
    assert taken == [True]  # fully released
    _compat.condition_acquire_restore(cond, saved)
    cond.release()
    assert _compat.condition_is_owned(cond)  # the recursion level came back
    cond.release()


def test_event_and_future_conditions() -> None:
    event = threading.Event()
    cond = _compat.event_condition(event)
    assert isinstance(cond, threading.Condition)
    with cond:
        waiter = _thread.allocate_lock()
        waiter.acquire()
        _compat.condition_waiters(cond).append(waiter)
    event.set()  # set() notifies the event's condition
    assert waiter.acquire(False)
    future: Future[int] = Future()
    assert _compat.future_condition(future) is future._condition


def test_queue_internals() -> None:
    for cls in (queue.Queue, queue.LifoQueue, queue.PriorityQueue):
        q: queue.Queue[int] = cls(maxsize=1)
        assert isinstance(_compat.queue_not_empty(q), threading.Condition)
        assert cls.get is queue.Queue.get  # queue_get refuses subclasses that override it
        q.put(5)
        putter = threading.Thread(target=q.put, args=(6, True, 10))
        putter.start()
        with _compat.queue_not_empty(q):  # the same lock as q.mutex
            assert not q.mutex.acquire(False)
            assert _compat.queue_size(q) == 1
            while not q.not_full._waiters:  # type: ignore[attr-defined]
                q.not_empty.wait(0.001)  # let the putter block on not_full
            assert _compat.queue_take(q) == 5  # ...and wakes the putter
        putter.join(10)
        assert q.get_nowait() == 6
        assert _compat.queue_is_shutdown(q) is False
    if sys.version_info >= (3, 13):
        assert _compat.QueueShutDown is queue.ShutDown  # type: ignore[attr-defined]
        q.shutdown()  # type: ignore[attr-defined]
        assert _compat.queue_is_shutdown(q) is True
    else:
        assert _compat.QueueShutDown is None

"""The private stdlib internals cancelpool depends on (see cancelpool._compat) still exist.

If one of these fails on a new Python, _compat is the one place to adapt.
"""

from __future__ import annotations

import _thread
import queue
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from cancelpool import _compat

from .conftest import WAIT


def test_future_state_strings() -> None:
    assert [_compat.PENDING, _compat.RUNNING, _compat.FINISHED] == [
        "PENDING",
        "RUNNING",
        "FINISHED",
    ]
    assert _compat.CANCELLED == "CANCELLED"
    assert _compat.CANCELLED_AND_NOTIFIED == "CANCELLED_AND_NOTIFIED"


def test_future_private_fields() -> None:
    future: Future[int] = Future()
    assert future._state == _compat.PENDING
    assert isinstance(future._condition, threading.Condition)
    assert future._waiters == []
    assert future._done_callbacks == []  # type: ignore[attr-defined]
    assert callable(future._invoke_callbacks)  # type: ignore[attr-defined]
    assert future._result is None and future._exception is None


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
    for name in (
        "_max_workers", "_work_queue", "_idle_semaphore", "_threads", "_broken",
        "_shutdown", "_shutdown_lock", "_thread_name_prefix", "_initializer", "_initargs",
    ):  # fmt: skip
        assert hasattr(ex, name), name
    ex.shutdown()


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

"""The private stdlib internals cancelpool depends on (see cancelpool._compat) still exist.

If one of these fails on a new Python, _compat is the one place to adapt.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor

from cancelpool import _compat


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

"""statistics() and the executor's repr."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from cancelpool import CancellableThreadPoolExecutor, ExecutorStatistics, current_token

from .conftest import WAIT


def test_fresh_executor() -> None:
    ex = CancellableThreadPoolExecutor(max_workers=3)
    assert ex.statistics() == ExecutorStatistics(
        max_workers=3, workers=0, submitted=0, pending=0, running=0,
        completed=0, failed=0, cancelled=0, timed_out=0, stopping=0, interrupts=0,
        abandoned_workers=0,
    )  # fmt: skip
    ex.shutdown()


def test_snapshot_is_frozen() -> None:
    ex = CancellableThreadPoolExecutor(max_workers=1)
    stats = ex.statistics()
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.pending = 3  # type: ignore[misc]
    ex.shutdown()


def test_counts_every_state() -> None:
    started = threading.Event()
    release = threading.Event()

    def stubborn() -> None:
        started.set()
        release.wait(WAIT)

    def cooperative() -> None:
        current_token().sleep(WAIT)

    ex = CancellableThreadPoolExecutor(max_workers=2)
    assert ex.submit(int).result(WAIT) == 0
    ex.submit(divmod, 1, 0).exception(WAIT)
    stuck = ex.submit(stubborn)
    assert started.wait(WAIT)
    running = ex.submit(cooperative)
    pending = [ex.submit(int) for _ in range(3)]
    # Wait until the second worker has taken `running` off the queue.
    assert running.running() or running.wait_stopped(0) or _wait_running(running)
    stats = ex.statistics()
    assert (stats.submitted, stats.completed, stats.failed) == (7, 1, 1)
    assert (stats.running, stats.pending, stats.cancelled, stats.stopping) == (2, 3, 0, 0)
    assert stats.workers == 2

    stuck.cancel()
    pending[0].cancel()
    stats = ex.statistics()
    assert (stats.running, stats.pending, stats.cancelled, stats.stopping) == (1, 2, 2, 1)
    assert "stopping=1" in repr(ex) and "open" in repr(ex)

    release.set()
    assert stuck.wait_stopped(WAIT)
    running.cancel()
    assert running.wait_stopped(WAIT)
    ex.shutdown(timeout=WAIT)
    stats = ex.statistics()
    assert stats.stopping == stats.running == stats.pending == 0
    assert (stats.completed, stats.failed, stats.cancelled) == (3, 1, 3)
    assert stats.completed + stats.failed + stats.cancelled == stats.submitted
    assert "shut down" in repr(ex)


def _wait_running(future: object) -> bool:
    from .conftest import wait_for

    wait_for(lambda: future.running(), "the task to start")  # type: ignore[attr-defined]
    return True


def test_broken_pool_counts_failures() -> None:
    def init() -> None:
        raise RuntimeError("init failed")

    ex = CancellableThreadPoolExecutor(max_workers=1, initializer=init)
    future = ex.submit(int)
    future.exception(WAIT)
    stats = ex.statistics()
    assert (stats.failed, stats.pending) == (1, 0)
    assert "broken" in repr(ex)
    ex.shutdown()

"""shutdown() and interpreter exit never hang, even with a task stuck in C code."""

from __future__ import annotations

import socket
import subprocess
import threading
import time

import pytest

import cancelpool
from cancelpool import CancellableThreadPoolExecutor, TaskState

from .conftest import WAIT, run_python, wait_for


def stuck_in_recv(ours: socket.socket, started: threading.Event) -> bytes:
    started.set()
    return ours.recv(16)  # C code: no exception can land until it returns


@pytest.mark.slow
@pytest.mark.skipif(not cancelpool.FORCE_AVAILABLE, reason="needs injection")
def test_forced_shutdown_returns_within_timeout_and_reports_the_straggler() -> None:
    ours, peer = socket.socketpair()
    started = threading.Event()
    ex = CancellableThreadPoolExecutor(max_workers=2, force=True, grace=10.0, abandon_after=60.0)
    stuck = ex.submit(stuck_in_recv, ours, started)
    queued = [ex.submit(pow, 2, i) for i in range(3)]
    assert started.wait(WAIT)
    t0 = time.monotonic()
    with pytest.warns(
        cancelpool.WorkerAbandonedWarning, match="stuck_in_recv.*its worker was abandoned"
    ):
        still_running = ex.shutdown(cancel_futures=True, timeout=0.4)
    elapsed = time.monotonic() - t0
    assert elapsed < 0.4 + 0.5, elapsed  # generous: a loaded CI machine
    assert still_running == (stuck,)
    assert stuck.task_state is TaskState.ABANDONED
    assert all(f.done() for f in queued)
    stats = ex.statistics()
    assert stats.abandoned_workers == 1
    peer.send(b"x")  # let the abandoned thread finish; its pending interrupt lands
    assert stuck.wait_stopped(WAIT)
    ours.close()
    peer.close()


@pytest.mark.skipif(not cancelpool.FORCE_AVAILABLE, reason="needs injection")
def test_forced_shutdown_interrupts_a_busy_loop() -> None:
    started = threading.Event()
    flags = {"run": True}

    def busy() -> None:
        started.set()
        while flags["run"]:
            pass

    ex = CancellableThreadPoolExecutor(max_workers=1)
    future = ex.submit(busy)
    assert started.wait(WAIT)
    try:
        assert ex.shutdown(cancel_futures=True, timeout=WAIT, force=True) == ()
        assert future.task_state is TaskState.STOPPED
        assert ex.statistics().interrupts == 1
    finally:
        flags["run"] = False


def test_shutdown_rejects_bad_force() -> None:
    ex = CancellableThreadPoolExecutor(max_workers=1)
    with pytest.raises(TypeError, match="force must be True or False, got 'yes'"):
        ex.shutdown(force="yes")  # type: ignore[arg-type]
    ex.shutdown()


def run_child(code: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    proc = run_python(code, timeout)
    return proc, time.monotonic() - t0


STUCK_TASK = """
    import threading, time
    from cancelpool import CancellableThreadPoolExecutor
    started = threading.Event()
    def stuck():
        started.set()
        time.sleep(3600)
"""


@pytest.mark.subprocess
def test_program_with_a_stuck_task_exits_after_exit_timeout() -> None:
    proc, elapsed = run_child(
        STUCK_TASK
        + """
    ex = CancellableThreadPoolExecutor(max_workers=1, exit_timeout=0.5)
    ex.submit(stuck)
    started.wait(30)
    print("main done", flush=True)
    """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "main done"
    assert "WorkerAbandonedWarning" in proc.stderr
    assert "the interpreter exits without waiting for it" in proc.stderr
    assert "replaced" not in proc.stderr  # no thread can start at exit (3.12+ refuses)
    assert "stuck()" in proc.stderr
    assert elapsed < 15, elapsed  # the stdlib would wait an hour


@pytest.mark.subprocess
def test_program_exits_promptly_after_a_shutdown_with_timeout() -> None:
    proc, elapsed = run_child(
        STUCK_TASK
        + """
    ex = CancellableThreadPoolExecutor(max_workers=1)
    ex.submit(stuck)
    started.wait(30)
    t0 = time.monotonic()
    print(len(ex.shutdown(cancel_futures=True, timeout=0.3)), round(time.monotonic() - t0, 1))
    """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", "0.3"]
    # The cancelled, stuck task is not waited for at exit.
    assert elapsed < 10, elapsed


BUSY_TASK = """
    import threading
    from cancelpool import CancellableThreadPoolExecutor, _inject
    {setup}
    started = threading.Event()
    def busy():
        started.set()
        while True:
            pass
    ex = CancellableThreadPoolExecutor(max_workers=1, force=True, exit_timeout=0.2)
    ex.submit(busy)
    started.wait(30)
"""


@pytest.mark.subprocess
@pytest.mark.skipif(not cancelpool.FORCE_AVAILABLE, reason="needs injection")
def test_forced_program_exit_interrupts_a_busy_task() -> None:
    proc, elapsed = run_child(BUSY_TASK.format(setup="pass"))
    assert proc.returncode == 0, proc.stderr
    assert "Abandoned" not in proc.stderr  # interrupted, not abandoned
    assert elapsed < 10, elapsed


@pytest.mark.subprocess
def test_program_with_a_busy_task_exits_even_without_injection() -> None:
    # As on an interpreter that cannot inject.
    proc, elapsed = run_child(BUSY_TASK.format(setup="_inject.AVAILABLE = False"))
    assert proc.returncode == 0, proc.stderr
    assert "WorkerAbandonedWarning" in proc.stderr
    assert elapsed < 10, elapsed


def test_exit_timeout_validation() -> None:
    with pytest.raises(ValueError, match=r"exit_timeout must be >= 0 or None, got -1"):
        CancellableThreadPoolExecutor(exit_timeout=-1)
    with pytest.raises(TypeError, match=r"grace must be a number of seconds, got None"):
        CancellableThreadPoolExecutor(grace=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"force must be True or False, got 1"):
        CancellableThreadPoolExecutor(force=1)  # type: ignore[arg-type]


def test_wait_for_helper_is_used() -> None:
    wait_for(lambda: True, "nothing")

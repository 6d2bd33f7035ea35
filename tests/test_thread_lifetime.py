"""No thread of the library outlives its use: workers end at shutdown, the timer when idle.

The timer thread exits once nothing has been scheduled for ``idle_timeout`` seconds
(1 s by default); these tests shorten it, so none waits a real second. The waits are for
threads to have exited (``wait_for``, bounded), never to order events.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest

from cancelpool import CancellableThreadPoolExecutor, CancelSource, _timer, current_token
from cancelpool._timer import Scheduler

from .conftest import WAIT, run_forking_program, run_python, wait_for

IDLE = 0.02


@pytest.fixture
def scheduler(monkeypatch: pytest.MonkeyPatch) -> Iterator[Scheduler]:
    """A real timer (thread, clock) that goes idle after ``IDLE``, for executors made now."""
    timer = Scheduler(idle_timeout=IDLE)
    monkeypatch.setattr(_timer, "_scheduler", timer)
    yield timer
    wait_for(lambda: timer._thread is None, "the test's timer thread to exit")


def library_threads(before: set[threading.Thread]) -> list[str]:
    return [t.name for t in threading.enumerate() if t not in before and t.is_alive()]


def stops_on_cancel(started: threading.Event) -> None:
    started.set()
    current_token().wait(WAIT)


def test_after_shutdown_and_a_quiet_moment_no_thread_is_left(scheduler: Scheduler) -> None:
    before = set(threading.enumerate())
    ex = CancellableThreadPoolExecutor(max_workers=3, grace=0.01)
    started = threading.Event()
    running = ex.submit(stops_on_cancel, started)  # cancelled while it runs: a ladder
    assert started.wait(WAIT)
    assert running.cancel()
    # A deadline counted from submission that never comes (withdrawn when it ends), and
    # a group's cancel_after still pending when the executor shuts down.
    view = ex.with_options(timeout=3600.0, timeout_from="submit")
    assert view.submit(pow, 2, 8).result(WAIT) == 256
    group = CancelSource()
    group.cancel_after(3600.0)
    group.close()  # withdraws it
    assert running.wait_stopped(WAIT)
    assert scheduler._thread is not None or scheduler.starts > 0  # the timer was used
    ex.shutdown(wait=True)
    wait_for(lambda: not library_threads(before), "every thread of the library to exit")
    assert scheduler._thread is None


@pytest.mark.parametrize("timeout_from", ["start", "submit"])
def test_deadlines_of_tasks_that_ended_leave_nothing_scheduled_after_shutdown(
    scheduler: Scheduler, timeout_from: str
) -> None:
    # The executor's one check for deadlines counted from the start stays scheduled
    # after its tasks end (a task that ends in time withdraws nothing); a deadline
    # counted from submission is withdrawn, but stays in the heap until due, and the
    # thread sleeps until it. shutdown() must let them go (DeadlineWatch.close), or the
    # timer thread lives for the hour.
    before = set(threading.enumerate())
    ex = CancellableThreadPoolExecutor(max_workers=2)
    try:
        view = ex.with_options(timeout=3600.0, timeout_from=timeout_from)
        gate = threading.Event()
        future = view.submit(gate.wait, WAIT)
        hour = time.monotonic() + 3000.0
        wait_for(lambda: scheduler._until[0] > hour, "the timer to sleep until the deadline")
        gate.set()
        assert future.result(WAIT) is True
        ex.shutdown(wait=True)
        # Within the bound, not the hour the deadline is away.
        wait_for(lambda: not library_threads(before), "every thread of the library to exit")
    finally:
        ex.shutdown(wait=True)


def test_the_timer_thread_restarts_after_exiting_when_idle(scheduler: Scheduler) -> None:
    ex = CancellableThreadPoolExecutor(max_workers=1, grace=0.0)
    try:
        for round_ in range(3):
            started = threading.Event()
            future = ex.submit(stops_on_cancel, started)
            assert started.wait(WAIT)
            assert future.cancel()
            assert future.wait_stopped(WAIT)
            wait_for(lambda: scheduler._thread is None, "the idle timer thread to exit")
            assert scheduler.starts == round_ + 1
    finally:
        ex.shutdown(wait=True)


CHILD_ASYNCIO = """
    import asyncio, threading, time
    from cancelpool import CancellableThreadPoolExecutor, _timer
    _timer.get_scheduler().idle_timeout = 0.02
    def run():
        time.sleep(0.05)
    async def main():
        loop = asyncio.get_running_loop()
        loop.set_default_executor(CancellableThreadPoolExecutor())
        # CPython's test_run_in_executor_cancel: cancelled while it may be running.
        f = loop.run_in_executor(None, run)
        await asyncio.sleep(0.01)
        f.cancel()
        await loop.shutdown_default_executor()
    asyncio.run(main())
    deadline = time.monotonic() + 10
    while len(threading.enumerate()) > 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    print([t.name for t in threading.enumerate()])
"""


@pytest.mark.subprocess
def test_a_program_that_cancelled_a_running_task_ends_with_its_main_thread_only() -> None:
    proc = run_python(CHILD_ASYNCIO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['MainThread']", (proc.stdout, proc.stderr)
    assert proc.stderr == ""


CHILD_EXIT_AFTER_IDLE = """
    import threading, time, warnings
    from cancelpool import CancellableThreadPoolExecutor, CancelSource, _inject, _timer
    {setup}
    scheduler = _timer.get_scheduler()
    scheduler.idle_timeout = 0.02
    # Use the timer, and let its thread exit before the program ends.
    source = CancelSource()
    source.cancel_after(0.0)
    deadline = time.monotonic() + 10
    while not source.cancelled or scheduler._thread is not None:
        assert time.monotonic() < deadline, "the timer never went idle"
        time.sleep(0.005)
    started = threading.Event()
    def busy():
        started.set()
        while True:
            pass
    ex = CancellableThreadPoolExecutor(max_workers=1, force=True, exit_timeout=0.2,
                                       abandon_after=0.2)
    ex.submit(busy)
    started.wait(30)
    print("starts", scheduler.starts, flush=True)
"""


@pytest.mark.subprocess
@pytest.mark.parametrize("setup", ["pass", "_inject.AVAILABLE = False"], ids=["inject", "abandon"])
def test_exit_hook_escalates_after_the_timer_thread_exited(setup: str) -> None:
    # At exit the hook cancels the busy task (forced); its steps need the timer, whose
    # thread went idle and exited. 3.12+ refuses to start one then: the hook runs the
    # steps itself (run_due_without_thread); older versions start a thread.
    t0 = time.monotonic()
    proc = run_python(CHILD_EXIT_AFTER_IDLE.format(setup=setup))
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "starts 1", (proc.stdout, proc.stderr)
    if setup != "pass" or not __import__("cancelpool").FORCE_AVAILABLE:
        assert "WorkerAbandonedWarning" in proc.stderr
    assert elapsed < 15, elapsed


@pytest.mark.subprocess
def test_a_forked_child_gets_its_own_timer_thread_which_exits_when_idle() -> None:
    if not hasattr(os, "fork"):
        pytest.skip("needs os.fork")
    code = """
        import os, signal, sys, threading, time, warnings
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads, 3.12+
        from cancelpool import _timer
        scheduler = _timer.get_scheduler()
        far = scheduler.call_later(3600.0, lambda: None)  # the parent's thread: asleep
        ran = threading.Event()
        scheduler.call_later(0.0, ran.set)
        ran.wait(30)
        pid = os.fork()
        if pid == 0:
            scheduler.idle_timeout = 0.02
            done = threading.Event()
            scheduler.call_later(0.0, done.set)
            ok = done.wait(10)
            deadline = time.monotonic() + 10
            while threading.active_count() > 1 and time.monotonic() < deadline:
                time.sleep(0.005)
            os._exit(0 if ok and threading.active_count() == 1 else 3)
    """
    after = """
        far.cancel()
    """
    proc = run_forking_program(code, after)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "0", (proc.stdout, proc.stderr)

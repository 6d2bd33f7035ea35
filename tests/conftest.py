"""Shared fixtures: executors of both classes, a thread-leak guard, bounded waits."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import pytest

from cancelpool import CancellableThreadPoolExecutor, _inject, _timer
from cancelpool._timer import ManualScheduler

#: Every blocking wait in a test is bounded by this; a hang becomes a failure, not a
#: frozen CI. Generous: it only has to be finite.
WAIT = 10.0

#: Multiplies the trial counts of the stress campaigns (CI runs the default, 1).
STRESS_SCALE = float(os.environ.get("CANCELPOOL_STRESS_SCALE", "1"))

#: Code for a child program that forked ``pid``: wait for it (20 s at most, then kill it)
#: and print its exit code, or "child hung". Needs ``os``, ``signal`` and ``time``.
REAP_FORKED_CHILD = """
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        print(os.waitstatus_to_exitcode(status))
        break
    time.sleep(0.01)
else:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    print("child hung")
"""


def run_python(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run *code* (dedented) in a child interpreter; output captured, bounded by *timeout*."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_forking_program(code: str, after: str = "") -> subprocess.CompletedProcess[str]:
    """Run *code*, which forks ``pid``, then reap the child (``REAP_FORKED_CHILD``), then *after*.

    Each part is dedented on its own; the child's exit code is the first line of stdout.
    """
    return run_python(textwrap.dedent(code) + REAP_FORKED_CHILD + textwrap.dedent(after))


ExecutorClass = Callable[..., ThreadPoolExecutor]


@pytest.fixture(params=[ThreadPoolExecutor, CancellableThreadPoolExecutor], ids=["stdlib", "ours"])
def executor_class(request: pytest.FixtureRequest) -> ExecutorClass:
    """Both classes, for tests of behaviour the drop-in must share with the stdlib."""
    cls: ExecutorClass = request.param
    return cls


@pytest.fixture
def executor() -> Iterator[CancellableThreadPoolExecutor]:
    """A four-worker executor, shut down (without hanging) after the test."""
    ex = CancellableThreadPoolExecutor(max_workers=4)
    try:
        yield ex
    finally:
        ex.shutdown(wait=True, cancel_futures=True, timeout=WAIT)


@pytest.fixture(autouse=True)
def no_thread_leaks() -> Iterator[None]:
    """Fail a test that leaves threads running after it (waits for exiting workers)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + WAIT
    leaked: list[threading.Thread] = []
    while time.monotonic() < deadline:
        # The timer thread is one per process, started on first use, by design.
        leaked = [
            t
            for t in threading.enumerate()
            if t not in before and t.is_alive() and t.name != "cancelpool-timer"
        ]
        if not leaked:
            return
        leaked[0].join(0.05)
    pytest.fail(f"threads outlived the test: {[t.name for t in leaked]}")


@pytest.fixture(autouse=True)
def _restore_switch_interval() -> Iterator[None]:
    """Put the switch interval back, and fail a test that leaves a thread armed.

    Every arm for a forced interrupt is closed when it lands or when the task's code ends
    (``cancelpool._inject``); a test whose threads have all ended must leave none open,
    or the process-wide monitoring events would stay on in the next test.
    """
    interval = sys.getswitchinterval()
    yield
    sys.setswitchinterval(interval)
    wait_for(lambda: not _inject._armed, "every forced-interrupt arm to be closed")


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Block until *predicate()* is true; fail the test after *timeout* seconds.

    For states with no event to wait on (a thread having exited). Polls with a short
    sleep, and never decides an outcome by sleeping: it only waits for one.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.001)


def wait_collected(ref: Callable[[], object], what: str) -> None:
    """Collect garbage until *ref*'s object is gone; fail the test after ``WAIT``.

    A worker holds its executor strongly for a moment (``_executor_ref()`` when it goes
    idle, and when it starts a task), so one ``gc.collect()`` at that moment still finds
    it alive (seen on PyPy). What a test asserts is that nothing keeps it for good.
    """

    def gone() -> bool:
        gc.collect()
        return ref() is None

    wait_for(gone, what)


@pytest.fixture
def manual_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[ManualScheduler]:
    """Executors created in the test schedule escalation on a fake clock.

    ``manual_clock.advance(seconds)`` runs the steps now due, in the test's thread: no
    sleeping to wait for a grace period, and each step happens exactly when the test says.
    After the test (and after the executors the test's fixtures shut down), the clock
    runs on an hour, so that escalations left waiting on it finish: their tasks have
    stopped by then, and a ladder still looking for a safe point stops looking.
    """
    scheduler = ManualScheduler()
    monkeypatch.setattr(_timer, "_scheduler", scheduler)
    yield scheduler
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the test is over: its warnings were checked
        scheduler.advance(3600.0)

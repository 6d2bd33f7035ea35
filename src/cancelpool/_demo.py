"""``python -m cancelpool demo``: a short, live demonstration with real timings."""

from __future__ import annotations

import platform
import socket
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional, TextIO, Union

from ._compat import FuturesTimeoutError
from ._current import current_token
from ._exceptions import WorkerAbandonedWarning
from ._executor import CancellableThreadPoolExecutor
from ._inject import AVAILABLE as FORCE_AVAILABLE
from ._source import CancelSource
from ._version import __version__

__all__ = ("main",)

# Every wait in the demo is bounded, so it can never hang.
_BOUND = 30.0


def _ms(seconds: float) -> str:
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f} µs"
    return f"{seconds * 1000:.1f} ms"


def main(out: TextIO) -> int:
    """Run the demonstration, printing to *out*; return the exit status."""

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    say(f"cancelpool {__version__} demo on {platform.python_implementation()} "
        f"{platform.python_version()}")  # fmt: skip
    steps = (_cancel_running, _unblock_io, _force, _deadline_and_group, _shutdown_with_timeout)
    for step in steps:
        say()
        step(say)
    say()
    say("Done.")
    return 0


def _cancel_running(say: Callable[[str], None]) -> None:
    say("1. Cancel a task that is already running")
    started = threading.Event()

    def crawl(pages: int) -> int:
        """Cooperative: checks its token between pages."""
        token = current_token()
        started.set()
        done = 0
        for _ in range(pages):
            token.raise_if_cancelled()
            time.sleep(0.001)  # "fetch a page"
            done += 1
        return done

    gate = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as stdlib:
        running = stdlib.submit(gate.wait, _BOUND)
        time.sleep(0.01)
        say(f"   stdlib ThreadPoolExecutor: cancel() of a running task -> {running.cancel()}; "
            "it runs on")  # fmt: skip
        gate.set()

    with CancellableThreadPoolExecutor(max_workers=1) as ex:
        future = ex.submit(crawl, 100_000)
        started.wait(_BOUND)
        t0 = time.perf_counter()
        result = future.cancel()
        t1 = time.perf_counter()
        stopped = future.wait_stopped(_BOUND)
        t2 = time.perf_counter()
        say(f"   cancelpool:                cancel() of a running task -> {result} "
            f"(took {_ms(t1 - t0)}); cancelled() -> {future.cancelled()}")  # fmt: skip
        say(f"   the task saw its token and stopped {_ms(t2 - t1)} later "
            f"(wait_stopped() -> {stopped}); state now {future.task_state.value!r}")  # fmt: skip


def _unblock_io(say: Callable[[str], None]) -> None:
    say("2. Unblock a task stuck in a blocking call, with token.register()")
    ours, theirs = socket.socketpair()
    started = threading.Event()

    def read_forever() -> bytes:
        # The peer never writes; recv() would block for ever. On cancel, the callback
        # shuts the socket down, which makes recv() return at once.
        with current_token().register(lambda: ours.shutdown(socket.SHUT_RDWR)):
            started.set()
            return ours.recv(1024)

    with CancellableThreadPoolExecutor(max_workers=1) as ex:
        future = ex.submit(read_forever)
        started.wait(_BOUND)
        time.sleep(0.01)  # let it block in recv()
        t0 = time.perf_counter()
        future.cancel(reason="user pressed stop")
        stopped = future.wait_stopped(_BOUND)
        say(f"   recv() returned and the task ended {_ms(time.perf_counter() - t0)} after "
            f"cancel() (stopped: {stopped}, reason: {future.token.reason!r})")  # fmt: skip
    ours.close()
    theirs.close()


def _force(say: Callable[[str], None]) -> None:
    say("3. Force-cancel a task that never checks its token")
    started = threading.Event()

    def legacy_loop() -> None:
        started.set()
        while True:  # third-party code: no token, and it swallows every Exception
            try:
                sum(range(100))
            except Exception:  # noqa: BLE001, PERF203 - what the demo is about
                continue

    if not FORCE_AVAILABLE:
        _force_unavailable(say, legacy_loop, started)
        return
    with CancellableThreadPoolExecutor(max_workers=1, force=True, grace=0.1) as ex:
        future = ex.submit(legacy_loop)
        started.wait(_BOUND)
        t0 = time.perf_counter()
        future.cancel()
        stopped = future.wait_stopped(_BOUND)
        say(f"   cancel() with force=True, grace=0.1: TaskInterrupted was raised and the loop "
            f"stopped {_ms(time.perf_counter() - t0)} later (stopped: {stopped})")  # fmt: skip
        say(f"   state {future.task_state.value!r}; interrupts: "
            f"{ex.statistics().interrupts}; the worker took the next task: "
            f"{ex.submit(pow, 2, 10).result(_BOUND) == 1024}")  # fmt: skip


def _force_unavailable(
    say: Callable[[str], None], legacy_loop: Callable[[], None], started: threading.Event
) -> None:
    """Step 3 where no task can be interrupted (PyPy): the worker is abandoned."""
    say("   this interpreter cannot interrupt a task (cancelpool.FORCE_AVAILABLE is False):")
    caught: list[warnings.WarningMessage] = []
    abandoned = threading.Event()

    def record(
        message: Union[Warning, str],
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Optional[TextIO] = None,
        line: Optional[str] = None,
    ) -> None:
        caught.append(warnings.WarningMessage(message, category, filename, lineno, file, line))
        if issubclass(category, WorkerAbandonedWarning):
            abandoned.set()

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        ex = CancellableThreadPoolExecutor(max_workers=1, force=True, grace=0.1, abandon_after=0.2)
        future = ex.submit(legacy_loop)
        started.wait(_BOUND)
        t0 = time.perf_counter()
        future.cancel()
        # The timer thread warns last, after abandoning and replacing the worker: waiting
        # for the warning (not the state) keeps it inside this block, out of stderr.
        abandoned.wait(_BOUND)
        elapsed = time.perf_counter() - t0
        replaced = ex.submit(pow, 2, 10).result(_BOUND) == 1024
        ex.shutdown(wait=False)
    say(f"   cancel() with force=True, grace=0.1, abandon_after=0.2: the loop runs on; its "
        f"worker was abandoned {_ms(elapsed)} later")  # fmt: skip
    say(f"   state {future.task_state.value!r}; the pool took the next task on a new worker: "
        f"{replaced}")  # fmt: skip
    _say_warnings(say, caught)


def _shutdown_with_timeout(say: Callable[[str], None]) -> None:
    say("5. Shut down within a timeout, around a task stuck in C code")
    started = threading.Event()

    def stuck() -> None:
        started.set()
        time.sleep(3600)  # no exception can interrupt a C call

    ex = CancellableThreadPoolExecutor(max_workers=2, force=True)
    future = ex.submit(stuck)
    quick = [ex.submit(pow, 2, n) for n in range(5)]
    started.wait(_BOUND)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        still_running = ex.shutdown(cancel_futures=True, timeout=0.5)
    elapsed = time.perf_counter() - t0
    say(f"   shutdown(cancel_futures=True, timeout=0.5) returned after {_ms(elapsed)}; "
        "the stdlib's would wait an hour")  # fmt: skip
    say(f"   still running: {still_running[0]!r}")
    _say_warnings(say, caught)
    finished = sum(not f.cancelled() for f in quick)
    stats = ex.statistics()
    say(f"   of 5 quick tasks queued behind it, {finished} ran, {5 - finished} were cancelled; "
        f"abandoned workers: {stats.abandoned_workers}")  # fmt: skip
    say("   the abandoned thread is a daemon: this process exits now, without waiting for it")
    del future


def _deadline_and_group(say: Callable[[str], None]) -> None:
    say("4. A deadline per task, and one cancel for a whole group")

    def poll() -> None:
        current_token().sleep(_BOUND)  # stands for work that checks its token

    with CancellableThreadPoolExecutor(max_workers=4) as ex:
        t0 = time.perf_counter()
        future = ex.with_options(timeout=0.05).submit(poll)
        failure = future.exception(_BOUND)
        t1 = time.perf_counter()
        stopped = future.wait_stopped(_BOUND)
        say(f"   with_options(timeout=0.05): the future failed with "
            f"{type(failure).__name__} after {_ms(t1 - t0)} (a TimeoutError: "
            f"{isinstance(failure, FuturesTimeoutError)}); task stopped: {stopped}, reason "
            f"{future.token.reason!r}")  # fmt: skip
        group = CancelSource()
        view = ex.with_options(token=group.token)
        futures = [view.submit(poll) for _ in range(6)]  # 4 run, 2 wait
        t0 = time.perf_counter()
        group.cancel("user closed the window")
        stopped = all(f.wait_stopped(_BOUND) for f in futures)
        t1 = time.perf_counter()
        say(f"   CancelSource().cancel() of a group of 6 (4 running, 2 queued): all "
            f"cancelled: {all(f.cancelled() for f in futures)}, all stopped: {stopped}, "
            f"in {_ms(t1 - t0)}")  # fmt: skip


def _say_warnings(say: Callable[[str], None], caught: list[warnings.WarningMessage]) -> None:
    """One line per recorded warning: its category and the start of its first line."""
    for warning in caught:
        say(f"   {warning.category.__name__}: {str(warning.message).splitlines()[0][:90]}...")

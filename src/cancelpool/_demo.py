"""``python -m cancelpool demo``: a short, live demonstration with real timings."""

from __future__ import annotations

import platform
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TextIO

from ._current import current_token
from ._executor import CancellableThreadPoolExecutor
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
    for step in (_cancel_running, _unblock_io, _shutdown_with_timeout):
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


def _shutdown_with_timeout(say: Callable[[str], None]) -> None:
    say("3. Shut down with a timeout around a task that never checks its token")
    release = threading.Event()
    started = threading.Event()

    def legacy() -> str:
        started.set()
        release.wait(_BOUND)  # stands for code we cannot change
        return "legacy done"

    ex = CancellableThreadPoolExecutor(max_workers=2)
    stuck = ex.submit(legacy)
    quick = [ex.submit(pow, 2, n) for n in range(5)]
    started.wait(_BOUND)
    t0 = time.perf_counter()
    still_running = ex.shutdown(cancel_futures=True, timeout=0.25)
    elapsed = time.perf_counter() - t0
    say(f"   shutdown(cancel_futures=True, timeout=0.25) returned after {_ms(elapsed)}; "
        "the stdlib's shutdown() would wait for the task, however long")  # fmt: skip
    say(f"   still running: {len(still_running)} task, {still_running[0]!r}")
    finished = sum(not f.cancelled() for f in quick)
    say(f"   its future: cancelled() -> {stuck.cancelled()}; of 5 quick tasks queued behind "
        f"it, {finished} ran and {5 - finished} were cancelled before they started")  # fmt: skip
    stats = ex.statistics()
    say(f"   statistics: submitted={stats.submitted} completed={stats.completed} "
        f"cancelled={stats.cancelled} stopping={stats.stopping}")  # fmt: skip
    say("   (cooperative cancel cannot stop code that never checks; forced cancellation")
    say("    is what will. Releasing the task so the demo can exit.)")
    release.set()
    stuck.wait_stopped(_BOUND)
    ex.shutdown()

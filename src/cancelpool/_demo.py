"""``python -m cancelpool demo``: a short, live demonstration with real timings.

Each step prints what it measured, on this interpreter, now; where it compares with the
stdlib's ``ThreadPoolExecutor``, it runs the same task under it and prints what that did.
``STEPS`` is the list of steps and their titles, which ``demo --help`` shows too.
"""

from __future__ import annotations

import platform
import socket
import textwrap
import threading
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Optional, TextIO, Union

from ._compat import FuturesTimeoutError
from ._current import current_token
from ._exceptions import WorkerAbandonedWarning
from ._executor import CancellableThreadPoolExecutor
from ._inject import AVAILABLE as FORCE_AVAILABLE
from ._source import CancelSource
from ._version import __version__

__all__ = ("STEPS", "describe_steps", "main")

# Every wait in the demo is bounded, so it can never hang.
_BOUND = 30.0
# How long step 5 watches the stdlib's shutdown() before it releases the stuck task.
_STDLIB_WATCH = 1.0

Say = Callable[[str], None]


def _ms(seconds: float) -> str:
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f} µs"
    return f"{seconds * 1000:.1f} ms"


def main(out: TextIO) -> int:
    """Run the demonstration, printing to *out*.

    Every step releases what it started before it returns or raises, so an error
    writing to *out* (``BrokenPipeError`` when the reader went away) leaves no task or
    thread that would hold up the interpreter's exit.

    Returns:
        The exit status, 0.
    """

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    say(f"cancelpool {__version__} demo on {platform.python_implementation()} "
        f"{platform.python_version()}")  # fmt: skip
    for number, (title, step) in enumerate(STEPS, 1):
        say()
        say(f"{number}. {title}")
        step(say)
    say()
    say("Done.")
    return 0


def describe_steps() -> str:
    """The demo's steps, one numbered line each (for ``demo --help``)."""
    return "\n".join(f"  {number}. {title}" for number, (title, _) in enumerate(STEPS, 1))


def _cancel_running(say: Say) -> None:
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

    gate, gate_reached = threading.Event(), threading.Event()

    def wait_gate() -> bool:
        gate_reached.set()
        return gate.wait(_BOUND)

    with ThreadPoolExecutor(max_workers=1) as stdlib:
        try:
            running = stdlib.submit(wait_gate)
            gate_reached.wait(_BOUND)
            cancelled = running.cancel()
            say(f"   stdlib ThreadPoolExecutor: cancel() of a running task -> {cancelled}; "
                f"it runs on (running() -> {running.running()})")  # fmt: skip
        finally:
            gate.set()  # before the with block's shutdown(wait=True) waits for the task

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


def _unblock_io(say: Say) -> None:
    ours, theirs = socket.socketpair()
    started = threading.Event()

    def read_forever() -> bytes:
        # The peer never writes; recv() would block for ever. On cancel, the callback
        # shuts the socket down, which makes recv() return at once.
        with current_token().register(lambda: ours.shutdown(socket.SHUT_RDWR)):
            started.set()
            return ours.recv(1024)

    with ours, theirs, CancellableThreadPoolExecutor(max_workers=1) as ex:
        future = ex.submit(read_forever)
        started.wait(_BOUND)
        time.sleep(0.01)  # let it block in recv() (if it has not yet, recv() returns at once)
        t0 = time.perf_counter()
        future.cancel(reason="user pressed stop")
        stopped = future.wait_stopped(_BOUND)
        say(f"   recv() returned and the task ended {_ms(time.perf_counter() - t0)} after "
            f"cancel() (stopped: {stopped}, reason: {future.token.reason!r})")  # fmt: skip


def _force(say: Say) -> None:
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


def _force_unavailable(say: Say, legacy_loop: Callable[[], None], started: threading.Event) -> None:
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


def _deadline_and_group(say: Say) -> None:

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


def _stuck_task(
    release: threading.Event,
) -> tuple[Callable[[], None], threading.Event, list[threading.Thread]]:
    """Step 5's task: blocked in a C call (a lock wait) until *release* is set.

    No exception, forced or not, can interrupt a thread blocked in C: the task stands for
    any call stuck in a C extension, a socket without a timeout, or ``time.sleep``.

    Returns:
        The task, an Event it sets once running, and a list it appends its thread to.
    """
    started = threading.Event()
    ran_on: list[threading.Thread] = []

    def stuck() -> None:
        ran_on.append(threading.current_thread())
        started.set()
        release.wait(3600)

    return stuck, started, ran_on


def _shutdown_with_timeout(say: Say) -> None:
    # Printed before the pool starts: nothing between submit() and shutdown() may raise,
    # or the stuck task's worker would keep the interpreter from exiting.
    say("   the task: Event().wait(3600), blocked in a C call (a lock) that no exception can "
        "interrupt; 5 quick tasks queued behind it; 1 worker")  # fmt: skip
    # Never set: cancelpool abandons this task's worker, and the process exits without it.
    never = threading.Event()
    stuck, started, _ = _stuck_task(never)
    ex = CancellableThreadPoolExecutor(max_workers=1, force=True)
    ex.submit(stuck)
    queued = [ex.submit(pow, 2, n) for n in range(5)]
    started.wait(_BOUND)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        still_running = ex.shutdown(cancel_futures=True, timeout=0.5)
    elapsed = time.perf_counter() - t0
    say(f"   cancelpool: shutdown(cancel_futures=True, timeout=0.5) returned after "
        f"{_ms(elapsed)}; still running: {len(still_running)} task:")  # fmt: skip
    for running in still_running:
        say(f"     {running!r}")
    _say_warnings(say, caught)
    abandoned = ex.statistics().abandoned_workers
    say(f"   the 5 queued tasks: {_fates(queued)}; abandoned workers: {abandoned} (a daemon "
        "thread: the process exits without it)")  # fmt: skip
    _stdlib_shutdown(say)


def _stdlib_shutdown(say: Say) -> None:
    """Step 5 under the stdlib's pool: its shutdown(), watched for a second, then released."""
    release = threading.Event()
    stuck, started, ran_on = _stuck_task(release)
    stdlib = ThreadPoolExecutor(max_workers=1)
    # shutdown() has no timeout: call it in a thread of our own and watch that thread.
    closer = threading.Thread(
        target=stdlib.shutdown, kwargs={"cancel_futures": True}, name="demo-stdlib-shutdown"
    )
    try:
        task = stdlib.submit(stuck)
        queued = [stdlib.submit(pow, 2, n) for n in range(5)]
        started.wait(_BOUND)
        t0 = time.perf_counter()
        closer.start()
        closer.join(_STDLIB_WATCH)
        watched = time.perf_counter() - t0
        say(f"   stdlib ThreadPoolExecutor, the same task and queue: shutdown(cancel_futures="
            f"True) (it has no timeout parameter) still blocked {watched:.1f} s later: "
            f"{closer.is_alive()}")  # fmt: skip
        alive = bool(ran_on) and ran_on[0].is_alive()
        say(f"   the task running: {task.running()}; its thread alive: {alive}; the 5 queued "
            f"tasks: {_fates(queued)}")  # fmt: skip
    finally:
        # Release the stdlib's task even if printing failed: until it returns, its
        # worker holds up shutdown() and the interpreter's exit (the stdlib joins it).
        t0 = time.perf_counter()
        release.set()
        # One thread joins the stdlib's worker, never two: Thread.join() from two threads
        # at once can fail in the older threading.py that PyPy 3.9 ships ("cannot release
        # un-acquired lock", seen here).
        if closer.ident is not None:
            closer.join(_BOUND)
        else:
            stdlib.shutdown(wait=True)
    say(f"   the demo then set the Event the task waits on: the task returned and that "
        f"shutdown() with it, {_ms(time.perf_counter() - t0)} later")  # fmt: skip


def _fates(futures: Sequence[Future[Any]]) -> str:
    """``"5 cancelled, 0 ran"``: what became of *futures* (and how many are not done)."""
    cancelled = sum(f.cancelled() for f in futures)
    ran = sum(f.done() and not f.cancelled() for f in futures)
    pending = len(futures) - cancelled - ran
    return f"{cancelled} cancelled, {ran} ran" + (f", {pending} not done" if pending else "")


def _say_warnings(say: Say, caught: list[warnings.WarningMessage]) -> None:
    """Each recorded warning: its category and its whole first line, wrapped."""
    for warning in caught:
        first = str(warning.message).splitlines()[0]
        text = f"{warning.category.__name__}: {first}"
        say(textwrap.fill(text, width=100, initial_indent="   ", subsequent_indent="     "))


STEPS: tuple[tuple[str, Callable[[Say], None]], ...] = (
    ("Cancel a task that is already running (and the stdlib's cancel())", _cancel_running),
    ("Unblock a task stuck in a blocking call, with token.register()", _unblock_io),
    ("Force-cancel a task that never checks its token", _force),
    ("A deadline per task, and one cancel for a whole group", _deadline_and_group),
    ("Shut down within a timeout, around a task stuck in C (and the stdlib's shutdown())",
     _shutdown_with_timeout),
)  # fmt: skip

"""Measure what a forced cancel does to a task blocked in each common call.

Usage: ``python docs/measure_interruptions.py`` prints a Markdown table for the running
interpreter; ``docs/forced-cancellation.md`` shows it for every supported one, and
``tests/test_docs.py`` checks that this interpreter still behaves as the page says.

Each row runs a task that first enters the call, then force-cancels it with no grace and
``abandon_after=0.3``, and records what happened within a second:

* ``interrupted at once``: ``TaskInterrupted`` landed and the code stopped within 50 ms;
* ``interrupted when the call returned``: it landed right after a C call returned;
* ``abandoned``: the call could not be interrupted within ``abandon_after`` (C code, or
  stdlib code an exception must not land in); the worker was detached, and the task
  went on until the measurement released the call;
* ``finished first``: the call held the GIL, so nothing else ran, the cancel included.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import queue
import select
import socket
import sys
import tempfile
import threading
import time
import warnings
from typing import Callable

from cancelpool import CancellableThreadPoolExecutor, TaskState


def make_rows() -> dict[str, tuple[Callable[..., object], Callable[[], object]]]:
    """Each row: (the task, how to release it afterwards)."""
    rows: dict[str, tuple[Callable[..., object], Callable[[], object]]] = {}

    release = threading.Event()
    rows["time.sleep(0.5) in a loop"] = (lambda entered: _loop_sleep(entered, release), release.set)

    event = threading.Event()
    rows["threading.Event.wait()"] = (lambda entered: (entered.set(), event.wait(5)), event.set)

    lock = threading.Lock()
    lock.acquire()
    rows["threading.Lock.acquire()"] = (
        lambda entered: (entered.set(), lock.acquire(timeout=5)),
        lock.release,
    )

    q: queue.Queue[int] = queue.Queue()
    rows["queue.Queue.get()"] = (
        lambda entered: (entered.set(), q.get(timeout=5)),
        lambda: q.put(1),
    )

    a, b = socket.socketpair()
    rows["socket.recv()"] = (lambda entered: (entered.set(), a.recv(1)), lambda: b.send(b"x"))

    c, d = socket.socketpair()
    rows["select.select()"] = (
        lambda entered: (entered.set(), select.select([c], [], [], 5)),
        lambda: d.send(b"x"),
    )

    rows["long C call releasing the GIL: hashlib.pbkdf2_hmac"] = (
        lambda entered: (entered.set(), hashlib.pbkdf2_hmac("sha256", b"k", b"s", 20_000_000)),
        lambda: None,
    )
    rows["long C call holding the GIL: sum(range(10**8))"] = (
        lambda entered: (entered.set(), sum(range(10**8))),
        lambda: None,
    )

    flags = {"run": True}

    def spin(entered: threading.Event) -> None:
        entered.set()
        while flags["run"]:
            pass

    rows["pure-Python loop"] = (spin, lambda: flags.update(run=False))

    busy = {"run": True}

    def primitives(entered: threading.Event) -> None:
        box: queue.Queue[int] = queue.Queue()
        cond, sem = threading.Condition(), threading.Semaphore()
        entered.set()
        while busy["run"]:
            box.put(1)
            box.get()
            with cond:
                cond.notify_all()
            with sem:
                pass

    rows["a loop over Queue, Condition and Semaphore"] = (
        primitives,
        lambda: busy.update(run=False),
    )

    logging_on = {"run": True}

    def logs(entered: threading.Event) -> None:
        log = logging.getLogger("cancelpool.measure")
        log.propagate = False
        with tempfile.TemporaryDirectory() as folder:
            handler = logging.FileHandler(os.path.join(folder, "log.txt"))
            log.addHandler(handler)
            try:
                entered.set()
                while logging_on["run"]:
                    log.warning("a line")
            finally:
                log.removeHandler(handler)
                handler.close()

    rows["while True: log.warning(...) to a FileHandler"] = (
        logs,
        lambda: logging_on.update(run=False),
    )

    return rows


def _loop_sleep(entered: threading.Event, release: threading.Event) -> None:
    entered.set()
    t0 = time.monotonic()
    while not release.is_set() and time.monotonic() - t0 < 5:
        time.sleep(0.5)


def measure() -> list[tuple[str, str, float]]:
    """Run every row; return (call, outcome, seconds from cancel to the outcome)."""
    results = []
    warnings.simplefilter("ignore")
    for name, (task, release) in make_rows().items():
        ex = CancellableThreadPoolExecutor(max_workers=1, force=True, abandon_after=0.3)
        entered = threading.Event()
        future = ex.submit(task, entered)
        entered.wait(5)
        time.sleep(0.05)  # let it get into the blocking call (a measurement, not a test)
        t0 = time.monotonic()
        future.cancel(grace=0)
        stopped = future.wait_stopped(1.0)
        elapsed = time.monotonic() - t0
        state = future.task_state
        if stopped and state is TaskState.STOPPED and elapsed < 0.05:
            outcome = "interrupted at once"
        elif stopped and state is TaskState.STOPPED:
            outcome = "interrupted when the call returned"
        elif state is TaskState.ABANDONED:
            outcome = "abandoned"
        elif state is TaskState.FINISHED:
            outcome = "finished first (it held the GIL: cancel() could not run)"
        else:
            outcome = f"other: {state.value}"
        release()
        future.wait_stopped(10)
        ex.shutdown(timeout=10)
        results.append((name, outcome, elapsed))
    return results


def table(results: list[tuple[str, str, float]]) -> str:
    """The results as Markdown."""
    impl = f"{platform.python_implementation()} {platform.python_version()}"
    lines = [f"| call ({impl}) | outcome of a forced cancel |", "|---|---|"]
    lines += [f"| {name} | {outcome} |" for name, outcome, _ in results]
    return "\n".join(lines)


if __name__ == "__main__":
    rows = measure()
    sys.stdout.write(table(rows) + "\n")

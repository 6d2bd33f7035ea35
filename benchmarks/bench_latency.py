"""Cooperative cancel latency: from ``future.cancel()`` to the task's code having stopped.

One trial: submit a task, wait until it signals that it runs, take a timestamp, call
``cancel()``, then ``wait_stopped()``, take a timestamp. The interval covers setting the
token, the task noticing, the worker finishing the task's bookkeeping, and waking the
cancelling thread. The stdlib has no counterpart (its ``cancel()`` cannot stop a running
task), so these are absolute numbers.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from cancelpool import CancellableThreadPoolExecutor, current_token

_BOUND = 30.0


def polling_task(started: threading.Event) -> int:
    """Busy loop that polls ``token.cancelled`` (holds the GIL between checks)."""
    token = current_token()
    started.set()
    n = 0
    while not token.cancelled:
        n += 1
    return n


def waiting_task(started: threading.Event) -> None:
    """Blocked in ``token.wait()``."""
    token = current_token()
    started.set()
    token.wait(_BOUND)


def sleeping_task(started: threading.Event) -> None:
    """Blocked in ``token.sleep()``; returns by raising TaskCancelled."""
    token = current_token()
    started.set()
    token.sleep(_BOUND)


TASKS: dict[str, Callable[[threading.Event], object]] = {
    "polling token.cancelled": polling_task,
    "blocked in token.wait()": waiting_task,
    "blocked in token.sleep()": sleeping_task,
}


def cancel_latencies(task: Callable[[threading.Event], object], trials: int) -> list[float]:
    """Return *trials* cancel-to-stopped latencies, in seconds."""
    samples = []
    with CancellableThreadPoolExecutor(max_workers=1) as ex:
        for _ in range(trials):
            started = threading.Event()
            future = ex.submit(task, started)
            if not started.wait(_BOUND):
                raise RuntimeError("task did not start")
            t0 = time.perf_counter()
            future.cancel()
            if not future.wait_stopped(_BOUND):
                raise RuntimeError("task did not stop")
            samples.append(time.perf_counter() - t0)
    return samples

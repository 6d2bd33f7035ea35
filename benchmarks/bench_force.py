"""Forced cancel latency: from ``future.cancel(force=True, grace=0)`` to the code stopped.

The task never looks at its token: a pure-Python loop, and the same loop inside an
``except Exception: continue`` (which the injected ``TaskInterrupted``, a
``BaseException``, passes through). The cancelling thread either waits
(``wait_stopped()``, giving up the GIL at once) or stays busy running Python until it
sees the task stopped, which leaves the task's thread waiting for the GIL for up to one
switch interval (5 ms by default).
"""

from __future__ import annotations

import time
from typing import Callable

from cancelpool import CancellableThreadPoolExecutor, TaskState
from cancelpool._future import STOPPED_

_BOUND = 30.0


class Progress:
    """How far a task's loop has got; the benchmark cancels only once it is looping."""

    def __init__(self) -> None:
        self.n = 0


def spin(progress: Progress) -> None:
    """A pure-Python loop that never checks its token."""
    while True:
        progress.n += 1


def spin_swallowing(progress: Progress) -> None:
    """The same loop, wrapped in ``except Exception: continue``."""
    while True:
        try:
            while True:
                progress.n += 1
        except Exception:
            continue


TASKS: dict[str, Callable[[Progress], None]] = {
    "pure-Python loop": spin,
    "loop in except Exception": spin_swallowing,
}


def forced_latencies(task: Callable[[Progress], None], trials: int, *, busy: bool) -> list[float]:
    """Return *trials* latencies (seconds) of forced cancels of *task*."""
    samples = []
    with CancellableThreadPoolExecutor(max_workers=1) as ex:
        for _ in range(trials):
            progress = Progress()
            future = ex.submit(task, progress)
            deadline = time.perf_counter() + _BOUND
            while progress.n < 1000:  # wait until the task's code is in its loop
                time.sleep(0)
                if time.perf_counter() > deadline:
                    raise RuntimeError("task did not start")
            t0 = time.perf_counter()
            future.cancel(force=True, grace=0)
            if busy:
                # Keep running Python meanwhile; read the state without the future's
                # lock, which the worker needs to record the stop.
                deadline = t0 + _BOUND
                while future._task != STOPPED_:
                    if time.perf_counter() > deadline:
                        raise RuntimeError("task did not stop")
            elif not future.wait_stopped(_BOUND):
                raise RuntimeError("task did not stop")
            samples.append(time.perf_counter() - t0)
            if future.task_state is not TaskState.STOPPED:
                raise RuntimeError(f"unexpected state {future.task_state}")
    return samples

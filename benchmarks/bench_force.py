"""Forced cancel latency: from ``future.cancel(force=True, grace=0)`` to the code stopped.

The tasks never look at their token. ``TASKS``: a pure-Python loop, and the same loop
inside an ``except Exception: continue`` (which ``TaskInterrupted``, a ``BaseException``,
passes through). ``STDLIB_TASKS``: loops that spend most of their time in protected
stdlib code, where no interrupt is ever raised: ``queue.Queue``/``Condition``/
``Semaphore`` calls, and ``log.info()`` through a ``FileHandler``. The task's thread is
armed at ``cancel()`` and raises at its next safe candidate point in its own code (a loop
back-edge or a user function's entry: ``cancelpool._inject``), so the latency is about one
iteration plus handing the GIL to the task.

One trial: submit the task, wait until it has looped 1,000 times, take a timestamp,
``cancel(force=True, grace=0)``, wait for the code to stop, take a timestamp. The
cancelling thread either waits (``wait_stopped()``, giving up the GIL at once) or stays
busy running Python until it sees the task stopped, which leaves the task's thread waiting
for the GIL for up to one switch interval (5 ms by default) once ``cancel()``'s own wait
for the task (``_escalate.HANDOVER``, 2 ms) has passed. ``WARMUP`` trials before the
timed ones are not counted (the first arm sets up the mechanism: a probe thread on
3.9-3.11, a ``sys.monitoring`` tool id on 3.12+). The stdlib has no counterpart: its
``cancel()`` cannot stop a running task.
"""

from __future__ import annotations

import logging
import os
import queue
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Callable

from cancelpool import CancellableThreadPoolExecutor, TaskState
from cancelpool._future import STOPPED_

_BOUND = 30.0
#: Trials run before the timed ones of each row, not counted.
WARMUP = 20
#: Iterations a task has made before it is cancelled: it is in its loop, and warm.
LOOPING = 1000


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


def spin_primitives(progress: Progress) -> None:
    """A loop whose time is mostly inside ``queue`` and ``threading`` (protected code)."""
    q: queue.Queue[int] = queue.Queue()
    cond = threading.Condition()
    sem = threading.Semaphore()
    while True:
        q.put(1)
        q.get()
        with cond:
            cond.notify()
        with sem:
            progress.n += 1


#: The logger ``log_forever`` writes to, through ``file_handler()``'s handler.
LOG = logging.getLogger("bench_force.log_forever")


def log_forever(progress: Progress) -> None:
    """``while True: log.info(...)``, through a ``FileHandler``: mostly inside ``logging``."""
    while True:
        LOG.info("iteration %d", progress.n)
        progress.n += 1


TASKS: dict[str, Callable[[Progress], None]] = {
    "pure-Python loop": spin,
    "loop in except Exception": spin_swallowing,
}
STDLIB_TASKS: dict[str, Callable[[Progress], None]] = {
    "Queue/Condition/Semaphore loop": spin_primitives,
    "log.info() loop, FileHandler": log_forever,
}


@contextmanager
def file_handler() -> Iterator[logging.FileHandler]:
    """``LOG`` at INFO, written to a temporary file through a ``FileHandler``."""
    fd, path = tempfile.mkstemp(prefix="bench_force", suffix=".log")
    os.close(fd)
    handler = logging.FileHandler(path, encoding="utf-8")
    LOG.addHandler(handler)
    LOG.setLevel(logging.INFO)
    LOG.propagate = False
    try:
        yield handler
    finally:
        LOG.removeHandler(handler)
        handler.close()
        os.unlink(path)


def forced_latencies(task: Callable[[Progress], None], trials: int, *, busy: bool) -> list[float]:
    """Return *trials* latencies (seconds) of forced cancels of *task*, after ``WARMUP``."""
    samples = []
    with file_handler() as handler, CancellableThreadPoolExecutor(max_workers=1) as ex:
        for trial in range(WARMUP + trials):
            elapsed = _one_trial(ex, task, busy)
            if trial >= WARMUP:
                samples.append(elapsed)
            _truncate(handler)
    return samples


def _one_trial(
    ex: CancellableThreadPoolExecutor, task: Callable[[Progress], None], busy: bool
) -> float:
    progress = Progress()
    future = ex.submit(task, progress)
    deadline = time.perf_counter() + _BOUND
    while progress.n < LOOPING:  # wait until the task's code is in its loop
        time.sleep(0)
        if time.perf_counter() > deadline:
            raise RuntimeError("task did not start")
    t0 = time.perf_counter()
    future.cancel(force=True, grace=0)
    if busy:
        # Keep running Python meanwhile; read the state without the future's lock,
        # which the worker needs to record the stop.
        deadline = t0 + _BOUND
        while future._task != STOPPED_:
            if time.perf_counter() > deadline:
                raise RuntimeError("task did not stop")
    elif not future.wait_stopped(_BOUND):
        raise RuntimeError("task did not stop")
    elapsed = time.perf_counter() - t0
    if future.task_state is not TaskState.STOPPED:
        raise RuntimeError(f"unexpected state {future.task_state}")
    return elapsed


def _truncate(handler: logging.FileHandler) -> None:
    """Empty the log file between trials (the task is stopped: nothing writes to it)."""
    if handler.stream is not None:  # opened at the first record
        handler.stream.seek(0)
        handler.stream.truncate()

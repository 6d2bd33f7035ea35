"""Memory per pending task: n no-op tasks queued behind a blocked worker.

Measured with ``tracemalloc`` (every Python allocation, raw C ones included, such as
the lock in each future's Condition), in a fresh interpreter per executor class so that
neither run inherits the other's free lists. The result is traced bytes per task.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from cancelpool import CancellableThreadPoolExecutor
from fresh import in_fresh_interpreter

CLASSES = {"stdlib": ThreadPoolExecutor, "ours": CancellableThreadPoolExecutor}


def noop() -> None:
    """The queued task."""


def bytes_per_pending_task(which: str, n: int) -> float:
    """In this process: queue *n* tasks behind a blocked worker; return bytes per task.

    Returns -1 where the interpreter cannot trace allocations (PyPy).
    """
    try:
        import tracemalloc
    except ImportError:  # PyPy 7.3 has no _tracemalloc
        return -1.0
    cls = CLASSES[which]
    gate = threading.Event()
    ex = cls(max_workers=1)
    ex.submit(gate.wait, 60)  # the only worker blocks; everything after stays queued
    futures = []
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    for _ in range(n):
        futures.append(ex.submit(noop))
    after, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    if after == before == 0:  # PyPy: tracemalloc is a stub
        after = -n
    ex.shutdown(wait=False, cancel_futures=True)
    gate.set()
    return (after - before) / n


def measure_in_subprocess(which: str, n: int) -> float:
    """Run :func:`bytes_per_pending_task` in a fresh interpreter."""
    result: float = in_fresh_interpreter("bench_memory", "bytes_per_pending_task", which, n)
    return result

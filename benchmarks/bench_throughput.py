"""Per-task cost of submit/result/map: CancellableThreadPoolExecutor against the stdlib.

Each benchmark is a function of ``(executor_class, n)`` that returns seconds for *n*
tasks. ``run.py`` runs it for both classes, interleaved (stdlib, ours, stdlib, ours, ...)
so that drift in machine load hits both alike, and reports the median per-task time
and the ratio ours / stdlib.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

ExecutorClass = Callable[..., ThreadPoolExecutor]


def noop() -> None:
    """The task: nothing, so that only the executor's own cost is measured."""


def identity(x: int) -> int:
    """The mapped function: returns its argument."""
    return x


def submit_then_results(workers: int) -> Callable[[ExecutorClass, int], float]:
    """Submit *n* no-op tasks, then wait for each result: throughput at *workers*."""

    def bench(cls: ExecutorClass, n: int) -> float:
        with cls(max_workers=workers) as ex:
            ex.submit(noop).result()  # start a worker before timing
            t0 = time.perf_counter()
            futures = [ex.submit(noop) for _ in range(n)]
            for f in futures:
                f.result()
            return time.perf_counter() - t0

    bench.__doc__ = f"{workers} worker(s): submit n no-ops, then result() of each"
    return bench


def round_trip(cls: ExecutorClass, n: int) -> float:
    """1 worker: ``submit(noop).result()``, one task in flight at a time.

    Dominated by thread wake-up latency (about 100 µs a task here), so it runs n // 5
    tasks and returns the time scaled to n, to keep the run short.
    """
    k = max(1, n // 5)
    with cls(max_workers=1) as ex:
        ex.submit(noop).result()
        t0 = time.perf_counter()
        for _ in range(k):
            ex.submit(noop).result()
        return (time.perf_counter() - t0) * n / k


def map_items(cls: ExecutorClass, n: int) -> float:
    """8 workers: ``list(ex.map(identity, range(n)))``."""
    with cls(max_workers=8) as ex:
        ex.submit(noop).result()
        t0 = time.perf_counter()
        results = list(ex.map(identity, range(n)))
        elapsed = time.perf_counter() - t0
    assert results[-1] == n - 1
    return elapsed


BENCHMARKS: dict[str, Callable[[ExecutorClass, int], float]] = {
    "submit+result, 1 worker": submit_then_results(1),
    "submit+result, 8 workers": submit_then_results(8),
    "submit().result() round trip, 1 worker": round_trip,
    "map, 8 workers": map_items,
}

"""The cost of a deadline per task: 60 s deadlines that never fire, against the stdlib.

Each benchmark is a function of ``(executor_class, n)`` returning seconds for *n* tasks,
as in ``bench_throughput``. With cancelpool's executor every task gets a 60 s deadline
(``with_options(timeout=60)``), counted from when its worker starts it and watched by the
executor's one check (``cancelpool._deadline``). The stdlib's executor runs the same
tasks with no deadline, since it has none to give. ``timer_wakeups`` counts how often
the timer thread woke during the cancelpool runs: deadlines of tasks that end in time
must not wake it (the check itself may wake once per 60 s of running).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from cancelpool import CancellableThreadPoolExecutor, _timer

ExecutorClass = Callable[..., ThreadPoolExecutor]

#: Timer-thread wake-ups seen during the cancelpool runs, summed over all benchmarks here.
timer_wakeups = 0


def noop() -> None:
    """The task: nothing, so that only the executor's own cost is measured."""


def identity(x: int) -> int:
    """The mapped function: returns its argument."""
    return x


def _with_deadline(ex: Any) -> Any:
    """The executor itself (stdlib), or a view of it with a 60 s deadline per task."""
    if isinstance(ex, CancellableThreadPoolExecutor):
        return ex.with_options(timeout=60.0)
    return ex


def _timed(cls: ExecutorClass, run: Callable[[Any], None], workers: int) -> float:
    global timer_wakeups
    with cls(max_workers=workers) as ex:
        target = _with_deadline(ex)
        target.submit(noop).result()  # start a worker (and the timer thread) before timing
        before = _timer.get_scheduler().wakeups
        t0 = time.perf_counter()
        run(target)
        elapsed = time.perf_counter() - t0
        if isinstance(ex, CancellableThreadPoolExecutor):
            timer_wakeups += _timer.get_scheduler().wakeups - before
    return elapsed


def submit_then_results(workers: int) -> Callable[[ExecutorClass, int], float]:
    """Submit *n* no-op tasks with a 60 s deadline each, then wait for each result."""

    def bench(cls: ExecutorClass, n: int) -> float:
        def run(target: Any) -> None:
            futures = [target.submit(noop) for _ in range(n)]
            for f in futures:
                f.result()

        return _timed(cls, run, workers)

    bench.__doc__ = f"{workers} worker(s): submit n no-ops with timeout=60, then result()"
    return bench


def map_items(cls: ExecutorClass, n: int) -> float:
    """8 workers: ``list(view.map(identity, range(n)))``, each item with timeout=60."""

    def run(target: Any) -> None:
        assert list(target.map(identity, range(n)))[-1] == n - 1

    return _timed(cls, run, 8)


BENCHMARKS: dict[str, Callable[[ExecutorClass, int], float]] = {
    "timeout=60 per task, submit+result, 1 worker": submit_then_results(1),
    "timeout=60 per task, submit+result, 8 workers": submit_then_results(8),
    "timeout=60 per task, map, 8 workers": map_items,
}

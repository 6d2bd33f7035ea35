"""How long ``shutdown(cancel_futures=True)`` takes with a long queue (issue 11).

*n* no-op tasks queued behind the pool's one worker, which is blocked on an event; then
the timed call:

* stdlib: ``shutdown(wait=False, cancel_futures=True)``, which cancels every queued
  future before it returns (its quickest form: it does not wait for the worker);
* ours: ``shutdown(cancel_futures=True, timeout=TIMEOUT)``, which promises to return
  within ``TIMEOUT`` plus a few milliseconds, and cancels what it has no time for right
  after it returns (``cancelpool._drain``). Also timed: until its last future is
  cancelled (the hand-off thread joined), the work the stdlib does inside the call.

Each measurement runs in a fresh interpreter, so that neither class inherits the other's
heap (a million futures are about 1.5 GB). The worker's task waits with
``cancelpool.wait_event``, so that ours, which cancels it (``timeout`` implies
``cancel_running``), does not wait for it either: both calls time the queue alone.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cancelpool import CancellableThreadPoolExecutor, wait_event
from fresh import in_fresh_interpreter

#: Our ``shutdown()``'s timeout, seconds; the issue's target is a return within 0.2 s.
TIMEOUT = 0.1


def noop() -> None:
    """The queued task (never run: every one is cancelled)."""


def shutdown_seconds(which: str, n: int) -> dict[str, float]:
    """In this process: queue *n* tasks behind a blocked worker and time the shutdown.

    Returns:
        ``{"returned": s}`` for the stdlib; ours adds ``"all_cancelled": s``, from the
        call to its last future cancelled.
    """
    gate = threading.Event()
    if which == "stdlib":
        stdlib = ThreadPoolExecutor(max_workers=1)
        stdlib.submit(gate.wait, 60)
        futures = [stdlib.submit(noop) for _ in range(n)]
        t0 = time.perf_counter()
        stdlib.shutdown(wait=False, cancel_futures=True)
        returned = time.perf_counter() - t0
        gate.set()
        assert all(f.cancelled() for f in futures)
        return {"returned": returned}
    ours = CancellableThreadPoolExecutor(max_workers=1)
    ours.submit(wait_event, gate, 60)  # stops when shutdown() cancels it
    futures = [ours.submit(noop) for _ in range(n)]
    t0 = time.perf_counter()
    ours.shutdown(cancel_futures=True, timeout=TIMEOUT)
    returned = time.perf_counter() - t0
    drop = ours._drop
    thread = None if drop is None else drop._thread
    if thread is not None:
        thread.join(600)
    all_cancelled = time.perf_counter() - t0
    gate.set()
    assert all(f.cancelled() for f in futures)
    return {"returned": returned, "all_cancelled": all_cancelled}


def measure_in_subprocess(which: str, n: int) -> dict[str, float]:
    """Run :func:`shutdown_seconds` in a fresh interpreter."""
    result: dict[str, float] = in_fresh_interpreter("bench_shutdown", "shutdown_seconds", which, n)
    return result


def shutdown_times(n: int, rounds: int) -> dict[str, Any]:
    """Medians over *rounds* alternating fresh-interpreter runs of each class, seconds."""
    stdlib: list[float] = []
    ours: list[float] = []
    ours_all: list[float] = []
    for _ in range(rounds):
        stdlib.append(measure_in_subprocess("stdlib", n)["returned"])
        mine = measure_in_subprocess("ours", n)
        ours.append(mine["returned"])
        ours_all.append(mine["all_cancelled"])
    return {
        "stdlib": sorted(stdlib)[len(stdlib) // 2],
        "ours": sorted(ours)[len(ours) // 2],
        "ours_max": max(ours),
        "ours_all_cancelled": sorted(ours_all)[len(ours_all) // 2],
    }

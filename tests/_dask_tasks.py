"""Task functions for tests/test_dask.py, run on the workers of a real LocalCluster.

Pickled by value (``cloudpickle.register_pickle_by_value``), so the worker processes need
not import the tests package. Each task reports what it did on a ``distributed.Queue``
named by the test (``log``): the test reads it with a bounded ``get(timeout=...)``,
which is how it waits for a task to start or stop without sleeping.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

from distributed import Event, Queue, secede, worker_client

import cancelpool

#: A task left alone runs this long: far beyond any wait of the tests, so a task that
#: ends within their bounds was stopped.
LONG = 60.0


def inc(x: int) -> int:
    return x + 1


def fail(x: int) -> float:
    return x / 0


def wait_for_cancel(log: str, name: str) -> str:
    """Cooperative: report, wait on the token, report why it woke."""
    token = cancelpool.current_token()
    Queue(log).put(("started", name))
    token.wait(LONG)
    Queue(log).put(("stopped", name, token.reason))
    cancelpool.checkpoint()
    return "not cancelled"


def spin(log: str, name: str) -> None:
    """Pure Python that never looks at its token: only a forced cancel stops it."""
    Queue(log).put(("started", name))
    n = 0
    try:
        while True:
            n += 1
    finally:
        Queue(log).put(("stopped", name, cancelpool.current_token().reason))


def stuck_in_c(log: str, name: str) -> None:
    """Blocked in C for longer than any test: only abandoning its thread frees the slot."""
    Queue(log).put(("started", name))
    time.sleep(LONG)


def hold(log: str, name: str, release: str) -> str:
    """Report whether it runs as a cancelpool task, then wait for the test's event."""
    Queue(log).put(("started", name, cancelpool.current_token_or_none() is not None))
    Event(release).wait(LONG)
    return "held"


def seceded_wait_for_cancel(log: str, name: str) -> None:
    """Leave the thread pool (dask's ``secede``), then wait on the token."""
    token = cancelpool.current_token()
    secede()
    Queue(log).put(("started", name))
    token.wait(LONG)
    Queue(log).put(("stopped", name, token.reason))


def via_worker_client(x: int) -> int:
    """Submit a subtask from a task and wait for it: secedes and rejoins the pool."""
    with worker_client() as client:
        return int(client.submit(inc, x, pure=False).result()) + 100


def pool_of(dask_worker: Any) -> dict[str, Any]:
    """The worker's default executor: its class, threads, detached threads and counts."""
    ex = dask_worker.executors["default"]
    stats = ex.statistics() if hasattr(ex, "statistics") else None
    return {
        "class": type(ex).__name__,
        "threads": len(ex._threads),
        "detached": len(getattr(ex, "_abandoned", ())),
        "alive": threading.active_count(),
        "stats": None if stats is None else dataclasses.asdict(stats),
        "executing": dask_worker.state.executing_count,
        "active_threads": len(dask_worker.active_threads),
    }


def stop_late(log: str, name: str, gate: str) -> str:
    """Cancelled: report, then hold on until the test opens *gate*, then stop.

    Run again after *gate* is open (dask computing the key again), it returns at once.
    """
    if Event(gate).is_set():
        return "computed again"
    token = cancelpool.current_token()
    Queue(log).put(("started", name))
    token.wait(LONG)
    Queue(log).put(("stopping", name, token.reason))
    Event(gate).wait(LONG)
    cancelpool.checkpoint()  # raises TaskCancelled: this run was cancelled
    return "not cancelled"


def wait_then_write(log: str, name: str, path: str) -> None:
    """Cooperative, and reports its stop in a file: for a worker that closes meanwhile."""
    token = cancelpool.current_token()
    Queue(log).put(("started", name))
    token.wait(LONG)
    with open(path, "w") as file:
        file.write(str(token.reason))


def close_worker(dask_worker: Any) -> None:
    """Have the worker close itself, from its event loop, once this call has returned."""
    dask_worker.loop.add_callback(dask_worker.close, reason="closed by the test")

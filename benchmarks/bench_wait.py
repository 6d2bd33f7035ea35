"""Cancellation-aware waiting: how fast a blocked ``recv()`` stops, what ``queue_get`` costs.

``socket_cancel_latencies``: a task connects to a loopback TCP server that accepts and
never answers, and blocks in ``recv()`` inside ``close_on_cancel``. One trial: take a
timestamp, ``cancel()``; the task takes one where its ``TaskCancelled`` arrives. The
interval covers setting the token, ``shutdown(SHUT_RDWR)`` in the cancelling thread, the
kernel waking ``recv()``, and the task getting the GIL back.

``queue_get_times``: per-item time of ``q.get()`` and of ``cancelpool.queue_get(q)``,
both inside a task (where ``queue_get`` has a token to honour), on a hot queue: the items
are all there, so neither ever waits. The ratio is the cost of the helper's checks on the
path that never blocks.
"""

from __future__ import annotations

import queue
import socket
import statistics
import threading
import time

from cancelpool import CancellableThreadPoolExecutor, TaskCancelled, close_on_cancel, queue_get

_BOUND = 30.0


def _recv_until_cancelled(
    address: tuple[str, int], blocked: threading.Event, stamps: list[float]
) -> None:
    """The task: block in ``recv()``; note when ``TaskCancelled`` arrives (perf_counter)."""
    with socket.create_connection(address) as sock:
        try:
            with close_on_cancel(sock):
                blocked.set()
                sock.recv(4096)
        except TaskCancelled:
            stamps.append(time.perf_counter())
            raise


def socket_cancel_latencies(trials: int) -> list[float]:
    """Return *trials* latencies (seconds) from ``cancel()`` to ``TaskCancelled`` in the task."""
    samples = []
    with socket.socket() as server, CancellableThreadPoolExecutor(max_workers=1) as ex:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        server.settimeout(_BOUND)
        for _ in range(trials):
            blocked = threading.Event()
            stamps: list[float] = []
            future = ex.submit(_recv_until_cancelled, server.getsockname(), blocked, stamps)
            peer, _ = server.accept()  # accepted, never answered
            with peer:
                if not blocked.wait(_BOUND):
                    raise RuntimeError("task did not start")
                t0 = time.perf_counter()
                future.cancel()
                if not future.wait_stopped(_BOUND) or not stamps:
                    raise RuntimeError("task did not stop with TaskCancelled")
                samples.append(stamps[0] - t0)
    return samples


def _drain(q: queue.Queue[int], n: int, use_helper: bool) -> float:
    """The task: take *n* items that are already there; seconds per item."""
    t0 = time.perf_counter()
    if use_helper:
        for _ in range(n):
            queue_get(q)
    else:
        for _ in range(n):
            q.get()
    return (time.perf_counter() - t0) / n


def queue_get_times(n: int, rounds: int = 5) -> tuple[float, float]:
    """Per-item seconds of ``q.get()`` and ``queue_get(q)`` in a task on a hot queue.

    Returns:
        The medians, over *rounds* alternating rounds of *n* items each, of the stdlib's
        per-item time and ours.
    """
    times: dict[bool, list[float]] = {False: [], True: []}
    with CancellableThreadPoolExecutor(max_workers=1) as ex:
        for _ in range(rounds):
            for use_helper in (False, True):
                q: queue.Queue[int] = queue.Queue()
                for i in range(n):
                    q.put(i)
                times[use_helper].append(ex.submit(_drain, q, n, use_helper).result(_BOUND))
    return statistics.median(times[False]), statistics.median(times[True])

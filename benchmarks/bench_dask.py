"""Per-task cost of the ``CancelRunningTasks`` worker plugin against plain dask (issue 13).

One ``distributed.LocalCluster`` (2 worker processes of 2 threads each, on loopback) runs
every round: the same tasks with dask's own executor ("plain", plugin unregistered) and
with ``CancelRunningTasks`` registered ("ours": each worker's default executor is a
``CancellableThreadPoolExecutor``), alternately, ``--rounds`` times each. A round is
``client.gather(client.map(fn, range(n), pure=False))``, timed from the map to the last
result, for two workloads: no-op tasks (only the per-task overhead), and tasks that
spend about 1 ms in pure-Python code each. It reports the median per-task time of each
and their ratio (ours / plain; target <= 1.05).

dask's own per-task work (about 1 ms a task on a 2-core machine: the graph, the
scheduler's and the worker's transitions, the messages between them) dwarfs an
executor's (about 10 µs), so the ratio is expected near 1.00; what it can show is a
plugin that adds per-task work on the worker's event loop (its ``transition()`` hook) or
in the task's thread.

Usage (the venv needs ``distributed``; without it this says so and exits 0)::

    python benchmarks/bench_dask.py            # 9 rounds each, 2,000 no-op tasks a round
    python benchmarks/bench_dask.py --quick    # 3 rounds each, 200 tasks
    python benchmarks/bench_dask.py --json out.json

``run.py --only dask`` runs it as a section of the other benchmarks.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

#: Whether ``distributed`` can be imported here; imported only when a run starts, so that
#: ``run.py``'s other sections (and interpreters without dask: 3.9, PyPy) never load it.
AVAILABLE = importlib.util.find_spec("distributed") is not None
MISSING = "n/a: dask.distributed is not installed here (pip install 'cancelpool[dask]')"

#: Seconds any one call to the cluster may take (a round, a plugin switch, a check).
TIMEOUT = 120.0
#: The cluster: processes, so that each worker has its own GIL, as in production.
WORKERS, THREADS = 2, 2
#: The no-op tasks run after each switch of executor, not timed: they start its threads.
WARMUP = 50
#: Seconds of pure-Python work in each task of the second workload.
SPIN_SECONDS = 0.001

PLAIN_EXECUTOR = "distributed.threadpoolexecutor.ThreadPoolExecutor"
OURS_EXECUTOR = "cancelpool.dask._DaskThreadPoolExecutor"


# ---------------------------------------------------------------- run on the workers


def noop(i: int) -> int:
    """The no-op task: only dask's and the executor's own cost is measured."""
    return i


def spin(i: int, loops: int) -> int:
    """The busy task: *loops* iterations of pure Python (about 1 ms, see ``calibrate``)."""
    x = 0
    for _ in range(loops):
        x += 1
    return i + x


def wait_for_cancel(i: int) -> int:
    """Cooperative: signal that it runs, then wait on its token (60 s if left alone)."""
    import distributed

    import cancelpool

    token = cancelpool.current_token()
    distributed.Event(f"cancelpool-bench-started-{i}").set()
    token.wait(60)
    return i


def loop_forever(i: int) -> int:
    """Pure Python that never checks its token: only a forced cancel stops it."""
    import distributed

    distributed.Event(f"cancelpool-bench-started-{i}").set()
    x = 0
    while x >= 0:
        x += 1
    return i


def executor_name(dask_worker: Any) -> str:
    """Run by ``client.run`` on each worker: the class of its default executor."""
    cls = type(dask_worker.executors["default"])
    return f"{cls.__module__}.{cls.__qualname__}"


def scheduler_tasks(dask_scheduler: Any) -> int:
    """Run on the scheduler: how many keys it still holds."""
    return len(dask_scheduler.tasks)


# ---------------------------------------------------------------- run in the client


def calibrate(seconds: float = SPIN_SECONDS) -> int:
    """How many iterations of ``spin`` take *seconds* in this interpreter (best of 5)."""
    probe = 100_000
    best = min(_time_spin(probe) for _ in range(5))
    return max(1, round(probe * seconds / best))


def _time_spin(loops: int) -> float:
    t0 = time.perf_counter()
    spin(0, loops)
    return time.perf_counter() - t0


def _send_tasks_by_value() -> None:
    """Have the workers unpickle this module's tasks by value: they need not import it.

    (Run as a script, the module is ``__main__``, which cloudpickle sends by value anyway.)
    """
    if __name__ != "__main__":
        import cloudpickle  # type: ignore[import-not-found, unused-ignore]  # with distributed

        cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _bounded(client: Any, call: Callable[[], Any]) -> Any:
    """``call()`` (a client method) with a timeout: run on the client's event loop.

    There, the client's blocking methods return an awaitable, which ``Client.sync``
    awaits for at most ``TIMEOUT`` seconds (``register_plugin``, ``run`` and their kin
    take no timeout of their own).
    """
    return client.sync(call, callback_timeout=TIMEOUT)


def use_plugin(client: Any, on: bool) -> None:
    """Register ``CancelRunningTasks`` (*on*) or unregister it, and check every worker.

    Raises:
        RuntimeError: a worker's default executor is not the expected one.
    """
    from cancelpool.dask import CancelRunningTasks

    names = _bounded(client, lambda: client.run(executor_name))
    if on and set(names.values()) != {OURS_EXECUTOR}:
        _bounded(client, lambda: client.register_plugin(CancelRunningTasks()))
    elif not on and set(names.values()) != {PLAIN_EXECUTOR}:
        _bounded(client, lambda: client.unregister_worker_plugin(CancelRunningTasks.name))
    check_executor(client, on)


def check_executor(client: Any, on: bool) -> None:
    """Raise ``RuntimeError`` unless every worker runs its tasks on the expected executor."""
    expected = OURS_EXECUTOR if on else PLAIN_EXECUTOR
    names = _bounded(client, lambda: client.run(executor_name))
    wrong = {addr: name for addr, name in names.items() if name != expected}
    if wrong or len(names) != WORKERS:
        raise RuntimeError(
            f"a {'cancelpool' if on else 'plain'} round would run on the wrong executor: "
            f"expected {expected} on {WORKERS} workers, got {names}"
        )


def run_tasks(client: Any, fn: Callable[..., int], n: int, **kwargs: Any) -> float:
    """Seconds from ``client.map`` of *n* tasks of *fn* to the last result gathered."""
    import distributed

    t0 = time.perf_counter()
    futures = client.map(fn, range(n), pure=False, **kwargs)
    distributed.wait(futures, timeout=TIMEOUT)
    results = client.gather(futures)
    elapsed = time.perf_counter() - t0
    if len(results) != n or results[0] != fn(0, **kwargs):
        raise RuntimeError(f"{fn.__name__}: wrong results ({len(results)} of {n})")
    del futures, results
    settle(client)
    return elapsed


def settle(client: Any) -> None:
    """Wait until the scheduler has forgotten every key, so rounds do not overlap.

    Raises:
        TimeoutError: keys are still there after ``TIMEOUT`` seconds.
    """
    deadline = time.monotonic() + TIMEOUT
    while _bounded(client, lambda: client.run_on_scheduler(scheduler_tasks)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the scheduler still holds keys after {TIMEOUT} s")
        time.sleep(0.01)  # a benchmark's idle wait, between timed rounds


def workloads(n: int, loops: int) -> dict[str, tuple[Callable[..., int], int, dict[str, Any]]]:
    """Name -> (task function, tasks a round, keyword arguments) of each workload."""
    busy = max(1, n // 4)  # 4 threads on 2 cores: n // 4 tasks of 1 ms take about n / 8 ms
    return {
        f"no-op, {n:,} tasks": (noop, n, {}),
        f"1 ms of Python, {busy:,} tasks": (spin, busy, {"loops": loops}),
    }


def dask_rows(n: int, rounds: int) -> list[dict[str, Any]]:
    """Median per-task time, plain dask and ours, of each workload, on one LocalCluster.

    Rounds alternate plain, ours, ours, plain, ... (so each mode runs first as often),
    each preceded by ``WARMUP`` untimed no-op tasks on a freshly switched executor, and
    each checked to have run on the expected executor before and after.

    Args:
        n: No-op tasks a round (the busy workload runs a quarter as many).
        rounds: Rounds of each mode.

    Returns:
        One dict per workload: medians, minima and maxima in µs a task, the ratio of the
        medians (ours / plain), the lowest and highest ratio of a round's pair, and
        every round's time (in the order run).
    """
    import distributed

    _send_tasks_by_value()
    loads = workloads(n, calibrate())
    times: dict[str, dict[str, list[float]]] = {name: {"plain": [], "ours": []} for name in loads}
    cluster = distributed.LocalCluster(
        n_workers=WORKERS,
        threads_per_worker=THREADS,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    )
    try:
        with distributed.Client(cluster, timeout=TIMEOUT) as client:
            for i in range(rounds):
                for mode in ("plain", "ours") if i % 2 == 0 else ("ours", "plain"):
                    use_plugin(client, mode == "ours")
                    run_tasks(client, noop, WARMUP)
                    for name, (fn, count, kwargs) in loads.items():
                        times[name][mode].append(run_tasks(client, fn, count, **kwargs) / count)
                    check_executor(client, mode == "ours")
            use_plugin(client, False)
    finally:
        cluster.close(timeout=TIMEOUT)
    return [summary(name, loads[name][1], t["plain"], t["ours"]) for name, t in times.items()]


def stop_rows(trials: int) -> list[dict[str, Any]]:
    """How soon ``client.cancel()`` of a running task frees a one-thread worker.

    On a ``LocalCluster`` of one worker process with one thread and the plugin
    registered: a task signals (a ``distributed.Event``) that it runs; the clock starts
    at ``client.cancel()`` and stops when a next task, submitted right after it, has
    returned its result to the client. So it includes the messages client -> scheduler
    -> worker and back, and is what a dask user sees. Two tasks: one waiting on its token
    (the default plugin), one pure-Python loop that never checks it
    (``CancelRunningTasks(force=True, grace=0)``: interrupted at once).

    Returns:
        One dict per task: p50, p99 and max in ms over *trials*.
    """
    import distributed

    from cancelpool.dask import CancelRunningTasks

    _send_tasks_by_value()
    cases = [
        ("waiting on its token", wait_for_cancel, CancelRunningTasks()),
        ("pure-Python loop, force=True grace=0", loop_forever, CancelRunningTasks(True, 0.0)),
    ]
    rows = []
    cluster = distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None,
    )  # fmt: skip
    try:
        with distributed.Client(cluster, timeout=TIMEOUT) as client:
            for label, fn, plugin in cases:
                _bounded(client, functools.partial(client.register_plugin, plugin))
                times = []
                for i in range(trials):
                    key = f"{fn.__name__}-{i}"
                    future = client.submit(fn, i, key=key)
                    started = distributed.Event(f"cancelpool-bench-started-{i}", client=client)
                    if not started.wait(timeout=TIMEOUT):
                        raise TimeoutError(f"{key} did not start within {TIMEOUT} s")
                    t0 = time.perf_counter()
                    client.cancel(future)
                    after = client.submit(noop, i, pure=False).result(timeout=TIMEOUT)
                    times.append(time.perf_counter() - t0)
                    started.clear()
                    if after != i:
                        raise RuntimeError(f"the task after {key} returned {after!r}")
                    del future
                    settle(client)
                times.sort()
                rows.append({
                    "task": label, "trials": trials,
                    "p50_ms": times[len(times) // 2] * 1e3,
                    "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))] * 1e3,
                    "max_ms": times[-1] * 1e3,
                })  # fmt: skip
    finally:
        cluster.close(timeout=TIMEOUT)
    return rows


def print_stop_rows(rows: list[dict[str, Any]]) -> None:
    """The stop-latency table."""
    print("  client.cancel() of a running task to the next task's result, one-thread worker:")
    for r in rows:
        print(f"  {r['task']:40} p50 {r['p50_ms']:7.1f}ms  p99 {r['p99_ms']:7.1f}ms  "
              f"max {r['max_ms']:7.1f}ms  ({r['trials']} trials)")  # fmt: skip


def summary(name: str, n: int, plain: list[float], ours: list[float]) -> dict[str, Any]:
    """One row: per-task seconds of each round, as µs medians, extremes and ratios."""
    pairs = [o / p for p, o in zip(plain, ours)]
    return {
        "benchmark": name, "n": n, "rounds": len(plain),
        "plain_us": statistics.median(plain) * 1e6, "ours_us": statistics.median(ours) * 1e6,
        "ratio": statistics.median(ours) / statistics.median(plain),
        "plain_min_us": min(plain) * 1e6, "plain_max_us": max(plain) * 1e6,
        "ours_min_us": min(ours) * 1e6, "ours_max_us": max(ours) * 1e6,
        "pair_ratio_min": min(pairs), "pair_ratio_max": max(pairs),
        "plain_rounds_us": [t * 1e6 for t in plain], "ours_rounds_us": [t * 1e6 for t in ours],
    }  # fmt: skip


def print_rows(rows: list[dict[str, Any]]) -> None:
    """The table: medians, ratio, and each mode's spread over its rounds."""
    print(f"  {'workload':32} {'plain':>10} {'ours':>10} {'ratio':>6}   "
          f"{'plain min-max':>13} {'ours min-max':>13} {'pair ratios':>11}")  # fmt: skip
    for r in rows:
        plain = f"{r['plain_min_us']:.0f}-{r['plain_max_us']:.0f}µs"
        ours = f"{r['ours_min_us']:.0f}-{r['ours_max_us']:.0f}µs"
        pairs = f"{r['pair_ratio_min']:.2f}-{r['pair_ratio_max']:.2f}"
        print(f"  {r['benchmark']:32} {r['plain_us']:8.1f}µs {r['ours_us']:8.1f}µs "
              f"{r['ratio']:6.3f}   {plain:>13} {ours:>13} {pairs:>11}")  # fmt: skip


def header(n: int, rounds: int) -> str:
    """What the table measures, printed above it."""
    return (
        f"dask.distributed, one LocalCluster ({WORKERS} worker processes x {THREADS} threads, "
        f"loopback): per-task time, median of {rounds} alternating rounds each, plain dask "
        f"vs CancelRunningTasks registered ({n:,} no-op tasks a round):"
    )


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 200 tasks")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of each mode")
    parser.add_argument("--tasks", type=int, default=None, help="no-op tasks a round")
    parser.add_argument("--stop-trials", type=int, default=None, help="cancels timed")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 9)
    n = args.tasks or (200 if args.quick else 2_000)
    env = f"{platform.python_implementation()} {platform.python_version()} on {platform.machine()}"
    print(f"cancelpool dask benchmark, {env}")
    if not AVAILABLE:
        print(f"  {MISSING}")
        return 0
    import distributed

    print(f"distributed {distributed.__version__}")
    print(header(n, rounds))
    rows = dask_rows(n, rounds)
    print_rows(rows)
    stops = stop_rows(args.stop_trials or (5 if args.quick else 100))
    print_stop_rows(stops)
    if args.json:
        results = {
            "python": env, "distributed": distributed.__version__, "dask": rows,
            "dask_stop": stops,
        }  # fmt: skip
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

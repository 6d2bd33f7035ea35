"""Run the benchmarks against the stdlib executor, side by side, and report ratios.

Usage::

    python benchmarks/run.py               # the full run: 100k tasks, 1000 trials, 1M queued
    python benchmarks/run.py --quick       # a smoke run with small sizes (seconds)
    python benchmarks/run.py --json out.json

Or on every interpreter: ``tox -e bench-py39,bench-py310,bench-py311,bench-py312,bench-py313``.

Throughput rows run the stdlib and cancelpool alternately, ``--rounds`` times each, and
report the median per-task time of each and their ratio (ours / stdlib; 1.00 = equal,
below 1 = we are faster). Thread scheduling on a small machine spreads single rounds
by +-30%, hence many alternating rounds and medians. Targets: throughput ratio <= 1.10,
deadline-cost ratio <= 1.15 with no timer wake-up, cancel latency p99 < 1 ms, memory
ratio <= 1.2.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_deadline
import bench_force
import bench_latency
import bench_memory
import bench_throughput
import bench_wait
from cancelpool import FORCE_AVAILABLE, CancellableThreadPoolExecutor


def throughput(n: int, rounds: int, benchmarks: Any = None) -> list[dict[str, Any]]:
    rows = []
    for name, bench in (benchmarks or bench_throughput.BENCHMARKS).items():
        times: dict[str, list[float]] = {"stdlib": [], "ours": []}
        for _ in range(rounds):
            times["stdlib"].append(bench(ThreadPoolExecutor, n) / n)
            times["ours"].append(bench(CancellableThreadPoolExecutor, n) / n)
        stdlib = statistics.median(times["stdlib"])
        ours = statistics.median(times["ours"])
        rows.append({"benchmark": name, "n": n, "stdlib_us": stdlib * 1e6, "ours_us": ours * 1e6,
                     "ratio": ours / stdlib})  # fmt: skip
    return rows


def percentiles_us(samples: list[float]) -> dict[str, float]:
    """p50, p99 and max of latencies in seconds, as microseconds."""
    ordered = sorted(samples)
    return {
        "p50_us": ordered[len(ordered) // 2] * 1e6,
        "p99_us": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e6,
        "max_us": ordered[-1] * 1e6,
    }


def latency(trials: int) -> list[dict[str, Any]]:
    rows = []
    for name, task in bench_latency.TASKS.items():
        samples = bench_latency.cancel_latencies(task, trials)
        rows.append({"task": name, "trials": trials, **percentiles_us(samples)})
    return rows


def forced(trials: int) -> list[dict[str, Any]]:
    """Forced cancel latency per task shape and canceller (empty where no injection)."""
    rows: list[dict[str, Any]] = []
    if not FORCE_AVAILABLE:
        return rows
    for name, task in bench_force.TASKS.items():
        for busy in (False, True):
            samples = bench_force.forced_latencies(task, trials, busy=busy)
            rows.append({
                "task": name, "canceller": "busy" if busy else "waiting", "trials": trials,
                **percentiles_us(samples),
            })  # fmt: skip
    return rows


def waiting(trials: int, n: int, rounds: int) -> dict[str, Any]:
    """Loopback recv() cancel latency with close_on_cancel; queue_get's hot-path cost."""
    samples = bench_wait.socket_cancel_latencies(trials)
    stdlib, ours = bench_wait.queue_get_times(n, rounds)
    return {
        "socket": {"task": "recv() in close_on_cancel, loopback TCP", "trials": trials,
                   **percentiles_us(samples)},
        "queue_get": {"n": n, "stdlib_us": stdlib * 1e6, "ours_us": ours * 1e6,
                      "ratio": ours / stdlib},
    }  # fmt: skip


def memory(n: int) -> dict[str, Any]:
    stdlib = bench_memory.measure_in_subprocess("stdlib", n)
    ours = bench_memory.measure_in_subprocess("ours", n)
    if stdlib < 0 or ours < 0:  # no tracemalloc on this interpreter
        return {"n": n, "stdlib_bytes": None, "ours_bytes": None, "ratio": None}
    return {"n": n, "stdlib_bytes": stdlib, "ours_bytes": ours, "ratio": ours / stdlib}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--rounds", type=int, default=None, help="throughput rounds per class")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    n, trials, queued, rounds = (
        (2_000, 50, 20_000, 1) if args.quick else (100_000, 1000, 1_000_000, 9)
    )
    rounds = args.rounds or rounds

    env = f"{platform.python_implementation()} {platform.python_version()} on {platform.machine()}"
    print(f"cancelpool benchmarks, {env}{' (quick)' if args.quick else ''}")
    print()
    print(f"Per-task time, median of {rounds} alternating rounds of {n:,} tasks:")
    print(f"  {'benchmark':40} {'stdlib':>10} {'ours':>10} {'ratio':>7}")
    through = throughput(n, rounds)
    for row in through:
        print(f"  {row['benchmark']:40} {row['stdlib_us']:8.2f}µs {row['ours_us']:8.2f}µs "
              f"{row['ratio']:7.3f}")  # fmt: skip
    print()
    print(f"Deadline cost: ours with a 60 s deadline per task (never due) vs stdlib without, "
          f"median of {rounds} rounds of {n:,} tasks:")  # fmt: skip
    deadline_rows = throughput(n, rounds, bench_deadline.BENCHMARKS)
    for row in deadline_rows:
        print(f"  {row['benchmark']:46} {row['stdlib_us']:8.2f}µs {row['ours_us']:8.2f}µs "
              f"{row['ratio']:7.3f}")  # fmt: skip
    wakeups = bench_deadline.timer_wakeups
    print(
        f"  timer thread wake-ups during the deadline runs: {wakeups} "
        f"({len(deadline_rows) * rounds * n:,} tasks with a deadline)"
    )
    print()
    print(f"Cooperative cancel latency, cancel() to code stopped, {trials} trials:")
    print(f"  {'task':40} {'p50':>10} {'p99':>10} {'max':>10}")
    lat = latency(trials)
    for row in lat:
        print(f"  {row['task']:40} {row['p50_us']:8.1f}µs {row['p99_us']:8.1f}µs "
              f"{row['max_us']:8.1f}µs")  # fmt: skip
    print()
    wait = waiting(trials, n, rounds)
    sock = wait["socket"]
    print(f"  {sock['task']:40} {sock['p50_us']:8.1f}µs {sock['p99_us']:8.1f}µs "
          f"{sock['max_us']:8.1f}µs")  # fmt: skip
    print()
    qg = wait["queue_get"]
    print(f"queue_get(q) vs q.get() inside a task, items already there, median of {rounds} "
          f"rounds of {n:,}:")  # fmt: skip
    print(f"  {'q.get() / queue_get(q)':40} {qg['stdlib_us']:8.2f}µs {qg['ours_us']:8.2f}µs "
          f"{qg['ratio']:7.3f}")  # fmt: skip
    print()
    force_trials = max(20, trials // 2)
    print(f"Forced cancel latency, cancel(force=True, grace=0) to code stopped, "
          f"{force_trials} trials:")  # fmt: skip
    forced_rows = forced(force_trials)
    if not forced_rows:
        print("  n/a: this interpreter cannot inject (cancelpool.FORCE_AVAILABLE is False)")
    for row in forced_rows:
        label = f"{row['task']}, {row['canceller']} canceller"
        print(f"  {label:46} {row['p50_us']:8.1f}µs {row['p99_us']:8.1f}µs "
              f"{row['max_us']:8.1f}µs")  # fmt: skip
    print()
    mem = memory(queued)
    print(f"Memory per pending task, {queued:,} queued (tracemalloc):")
    if mem["ratio"] is None:
        print("  n/a: this interpreter has no working tracemalloc")
    else:
        print(f"  stdlib {mem['stdlib_bytes']:.0f} B   ours {mem['ours_bytes']:.0f} B   "
              f"ratio {mem['ratio']:.3f}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(
            {"python": env, "throughput": through, "deadline": deadline_rows,
             "timer_wakeups": wakeups, "latency": lat, "waiting": wait, "forced": forced_rows,
             "memory": mem}, indent=2
        ))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

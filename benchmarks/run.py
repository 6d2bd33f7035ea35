"""Run the benchmarks against the stdlib executor, side by side, and report ratios.

Usage::

    python benchmarks/run.py               # the full run: 100k tasks, 1000 trials, 1M queued
    python benchmarks/run.py --quick       # a smoke run with small sizes (seconds)
    python benchmarks/run.py --json out.json
    python benchmarks/run.py --only forced,window    # some sections (names: SECTIONS)

Or on every interpreter: ``tox -e bench-py39,bench-py310,bench-py311,bench-py312,bench-py313``.

Throughput rows run the stdlib and cancelpool alternately, ``--rounds`` times each, and
report the median per-task time of each and their ratio (ours / stdlib; 1.00 = equal,
below 1 = we are faster). Thread scheduling on a small machine spreads single rounds
by +-30%, hence many alternating rounds and medians. Targets: throughput ratio <= 1.10,
deadline-cost ratio <= 1.15 with no timer wake-up, cancel latency p99 < 1 ms, memory
ratio <= 1.2, forced cancel latency p99 < 2 ms for a pure loop and < 5 ms for a loop over
primitives (issue 10), ``shutdown(cancel_futures=True, timeout=0.1)`` with 1,000,000
tasks queued returns within 0.2 s (issue 11), the ``CancelRunningTasks`` dask plugin's
per-task time against plain dask on one cluster <= 1.05 (issue 13; needs ``distributed``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_dask
import bench_deadline
import bench_force
import bench_latency
import bench_memory
import bench_shutdown
import bench_throughput
import bench_wait
import bench_window
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


def forced(
    trials: int,
    tasks: Optional[dict[str, Callable[[bench_force.Progress], None]]] = None,
    cancellers: tuple[bool, ...] = (False, True),
) -> list[dict[str, Any]]:
    """Forced cancel latency per task shape (``bench_force.TASKS`` unless *tasks*) and
    canceller (busy: True), empty where this interpreter cannot interrupt."""
    rows: list[dict[str, Any]] = []
    if not FORCE_AVAILABLE:
        return rows
    for name, task in (tasks or bench_force.TASKS).items():
        for busy in cancellers:
            samples = bench_force.forced_latencies(task, trials, busy=busy)
            rows.append({
                "task": name, "canceller": "busy" if busy else "waiting", "trials": trials,
                **percentiles_us(samples),
            })  # fmt: skip
    return rows


def window(n: int, rounds: int) -> list[dict[str, Any]]:
    """ns per call or iteration of other threads' code, nothing armed vs an arm open."""
    rows: list[dict[str, Any]] = []
    if not FORCE_AVAILABLE:
        return rows
    for name, workload in bench_window.WORKLOADS.items():
        plain, armed = bench_window.window_times(workload, n, rounds)
        rows.append({"workload": name, "n": n, "plain_ns": plain * 1e9,
                     "armed_ns": armed * 1e9, "ratio": armed / plain})  # fmt: skip
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


class Sizes:
    """How big each section's run is: the full run, or ``--quick``'s smoke run."""

    def __init__(self, quick: bool, rounds: Optional[int]) -> None:
        self.n, self.trials, self.queued, default_rounds = (
            (2_000, 50, 20_000, 1) if quick else (100_000, 1000, 1_000_000, 9)
        )
        self.rounds = rounds or default_rounds
        # Forced cancels: the issue-10 targets are p99s, hence more trials.
        self.force_trials = 20 if quick else 2000
        self.window_n = 20_000 if quick else 1_000_000
        # dask's scheduler costs about 1 ms a task: thousands, not 100,000.
        self.dask_n = 200 if quick else 2_000
        self.dask_stop_trials = 5 if quick else 100


def run_throughput(size: Sizes) -> dict[str, Any]:
    rounds, n = size.rounds, size.n
    print(f"Per-task time, median of {rounds} alternating rounds of {n:,} tasks:")
    print(f"  {'benchmark':40} {'stdlib':>10} {'ours':>10} {'ratio':>7}")
    through = throughput(n, rounds)
    for row in through:
        print(f"  {row['benchmark']:40} {row['stdlib_us']:8.2f}µs {row['ours_us']:8.2f}µs "
              f"{row['ratio']:7.3f}")  # fmt: skip
    return {"throughput": through}


def run_deadline(size: Sizes) -> dict[str, Any]:
    rounds, n = size.rounds, size.n
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
    return {"deadline": deadline_rows, "timer_wakeups": wakeups}


def run_latency(size: Sizes) -> dict[str, Any]:
    print(f"Cooperative cancel latency, cancel() to code stopped, {size.trials} trials:")
    print(f"  {'task':46} {'p50':>10} {'p99':>10} {'max':>10}")
    lat = latency(size.trials)
    for row in lat:
        print_latency(row["task"], row)
    return {"latency": lat}


def run_waiting(size: Sizes) -> dict[str, Any]:
    wait = waiting(size.trials, size.n, size.rounds)
    sock = wait["socket"]
    print(f"Cancel latency of a task blocked in recv(), {size.trials} trials:")
    print_latency(sock["task"], sock)
    print()
    qg = wait["queue_get"]
    print(f"queue_get(q) vs q.get() inside a task, items already there, median of "
          f"{size.rounds} rounds of {size.n:,}:")  # fmt: skip
    print(f"  {'q.get() / queue_get(q)':40} {qg['stdlib_us']:8.2f}µs {qg['ours_us']:8.2f}µs "
          f"{qg['ratio']:7.3f}")  # fmt: skip
    return {"waiting": wait}


def run_forced(size: Sizes) -> dict[str, Any]:
    trials = size.force_trials
    print(f"Forced cancel latency, cancel(force=True, grace=0) to code stopped, {trials} "
          f"trials after {bench_force.WARMUP} not counted (stdlib: n/a, it cannot stop "
          f"a running task):")  # fmt: skip
    print(f"  {'task, canceller':56} {'p50':>10} {'p99':>10} {'max':>10}")
    forced_rows = forced(trials)
    stdlib_rows = forced(trials, bench_force.STDLIB_TASKS, (False,))
    if not FORCE_AVAILABLE:
        print("  n/a: this interpreter cannot interrupt (cancelpool.FORCE_AVAILABLE is False)")
    for row in forced_rows + stdlib_rows:
        print_latency(f"{row['task']}, {row['canceller']}", row, 56)
    return {"forced": forced_rows, "forced_stdlib": stdlib_rows}


def run_window(size: Sizes) -> dict[str, Any]:
    n, rounds = size.window_n, size.rounds
    print(f"Other threads while a forced cancel's arm is open (a task armed, blocked in "
          f"Event.wait()), ns per unit, median of {rounds} alternating rounds of "
          f"{n:,}:")  # fmt: skip
    print(f"  {'workload':40} {'unarmed':>10} {'armed':>10} {'ratio':>7}")
    rows = window(n, rounds)
    if not FORCE_AVAILABLE:
        print("  n/a: this interpreter cannot interrupt (cancelpool.FORCE_AVAILABLE is False)")
    for row in rows:
        print(f"  {row['workload']:40} {row['plain_ns']:8.1f}ns {row['armed_ns']:8.1f}ns "
              f"{row['ratio']:7.3f}")  # fmt: skip
    return {"window": rows}


def run_memory(size: Sizes) -> dict[str, Any]:
    mem = memory(size.queued)
    print(f"Memory per pending task, {size.queued:,} queued (tracemalloc):")
    if mem["ratio"] is None:
        print("  n/a: this interpreter has no working tracemalloc")
    else:
        print(f"  stdlib {mem['stdlib_bytes']:.0f} B   ours {mem['ours_bytes']:.0f} B   "
              f"ratio {mem['ratio']:.3f}")  # fmt: skip
    return {"memory": mem}


def run_shutdown(size: Sizes) -> dict[str, Any]:
    n = size.queued
    rounds = min(size.rounds, 3)  # each round queues n tasks twice, in fresh interpreters
    print(f"shutdown(cancel_futures=True) with {n:,} tasks queued, median of {rounds} "
          f"alternating rounds (stdlib: wait=False; ours: "
          f"timeout={bench_shutdown.TIMEOUT}):")  # fmt: skip
    times = bench_shutdown.shutdown_times(n, rounds)
    row = {"queued": n, "rounds": rounds, "stdlib_s": times["stdlib"], "ours_s": times["ours"],
           "ours_max_s": times["ours_max"], "ratio": times["ours"] / times["stdlib"],
           "ours_all_cancelled_s": times["ours_all_cancelled"]}  # fmt: skip
    print(f"  {'call returned':40} {row['stdlib_s']:8.3f}s  {row['ours_s']:8.3f}s "
          f"{row['ratio']:7.3f}   (ours at most {row['ours_max_s']:.3f}s)")  # fmt: skip
    print(f"  {'every future cancelled':40} {row['stdlib_s']:8.3f}s  "
          f"{row['ours_all_cancelled_s']:8.3f}s")  # fmt: skip
    return {"shutdown": row}


def run_dask(size: Sizes) -> dict[str, Any]:
    print(bench_dask.header(size.dask_n, size.rounds))
    if not bench_dask.AVAILABLE:
        print(f"  {bench_dask.MISSING}")
        return {"dask": [], "dask_stop": []}
    rows = bench_dask.dask_rows(size.dask_n, size.rounds)
    bench_dask.print_rows(rows)
    stops = bench_dask.stop_rows(size.dask_stop_trials)
    bench_dask.print_stop_rows(stops)
    return {"dask": rows, "dask_stop": stops}


def print_latency(label: str, row: dict[str, Any], width: int = 46) -> None:
    print(f"  {label:{width}} {row['p50_us']:8.1f}µs {row['p99_us']:8.1f}µs "
          f"{row['max_us']:8.1f}µs")  # fmt: skip


#: The sections of a run, in order (``--only`` picks some by these names).
SECTIONS: dict[str, Callable[[Sizes], dict[str, Any]]] = {
    "throughput": run_throughput,
    "deadline": run_deadline,
    "latency": run_latency,
    "waiting": run_waiting,
    "forced": run_forced,
    "window": run_window,
    "memory": run_memory,
    "shutdown": run_shutdown,
    "dask": run_dask,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument(
        "--rounds", type=int, default=None, help="alternating rounds per class or state"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"sections to run, of {','.join(SECTIONS)}"
    )
    args = parser.parse_args()
    only = args.only.split(",")
    unknown = [name for name in only if name not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {','.join(unknown)}; choose from {','.join(SECTIONS)}")
    size = Sizes(args.quick, args.rounds)

    env = f"{platform.python_implementation()} {platform.python_version()} on {platform.machine()}"
    print(f"cancelpool benchmarks, {env}{' (quick)' if args.quick else ''}")
    results: dict[str, Any] = {"python": env}
    for name, section in SECTIONS.items():
        if name in only:
            print()
            results.update(section(size))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

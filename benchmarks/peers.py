"""cancelpool and the alternatives, measured side by side in one run.

Usage::

    pip install -e '.[bench]'                    # pebble, func-timeout, stopit, matplotlib
    python benchmarks/peers.py                   # the full run (a few minutes)
    python benchmarks/peers.py --quick           # a smoke run with small sizes
    python benchmarks/peers.py --out docs/       # where the JSON and the plots go
    python benchmarks/peers.py --from-json docs/peers-results.json --out docs/  # redraw

The peers, each where it applies: the stdlib's ``ThreadPoolExecutor`` and
``ProcessPoolExecutor``, pebble's ``ThreadPool`` and ``ProcessPool`` (per-task
``timeout=``), ``func_timeout.func_timeout()``, ``stopit.ThreadingTimeout``, the settrace
"killable thread" recipe (``KillableThread`` below), and cancelpool, cooperative (the task
calls ``checkpoint()`` or sleeps on its token) and forced (``force=True, grace=0``).

What is measured (``MEASUREMENTS``):

* ``overhead``: the time per call of a small task with a timeout armed but never reached,
  and its ratio to a plain ``ThreadPoolExecutor`` ``submit()`` + ``result()``.
* ``stop``: for three tasks that never end by themselves within the run (a pure-Python
  loop; a loop over ``queue.Queue``, ``threading.Condition``, ``threading.Semaphore`` and
  ``logging``; ``time.sleep()``, blocked in C), the time from the task's deadline (its
  start, as the task itself stamps it, plus the timeout) to its worker being free again:
  for a pool of one worker, the moment a task queued behind it starts; for the tools that
  run each call in a thread of its own, the moment that thread has ended. A task still
  running ``cap`` seconds after its deadline is reported as not stopped. After each stop
  of the primitives loop, its queue, lock, condition, semaphore and logging handler are
  checked with non-blocking calls (``PRIMITIVE_CHECKS``).
* ``threads``: the threads (and child processes) left once 1,000 tasks have timed out.

Every measurement of every peer runs in a child interpreter of its own (``--child``):
a task that is never stopped, or a lock left held by a killed task, cannot change the
numbers of the next peer, and the child is killed, its process group with it, when its
time is up. Clocks: ``time.monotonic()``, which on Linux is one clock for every process
(``CLOCK_MONOTONIC``), so a task in a worker process stamps its start on the clock the
parent reads.

The script writes ``peers-results.json`` (every number) and the plots
``peers-overhead.png``, ``peers-stop-latency.png``, ``peers-threads-left.png`` into
``--out``, and prints the Markdown tables of ``docs/peers.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import platform
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import suppress
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Optional

#: The peers, in the order of every table and plot.
PEERS = (
    "ThreadPoolExecutor",
    "ProcessPoolExecutor",
    "pebble ThreadPool",
    "pebble ProcessPool",
    "func_timeout",
    "stopit",
    "settrace recipe",
    "cancelpool cooperative",
    "cancelpool forced",
)
#: The tasks of the ``stop`` measurement.
TASKS = ("loop", "primitives", "blocked in C")
MEASUREMENTS = ("overhead", "stop", "threads")
#: cancelpool's ``abandon_after`` in these runs: when a forced cancel gives up on a task
#: blocked in C and replaces its worker.
ABANDON_AFTER = 0.5
#: The timeout armed in the overhead measurement, never reached.
UNREACHED = 10.0


# ---------------------------------------------------------------- sizes


def sizes(quick: bool) -> dict[str, Any]:
    """The trial counts and time bounds of a run: the full one or ``--quick``."""
    if quick:
        return {"calls": 200, "timeout": 0.05, "cap": 1.5, "trials": {"loop": 3,
                "primitives": 5, "blocked in C": 1}, "batch": 20, "batch_processes": 5,
                "batch_budget": 20.0, "settle": 1.0}  # fmt: skip
    return {"calls": 2000, "timeout": 0.05, "cap": 5.0, "trials": {"loop": 20,
            "primitives": 30, "blocked in C": 3}, "batch": 1000, "batch_processes": 20,
            "batch_budget": 90.0, "settle": 5.0}  # fmt: skip


# ---------------------------------------------------------------- the tasks

#: The primitives each run of ``primitives_loop`` in this process made, newest last.
PRIMITIVES: list[Primitives] = []


class Primitives:
    """A queue, a condition over a plain lock, a semaphore, and a logger with a handler."""

    def __init__(self) -> None:
        self.queue: queue.Queue[int] = queue.Queue()
        self.lock = threading.Lock()
        self.condition = threading.Condition(self.lock)
        self.semaphore = threading.Semaphore(1)
        # A Logger of its own (not getLogger's, which keeps it for ever), writing through a
        # StreamHandler, which takes the handler's lock on every record.
        self.handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115
        self.logger = logging.Logger("peers.primitives", logging.INFO)
        self.logger.addHandler(self.handler)

    def broken(self) -> list[str]:
        """What a stopped task left broken: non-blocking checks, from another thread."""
        return [name for name, check in PRIMITIVE_CHECKS.items() if not check(self)]


def _free(lock: Any) -> bool:
    """Whether *lock* can be taken now (it is released again at once)."""
    if not lock.acquire(blocking=False):
        return False
    lock.release()
    return True


def _one_permit(p: Primitives) -> bool:
    """The semaphore holds exactly its one permit: one acquire succeeds, a second fails."""
    if not p.semaphore.acquire(blocking=False):
        return False
    extra = p.semaphore.acquire(blocking=False)
    p.semaphore.release()
    if extra:
        p.semaphore.release()
    return not extra


#: Each check passes when the primitive is intact. The loop's iterations start with an
#: empty queue and every get() followed by task_done(), so between iterations
#: ``unfinished_tasks == qsize()``; anything else makes ``Queue.join()`` hang for ever.
PRIMITIVE_CHECKS: dict[str, Callable[[Primitives], bool]] = {
    "Queue mutex held": lambda p: _free(p.queue.mutex),
    "Queue counts (join() hangs)": lambda p: p.queue.unfinished_tasks == p.queue.qsize(),
    "Condition's lock held": lambda p: _free(p.lock),
    "Semaphore count lost": _one_permit,
    "logging handler lock held": lambda p: _free(p.handler.lock),
    # Private, but it is the lock every getLogger()/addHandler() call takes.
    "logging module lock held": lambda p: _free(getattr(logging, "_lock", threading.Lock())),
}


def _stamp(path: str) -> float:
    """Write the task's start (monotonic clock) and thread id to *path*; return the start."""
    now = time.monotonic()
    with open(path, "w", encoding="ascii") as f:
        f.write(f"{now} {threading.get_ident()}")
    return now


def _checkpoint(coop: bool) -> None:
    if coop:
        from cancelpool import checkpoint

        checkpoint()


def spin(stamp: str, lifetime: float, coop: bool = False) -> None:
    """A pure-Python loop; *coop*: it calls cancelpool's ``checkpoint()`` each time."""
    end = _stamp(stamp) + lifetime
    n = 0
    while time.monotonic() < end:
        _checkpoint(coop)
        n += 1


def primitives_loop(stamp: str, lifetime: float, coop: bool = False) -> None:
    """A loop whose time is mostly spent inside ``queue``, ``threading`` and ``logging``."""
    p = Primitives()
    PRIMITIVES.append(p)
    end = _stamp(stamp) + lifetime
    n = 0
    while time.monotonic() < end:
        _checkpoint(coop)
        p.queue.put(n)
        p.queue.get()
        p.queue.task_done()
        with p.condition:
            p.condition.notify()
        with p.semaphore:
            n += 1
        p.logger.info("iteration %d", n)


def blocked(stamp: str, lifetime: float, coop: bool = False) -> None:
    """``time.sleep()``: blocked in C; *coop*: sleeps on the cancelpool token instead."""
    _stamp(stamp)
    if coop:
        from cancelpool import current_token

        current_token().sleep(lifetime)
    else:
        time.sleep(lifetime)


TASK_FUNCTIONS: dict[str, Callable[[str, float, bool], None]] = {
    "loop": spin,
    "primitives": primitives_loop,
    "blocked in C": blocked,
}


def small_work() -> int:
    """The task of the overhead measurement: a few microseconds of Python."""
    total = 0
    for i in range(100):
        total += i
    return total


def probe() -> float:
    """The task queued behind a stopped one: when it starts, the worker is free again."""
    return time.monotonic()


# ---------------------------------------------------------------- the settrace recipe


class KillableThread(threading.Thread):
    """The "killable thread" recipe, as found on StackOverflow ("Is there any way to kill
    a Thread?") and ActiveState (recipe 496960): a trace function on every frame of the
    thread raises ``SystemExit`` at the next line event once ``kill()`` was called.
    Faithful to the recipe: it traces every frame, stdlib code included.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.killed = False

    def start(self) -> None:
        self._run_original = self.run
        self.run = self._run_traced  # type: ignore[method-assign]
        super().start()

    def _run_traced(self) -> None:
        sys.settrace(self._global_trace)
        self._run_original()
        self.run = self._run_original  # type: ignore[method-assign]

    def _global_trace(self, frame: FrameType, event: str, arg: Any) -> Any:
        return self._local_trace if event == "call" else None

    def _local_trace(self, frame: FrameType, event: str, arg: Any) -> Any:
        if self.killed and event == "line":
            raise SystemExit
        return self._local_trace

    def kill(self) -> None:
        self.killed = True


# ---------------------------------------------------------------- the peers


class Peer:
    """One tool, opened in a child process: runs calls with a timeout, and stop trials."""

    #: Whether it is a pool (of one worker here), or runs each call in a thread of its own.
    pooled = True
    #: Whether its tasks run in this process (so their primitives can be checked).
    in_process = True
    coop = False

    def overhead_call(self) -> None:
        """Run ``small_work()`` once with a timeout of ``UNREACHED`` armed."""
        raise NotImplementedError

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> Any:
        """Start *fn* with a timeout of *timeout*; return a handle for ``caller_waits``."""
        raise NotImplementedError

    def caller_waits(self, handle: Any, timeout: float) -> None:
        """What a caller does: wait for the outcome at most *timeout* seconds."""
        with suppress(BaseException):  # a timeout, a deadline, a kill: all fine here
            handle.result(timeout=timeout)

    def submit_probe(self) -> Future[Any]:
        """Queue ``probe()``: it starts once the worker is free."""
        raise NotImplementedError


class StdThreads(Peer):
    def __init__(self) -> None:
        self.ex: Executor = ThreadPoolExecutor(max_workers=1)

    def overhead_call(self) -> None:
        self.ex.submit(small_work).result(timeout=UNREACHED)

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> Any:
        return self.ex.submit(fn, *args)  # the timeout only bounds the caller's wait

    def caller_waits(self, handle: Any, timeout: float) -> None:
        super().caller_waits(handle, timeout)
        handle.cancel()  # False: the stdlib cannot cancel a running task

    def submit_probe(self) -> Future[Any]:
        return self.ex.submit(probe)


class StdProcesses(StdThreads):
    in_process = False

    def __init__(self) -> None:
        self.ex = ProcessPoolExecutor(max_workers=1)


class PebbleThreads(Peer):
    def __init__(self) -> None:
        import pebble

        self.pool = pebble.ThreadPool(max_workers=1)

    def overhead_call(self) -> None:
        self.pool.schedule(small_work).result(timeout=UNREACHED)

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> Any:
        return self.pool.schedule(fn, args)  # its ThreadPool takes no timeout

    def submit_probe(self) -> Future[Any]:
        return self.pool.schedule(probe)  # type: ignore[no-any-return]


class PebbleProcesses(Peer):
    in_process = False

    def __init__(self) -> None:
        import pebble

        self.pool = pebble.ProcessPool(max_workers=1)

    def overhead_call(self) -> None:
        self.pool.schedule(small_work, timeout=UNREACHED).result()

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> Any:
        return self.pool.schedule(fn, args, timeout=timeout)

    def submit_probe(self) -> Future[Any]:
        return self.pool.schedule(probe)  # type: ignore[no-any-return]


class Cancelpool(Peer):
    def __init__(self, *, force: bool) -> None:
        from cancelpool import CancellableThreadPoolExecutor

        self.force = force
        self.coop = not force
        self.ex = CancellableThreadPoolExecutor(max_workers=1, abandon_after=ABANDON_AFTER)

    def overhead_call(self) -> None:
        view = self.ex.with_options(timeout=UNREACHED, force=self.force, grace=0)
        view.submit(small_work).result()

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> Any:
        return self.ex.with_options(timeout=timeout, force=self.force, grace=0).submit(fn, *args)

    def submit_probe(self) -> Future[Any]:
        return self.ex.submit(probe)


class ThreadPerCall(Peer):
    """A tool without a pool: each call runs in a thread of its own (or the caller's)."""

    pooled = False

    def thread_of(self, ident: int) -> Optional[threading.Thread]:
        return next((t for t in threading.enumerate() if t.ident == ident), None)


class FuncTimeout(ThreadPerCall):
    def __init__(self) -> None:
        from func_timeout import func_timeout

        self.func_timeout = func_timeout

    def overhead_call(self) -> None:
        self.func_timeout(UNREACHED, small_work)

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> Any:
        from func_timeout import FunctionTimedOut

        with suppress(FunctionTimedOut):  # func_timeout() returns at the timeout
            self.func_timeout(timeout, fn, args)


class Stopit(ThreadPerCall):
    def __init__(self) -> None:
        import stopit

        self.timeout = stopit.ThreadingTimeout

    def overhead_call(self) -> None:
        with self.timeout(UNREACHED):
            small_work()

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> Any:
        # stopit stops the block of the thread that entered it: here a thread of the
        # benchmark's, so that the benchmark can bound its wait for a block that goes on.
        def run() -> None:
            with self.timeout(timeout):
                fn(*args)

        threading.Thread(target=run, daemon=True).start()


class Settrace(ThreadPerCall):
    def overhead_call(self) -> None:
        thread = KillableThread(target=small_work, daemon=True)
        thread.start()
        thread.join(UNREACHED)

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> Any:
        thread = KillableThread(target=fn, args=args, daemon=True)
        thread.start()
        return thread

    def caller_waits(self, handle: Any, timeout: float) -> None:
        handle.join(timeout)
        handle.kill()


OPENERS: dict[str, Callable[[], Peer]] = {
    "ThreadPoolExecutor": StdThreads,
    "ProcessPoolExecutor": StdProcesses,
    "pebble ThreadPool": PebbleThreads,
    "pebble ProcessPool": PebbleProcesses,
    "func_timeout": FuncTimeout,
    "stopit": Stopit,
    "settrace recipe": Settrace,
    "cancelpool cooperative": lambda: Cancelpool(force=False),
    "cancelpool forced": lambda: Cancelpool(force=True),
}


# ---------------------------------------------------------------- measurements (child)


def measure_overhead(peer: Peer, calls: int) -> dict[str, Any]:
    """Seconds per call of ``small_work()`` with an unreached timeout, and the baseline's.

    Rounds of the peer and of the baseline (a plain ``ThreadPoolExecutor``) alternate in
    this one process, so that the ratio compares them under the same load; the best of
    3 rounds of each.
    """
    baseline = ThreadPoolExecutor(max_workers=1)

    def plain() -> None:
        baseline.submit(small_work).result()

    times: dict[str, list[float]] = {"peer": [], "baseline": []}
    for call, key in ((peer.overhead_call, "peer"), (plain, "baseline")) * 4:
        t0 = time.perf_counter()
        for _ in range(calls):
            call()
        times[key].append((time.perf_counter() - t0) / calls)
    # The first round of each warms up (threads, processes, caches): not counted.
    best = {key: min(values[1:]) for key, values in times.items()}
    return {"calls": calls, "per_call_s": best["peer"], "baseline_s": best["baseline"],
            "ratio": best["peer"] / best["baseline"], "rounds_s": times}  # fmt: skip


def measure_stop(peer: Peer, task: str, size: dict[str, Any]) -> dict[str, Any]:
    """Stop trials of *task* until done or one is not stopped within ``cap`` seconds."""
    timeout, cap = size["timeout"], size["cap"]
    latencies: list[float] = []
    broken: dict[str, int] = {}
    checked = 0
    stopped = True
    with tempfile.TemporaryDirectory() as tmp:
        for trial in range(size["trials"][task]):
            stamp = os.path.join(tmp, f"{trial}.stamp")
            latency = _stop_trial(peer, task, stamp, timeout, cap)
            if latency is None:
                stopped = False
                break
            latencies.append(latency)
            if task == "primitives" and peer.in_process:
                checked += 1
                for name in PRIMITIVES[-1].broken():
                    broken[name] = broken.get(name, 0) + 1
    return {"trials": len(latencies) + (not stopped), "stopped": stopped, "cap_s": cap,
            "latencies_s": latencies, "primitives_checked": checked,
            "broken": broken}  # fmt: skip


def _stop_trial(peer: Peer, task: str, stamp: str, timeout: float, cap: float) -> Optional[float]:
    """One task timed out: seconds from its deadline until its worker is free, or None."""
    lifetime = cap + 5.0  # outlives the cap; then it ends by itself (no orphan spins)
    args = (stamp, lifetime, peer.coop)
    fn = TASK_FUNCTIONS[task]
    if peer.pooled:
        handle = peer.submit(fn, args, timeout)
        probe_future = peer.submit_probe()  # queued behind the task: runs once it is free
        start, _ = _read_stamp(stamp)
        limit = start + timeout + cap
        peer.caller_waits(handle, max(0.0, start + timeout - time.monotonic()))
        free = _probe_start(probe_future, limit)
        return None if free is None else free - (start + timeout)
    assert isinstance(peer, ThreadPerCall)
    if isinstance(peer, FuncTimeout):
        peer.submit(fn, args, timeout)  # returns at the timeout
        start, ident = _read_stamp(stamp)
        thread = peer.thread_of(ident)
    else:
        handle = peer.submit(fn, args, timeout)
        start, ident = _read_stamp(stamp)
        thread = peer.thread_of(ident)
        if isinstance(peer, Settrace):
            peer.caller_waits(handle, max(0.0, start + timeout - time.monotonic()))
    limit = start + timeout + cap
    if thread is not None:
        thread.join(max(0.0, limit - time.monotonic()))
        if thread.is_alive():
            return None
    return time.monotonic() - (start + timeout)


def _probe_start(future: Future[Any], limit: float) -> Optional[float]:
    """When the probe started, or None if it has not by *limit* (monotonic)."""
    try:
        return float(future.result(timeout=max(0.0, limit - time.monotonic())))
    except Exception as exc:  # the stdlib's TimeoutError is its own class on 3.9/3.10
        if isinstance(exc, TimeoutError) or type(exc).__name__ == "TimeoutError":
            return None
        raise


def _read_stamp(path: str, bound: float = 30.0) -> tuple[float, int]:
    """The start stamped by a task, waiting for it (at most *bound* seconds)."""
    deadline = time.monotonic() + bound
    while True:
        try:
            with open(path, encoding="ascii") as f:
                start, ident = f.read().split()
            return float(start), int(ident)
        except (OSError, ValueError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the task did not start within {bound} s") from None
            time.sleep(0.0005)


def measure_threads(peer: Peer, name: str, size: dict[str, Any]) -> dict[str, Any]:
    """Threads and child processes alive after a batch of timed-out loops."""
    n = size["batch_processes"] if not peer.in_process else size["batch"]
    timeout = 0.01
    baseline = 1  # the main thread: the peer's pool threads start at its first task
    peak = threading.active_count()
    budget_end = time.monotonic() + size["batch_budget"]
    done = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            if time.monotonic() > budget_end:
                break
            stamp = os.path.join(tmp, f"{i}.stamp")
            args = (stamp, 2.0, peer.coop)  # each loop would run for 2 s
            if isinstance(peer, Stopit):  # the usual shape: in the caller's thread
                with peer.timeout(timeout):
                    spin(*args)
            elif isinstance(peer, Settrace):  # kill at the timeout, do not wait for it
                peer.caller_waits(peer.submit(spin, args, timeout), timeout)
            else:  # returns at the timeout (func_timeout); or a future failing then
                handle = peer.submit(spin, args, timeout)
                if handle is not None:
                    peer.caller_waits(handle, timeout + 10.0)
            done += 1
            peak = max(peak, threading.active_count())
    right_after = threading.active_count() - baseline
    settle_end = time.monotonic() + size["settle"]
    while time.monotonic() < settle_end:  # until the count has not moved for 0.5 s
        before = threading.active_count()
        time.sleep(0.5)
        if threading.active_count() == before:
            break
    return {"tasks": done, "planned": n, "timeout_s": timeout,
            "threads_right_after": right_after, "threads_peak": peak - baseline,
            "threads_after_settle": threading.active_count() - baseline,
            "processes": len(multiprocessing.active_children())}  # fmt: skip


def run_child(spec: dict[str, Any]) -> None:
    """``--child``: one measurement of one peer; prints its JSON, then exits hard."""
    warnings.simplefilter("ignore")  # fork-with-threads, still-running and abandon notices
    logging.raiseExceptions = False  # a swallowed stop would print a traceback per record
    size = sizes(spec["quick"])
    peer = OPENERS[spec["peer"]]()
    if spec["measure"] == "overhead":
        result = measure_overhead(peer, size["calls"])
    elif spec["measure"] == "stop":
        result = measure_stop(peer, spec["task"], size)
    else:
        result = measure_threads(peer, spec["peer"], size)
    print(json.dumps(result), flush=True)
    for child in multiprocessing.active_children():
        child.kill()
    # Not a normal exit: a peer that never stopped its task would hang it (the stdlib's
    # exit hook joins its workers) or leave a worker process spinning.
    os._exit(0)


# ---------------------------------------------------------------- the run (parent)


def child(spec: dict[str, Any], bound: float) -> dict[str, Any]:
    """Run one ``--child``; kill it and its process group after *bound* seconds."""
    cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=bound)
    except subprocess.TimeoutExpired:
        out, err = "", f"killed after {bound} s"
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # and any worker process it left
        proc.wait()
    lines = out.strip().splitlines()
    if not lines:
        return {"error": err.strip().splitlines()[-3:]}
    return dict(json.loads(lines[-1]))


def run(quick: bool, only: tuple[str, ...]) -> dict[str, Any]:
    """Every measurement of every peer, each in a child process."""
    size = sizes(quick)
    results: dict[str, Any] = {"meta": _meta(quick, size), "overhead": {}, "stop": {},
                               "threads": {}}  # fmt: skip
    for name in PEERS:
        if "overhead" in only:
            spec = {"measure": "overhead", "peer": name, "quick": quick}
            results["overhead"][name] = child(spec, 120)
            _progress("overhead", name, results["overhead"][name])
        if "stop" in only:
            results["stop"][name] = {}
            for task in TASKS:
                spec = {"measure": "stop", "peer": name, "task": task, "quick": quick}
                bound = 60 + size["trials"][task] * (size["cap"] + 1)
                results["stop"][name][task] = child(spec, bound)
                _progress("stop " + task, name, results["stop"][name][task])
        if "threads" in only and _applies_threads(name):
            spec = {"measure": "threads", "peer": name, "quick": quick}
            results["threads"][name] = child(spec, size["batch_budget"] + 60)
            _progress("threads", name, results["threads"][name])
    return results


def _applies_threads(name: str) -> bool:
    # The stdlib pools and pebble's ThreadPool cannot stop a task (see the stop rows):
    # 1,000 "timed-out" tasks would run one after the other to their end.
    return name not in ("ThreadPoolExecutor", "ProcessPoolExecutor", "pebble ThreadPool")


def _progress(what: str, name: str, result: dict[str, Any]) -> None:
    print(f"  {what:<18} {name:<24} {json.dumps(result)[:100]}", file=sys.stderr, flush=True)


def _meta(quick: bool, size: dict[str, Any]) -> dict[str, Any]:
    import cancelpool

    versions = {"cancelpool": cancelpool.__version__}
    for dist in ("pebble", "func-timeout", "stopit", "matplotlib"):
        versions[dist] = _version(dist)
    return {
        "command": "python benchmarks/peers.py" + (" --quick" if quick else ""),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{_cpu_model()}",
        "versions": versions,
        "sizes": size,
        "abandon_after_s": ABANDON_AFTER,
    }


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


# ---------------------------------------------------------------- tables


def overhead_table(results: dict[str, Any]) -> str:
    """Markdown: time per call with an unreached timeout, and the ratio to the baseline."""
    rows = ["| peer | how the timeout is armed | µs per call | baseline µs, same process "
            "| ratio |", "|---|---|---|---|---|"]  # fmt: skip
    for name, row in results["overhead"].items():
        if "per_call_s" not in row:
            rows.append(f"| {name} | {ARMED[name]} | error: {row.get('error')} | | |")
            continue
        rows.append(f"| {name} | {ARMED[name]} | {row['per_call_s'] * 1e6:.1f} "
                    f"| {row['baseline_s'] * 1e6:.1f} | {row['ratio']:.2f} |")  # fmt: skip
    return "\n".join(rows)


#: How each peer arms the timeout in the overhead measurement.
ARMED = {
    "ThreadPoolExecutor": "`submit()`, `result(timeout=10)` (bounds the wait only)",
    "ProcessPoolExecutor": "`submit()`, `result(timeout=10)` (bounds the wait only)",
    "pebble ThreadPool": "`schedule()`, `result(timeout=10)` (bounds the wait only)",
    "pebble ProcessPool": "`schedule(fn, timeout=10)`",
    "func_timeout": "`func_timeout(10, fn)` (a new thread per call)",
    "stopit": "`with ThreadingTimeout(10):` in the caller's thread (a timer thread per call)",
    "settrace recipe": "a new `KillableThread` per call, `join(10)`",
    "cancelpool cooperative": "`with_options(timeout=10).submit()`",
    "cancelpool forced": "`with_options(timeout=10, force=True, grace=0).submit()`",
}


def stop_cell(row: dict[str, Any]) -> str:
    """One stop result: median and max latency, or why there is none."""
    if "error" in row:
        return f"error: {row['error']}"
    lat = row["latencies_s"]
    if not row["stopped"]:
        return f"**not stopped within {row['cap_s']:g} s**" + (
            f" (trial {len(lat) + 1}; {len(lat)} stopped before)" if lat else ""
        )
    return f"{_ms(statistics.median(lat))} (max {_ms(max(lat))}, n={len(lat)})"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 10 else f"{seconds:.0f} s"


def stop_table(results: dict[str, Any]) -> str:
    """Markdown: time from the deadline to the worker free again, per peer and task."""
    rows = ["| peer | " + " | ".join(TASKS) + " |", "|---" * (len(TASKS) + 1) + "|"]
    for name, tasks in results["stop"].items():
        rows.append(f"| {name} | " + " | ".join(stop_cell(tasks[t]) for t in TASKS) + " |")
    return "\n".join(rows)


def broken_table(results: dict[str, Any]) -> str:
    """Markdown: primitives left broken after the stops of the primitives loop."""
    names = list(PRIMITIVE_CHECKS)
    rows = ["| peer | stops checked | " + " | ".join(names) + " |",
            "|---" * (len(names) + 2) + "|"]  # fmt: skip
    for name, tasks in results["stop"].items():
        row = tasks["primitives"]
        if "error" in row:
            continue
        if not row["primitives_checked"]:
            why = "n/a: other process" if name in _PROCESS_PEERS else "n/a: not stopped"
            rows.append(f"| {name} | {why} |" + " |" * len(names))
            continue
        cells = [str(row["broken"].get(n, 0)) for n in names]
        rows.append(f"| {name} | {row['primitives_checked']} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


_PROCESS_PEERS = ("ProcessPoolExecutor", "pebble ProcessPool")


def threads_table(results: dict[str, Any]) -> str:
    """Markdown: what is left after a batch of timed-out tasks."""
    rows = ["| peer | tasks timed out | threads right after | peak | threads after waiting "
            "| child processes |", "|---|---|---|---|---|---|"]  # fmt: skip
    for name, row in results["threads"].items():
        if "error" in row:
            rows.append(f"| {name} | error: {row['error']} | | | | |")
            continue
        planned = f" of {row['planned']}" if row["tasks"] < row["planned"] else ""
        tasks = f"{row['tasks']}{planned}"
        rows.append(f"| {name} | {tasks} | {row['threads_right_after']} | {row['threads_peak']} "
                    f"| {row['threads_after_settle']} | {row['processes']} |")  # fmt: skip
    return "\n".join(rows)


# ---------------------------------------------------------------- plots


def plot(results: dict[str, Any], out: Path) -> list[Path]:
    """Write the three PNG plots into *out*; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = [out / "peers-overhead.png", out / "peers-stop-latency.png",
             out / "peers-threads-left.png"]  # fmt: skip
    _plot_overhead(plt, results, paths[0])
    _plot_stop(plt, results, paths[1])
    _plot_threads(plt, results, paths[2])
    return paths


def _plot_overhead(plt: Any, results: dict[str, Any], path: Path) -> None:
    rows = [(n, r) for n, r in results["overhead"].items() if "per_call_s" in r][::-1]
    fig, ax = plt.subplots(figsize=(8, 4.2))
    names = [n for n, _ in rows]
    values = [r["per_call_s"] * 1e6 for _, r in rows]
    bars = ax.barh(names, values, color=[_colour(n) for n in names])
    ax.set_xscale("log")
    ax.set_xlim(min(values) / 2, max(values) * 4)
    labels = [f"{r['per_call_s'] * 1e6:.0f} µs ({r['ratio']:.1f}x)" for _, r in rows]
    ax.bar_label(bars, labels=labels, padding=3, fontsize=8)
    ax.set_xlabel("µs per call, a timeout armed but not reached (log scale; lower is better);"
                  "\nin brackets: ratio to a plain ThreadPoolExecutor, same process")  # fmt: skip
    ax.set_title("Per-call overhead")
    _save(plt, fig, path)


def _plot_stop(plt: Any, results: dict[str, Any], path: Path) -> None:
    names = list(results["stop"])[::-1]
    cap = results["meta"]["sizes"]["cap"]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    height = 0.27
    colours = ("tab:blue", "tab:orange", "tab:green")
    for k, task in enumerate(TASKS):
        ys = [i + (1 - k) * height for i in range(len(names))]
        values, labels = [], []
        for name in names:
            row = results["stop"][name][task]
            if row.get("stopped"):
                value = statistics.median(row["latencies_s"]) * 1e3
                values.append(max(value, 0.01))
                labels.append(f"{value:.1f} ms" if value < 1000 else f"{value / 1e3:.1f} s")
            else:
                values.append(cap * 1e3)
                labels.append("not stopped" if "error" not in row else "error")
        bars = ax.barh(ys, values, height, label=task, color=colours[k])
        for bar, label in zip(bars, labels):
            if label in ("not stopped", "error"):
                bar.set_hatch("//")
                bar.set_alpha(0.35)
        ax.bar_label(bars, labels=labels, padding=2, fontsize=7)
    ax.set_yticks(range(len(names)), names)
    ax.set_xscale("log")
    ax.set_xlim(0.01, cap * 1e3 * 20)
    ax.set_xlabel(f"ms from the deadline to the worker free again (median; log scale)\n"
                  f"hatched: not stopped within {cap:g} s")  # fmt: skip
    ax.set_title("Stopping a task that does not end by itself")
    ax.legend(loc="lower right", fontsize=8)
    _save(plt, fig, path)


def _plot_threads(plt: Any, results: dict[str, Any], path: Path) -> None:
    rows = [(n, r) for n, r in results["threads"].items() if "tasks" in r][::-1]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    names = [f"{n} ({r['tasks']} tasks)" for n, r in rows]
    ys = range(len(rows))
    peak = ax.barh([y + 0.2 for y in ys], [r["threads_peak"] for _, r in rows], 0.4,
                   label="peak during the batch", color="tab:gray")  # fmt: skip
    left = ax.barh([y - 0.2 for y in ys], [r["threads_after_settle"] for _, r in rows], 0.4,
                   label="left after the batch", color="tab:red")  # fmt: skip
    ax.bar_label(peak, padding=2, fontsize=8)
    ax.bar_label(left, padding=2, fontsize=8)
    ax.set_yticks(list(ys), names)
    ax.set_xlabel("threads besides the main thread (pool workers and helpers included)")
    ax.set_title("Threads after timed-out tasks")
    ax.legend(loc="lower right", fontsize=8)
    _save(plt, fig, path)


def _colour(name: str) -> str:
    return "tab:green" if name.startswith("cancelpool") else "tab:blue"


def _save(plt: Any, fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- main


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--out", type=Path, default=None,
                        help="directory for peers-results.json and the plots "
                             "(default: a new temporary directory)")  # fmt: skip
    parser.add_argument("--only", default=",".join(MEASUREMENTS),
                        help=f"comma-separated subset of {','.join(MEASUREMENTS)}")  # fmt: skip
    parser.add_argument("--no-plots", action="store_true", help="skip matplotlib")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="measure nothing: print the tables and redraw the plots of the "
                             "peers-results.json of an earlier run")  # fmt: skip
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(json.loads(args.child))
    out = args.out or Path(tempfile.mkdtemp(prefix="peers-"))
    out.mkdir(parents=True, exist_ok=True)
    if args.from_json:
        results = json.loads(args.from_json.read_text())
    else:
        results = run(args.quick, tuple(args.only.split(",")))
        (out / "peers-results.json").write_text(json.dumps(results, indent=1) + "\n")
    for title, table in (
        ("Per-call overhead", overhead_table),
        ("Time to a free worker", stop_table),
        ("Primitives left broken", broken_table),
        ("Threads left", threads_table),
    ):
        print(f"\n### {title}\n\n{table(results)}")
    print(f"\n{results['meta']['command']} ({results['meta']['date']}); "
          f"{results['meta']['python']}; {results['meta']['machine']}")  # fmt: skip
    if not args.no_plots:
        for path in plot(results, out):
            print(f"wrote {path}", file=sys.stderr)
    if not args.from_json:
        print(f"wrote {out / 'peers-results.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

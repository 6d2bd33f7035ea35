"""cancelpool.dask on a real dask.distributed cluster: cancelling a running task stops it.

Every test starts a ``LocalCluster`` of worker *processes* on loopback and closes it. A
task reports on a ``distributed.Queue`` when it starts and stops (``tests/_dask_tasks``),
and the test reads the queue with a bounded wait: nothing here sleeps to let something
happen. A task left alone would run 60 s, far beyond every wait, so a task that reports
its stop within them was stopped.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import random
import sys
import threading
import time
import types
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional

import pytest

distributed = pytest.importorskip(
    "distributed",
    reason="needs dask.distributed (pip install 'cancelpool[dask]'), not installed on "
    "this interpreter (it installs on CPython 3.10+)",
)

import cloudpickle  # noqa: E402 - a dependency of distributed
import dask  # noqa: E402

import cancelpool  # noqa: E402
from cancelpool.dask import (  # noqa: E402
    ANNOTATION,
    CLOSE_REASON,
    REASON,
    CancelRunningTasks,
    _DaskThreadPoolExecutor,
)
from tests import _dask_tasks as tasks  # noqa: E402
from tests.conftest import STRESS_SCALE, WAIT, wait_for  # noqa: E402

cloudpickle.register_pickle_by_value(tasks)

pytestmark = [
    pytest.mark.subprocess,
    # dask's client and cluster may warn on their own (a port in use, a slow close):
    # those are not what these tests are about.
    pytest.mark.filterwarnings("default"),
]


@pytest.fixture(scope="module", autouse=True)
def _dask_offload_thread() -> None:
    """Start dask's process-wide offload thread before the tests' thread-leak guard looks.

    dask starts it on first use and keeps it for the life of the process, by design.
    """
    distributed.utils._offload_executor.submit(int).result(timeout=WAIT)


@contextlib.contextmanager
def cluster(
    plugin: Optional[CancelRunningTasks] = None, *, threads: int = 1, workers: int = 1
) -> Iterator[Any]:
    """A client of a fresh LocalCluster of *workers* processes, with *plugin* registered."""
    with (
        distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=threads,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",  # any free port: two tests at once must not collide
            silence_logs=logging.ERROR,
        ) as local,
        distributed.Client(local, timeout=WAIT) as client,
    ):
        if plugin is not None:
            client.register_plugin(plugin)
        yield client


def new_log(client: Any) -> tuple[str, Any]:
    """A queue the tasks report on, and its name (to pass to them)."""
    name = f"log-{uuid.uuid4().hex}"
    return name, distributed.Queue(name, client=client)


def expect(log: Any, *items: tuple[Any, ...]) -> None:
    """The next reports on *log* are *items*, in any order (each waited for, bounded)."""
    got = [tuple(log.get(timeout=WAIT)) for _ in items]
    assert sorted(got, key=repr) == sorted(items, key=repr)


def worker_log(client: Any) -> str:
    """Everything the workers logged (what ``client.get_worker_logs()`` returns)."""
    return "\n".join(line for logs in client.get_worker_logs().values() for _, line in logs)


def pools(client: Any) -> list[dict[str, Any]]:
    return list(client.run(tasks.pool_of).values())


# ------------------------------------------------------------------- cooperative


@pytest.mark.parametrize("then_next_task", [False, True], ids=["stops", "frees-thread"])
def test_client_cancel_stops_a_cooperative_task(then_next_task: bool) -> None:
    with cluster(CancelRunningTasks()) as client:
        name, log = new_log(client)
        future = client.submit(tasks.wait_for_cancel, name, "a")
        expect(log, ("started", "a"))
        client.cancel(future)
        if then_next_task:
            # One thread: the next task runs only once the cancelled one has let go of it.
            assert client.submit(tasks.inc, 1).result(timeout=WAIT) == 2
        expect(log, ("stopped", "a", REASON))
        assert future.cancelled()
        # The worker hears of the stop after the task reported it: wait for that.
        wait_for(lambda: pools(client)[0]["executing"] == 0, "dask to count the slot free")
        (pool,) = pools(client)
        assert pool["class"] == "_DaskThreadPoolExecutor"
        assert pool["threads"] == 1
        # Reported as cancelled, not as an error (test_a_deadline_annotation... shows
        # the line this would be).
        assert "Compute Failed" not in worker_log(client)


def test_without_the_plugin_the_cancelled_task_keeps_its_thread() -> None:
    # The problem the plugin solves, shown on the same cluster setup: dask marks the
    # key cancelled, and the task runs on in its thread, unaware.
    with cluster() as client:
        name, log = new_log(client)
        future = client.submit(tasks.hold, name, "a", f"release-{name}")
        expect(log, ("started", "a", False))
        client.cancel(future)

        def cancelled_but_running(dask_worker: Any) -> bool:
            ts = dask_worker.state.tasks.get(future.key)
            return bool(ts is not None and ts.state == "cancelled" and dask_worker.active_threads)

        wait_for(lambda: all(client.run(cancelled_but_running).values()), "the cancelled key")
        distributed.Event(f"release-{name}", client=client).set()


def test_results_and_errors_are_reported_as_before() -> None:
    with cluster(CancelRunningTasks(), threads=2) as client:
        assert client.gather(client.map(tasks.inc, range(20))) == list(range(1, 21))
        with pytest.raises(ZeroDivisionError):
            client.submit(tasks.fail, 1).result(timeout=WAIT)
        # dask's wrapper returns a task's failure as a message: 21 tasks completed. (A
        # result reaches the client before its run's own bookkeeping ends: wait for it.)
        wait_for(lambda: pools(client)[0]["stats"]["completed"] == 21, "21 tasks counted")
        (pool,) = pools(client)
        assert pool["stats"]["cancelled"] == pool["stats"]["failed"] == 0


# ------------------------------------------------------------------------ forced


@pytest.mark.skipif(not cancelpool.FORCE_AVAILABLE, reason="no forced interrupt here")
def test_force_interrupts_a_pure_python_loop() -> None:
    with cluster(CancelRunningTasks(force=True, grace=0.1)) as client:
        name, log = new_log(client)
        future = client.submit(tasks.spin, name, "a")
        expect(log, ("started", "a"))
        client.cancel(future)
        expect(log, ("stopped", "a", REASON))
        # The same thread runs the next task: it was interrupted, not abandoned.
        assert client.submit(tasks.inc, 1).result(timeout=WAIT) == 2
        (pool,) = pools(client)
        assert pool["stats"]["interrupts"] == 1
        assert pool["stats"]["abandoned_workers"] == 0
        assert pool["threads"] == 1


def test_force_abandons_a_thread_stuck_in_c_and_frees_the_slot() -> None:
    plugin = CancelRunningTasks(force=True, grace=0.05, abandon_after=0.1)
    with cluster(plugin) as client:
        name, log = new_log(client)
        future = client.submit(tasks.stuck_in_c, name, "a")
        expect(log, ("started", "a"))
        client.cancel(future)
        # The thread is still in time.sleep(60): only a replacement can run this.
        assert client.submit(tasks.inc, 1).result(timeout=WAIT) == 2
        (pool,) = pools(client)
        assert pool["stats"]["abandoned_workers"] == 1
        assert pool["threads"] == 1  # the replacement; dask counts the slot free
        assert pool["executing"] == 0
        assert future.status == "cancelled"
        assert "Compute Failed" not in worker_log(client)


# ------------------------------------------------------------------------- scale


def test_a_hundred_running_tasks_cancelled_at_once_all_stop() -> None:
    with cluster(CancelRunningTasks(), threads=50, workers=2) as client:
        name, log = new_log(client)
        futures = [client.submit(tasks.wait_for_cancel, name, i) for i in range(100)]
        expect(log, *[("started", i) for i in range(100)])
        client.cancel(futures)
        expect(log, *[("stopped", i, REASON) for i in range(100)])

        def idle() -> bool:
            return all(p["executing"] == 0 and p["stats"]["running"] == 0 for p in pools(client))

        wait_for(idle, "both workers to be idle")
        assert sum(p["stats"]["cancelled"] for p in pools(client)) == 100


def test_a_client_that_disconnects_leaves_no_task_running() -> None:
    with cluster(CancelRunningTasks(), threads=2) as client:
        name, log = new_log(client)
        other = distributed.Client(client.cluster, timeout=WAIT)
        try:
            # Held until the client goes: a future dropped releases its key (and
            # stops its task, as test_a_released_future_stops_its_task shows).
            held = [other.submit(tasks.wait_for_cancel, name, x) for x in "ab"]
            expect(log, ("started", "a"), ("started", "b"))
        finally:
            other.close()
        assert all(f.status != "finished" for f in held)
        expect(log, ("stopped", "a", REASON), ("stopped", "b", REASON))
        wait_for(lambda: pools(client)[0]["active_threads"] == 0, "no task to be running")


def test_a_released_future_stops_its_task() -> None:
    with cluster(CancelRunningTasks()) as client:
        name, log = new_log(client)
        future = client.submit(tasks.wait_for_cancel, name, "a")
        expect(log, ("started", "a"))
        future.release()
        expect(log, ("stopped", "a", REASON))


def test_a_key_resubmitted_while_its_cancelled_run_stops_is_computed_again() -> None:
    with cluster(CancelRunningTasks()) as client:
        name, log = new_log(client)
        gate = f"gate-{name}"
        first = client.submit(tasks.stop_late, name, "a", gate, key=f"key-{name}")
        expect(log, ("started", "a"))
        client.cancel(first)
        expect(log, ("stopping", "a", REASON))  # cancelled, and held on by the gate
        again = client.submit(tasks.stop_late, name, "a", gate, key=f"key-{name}")

        def resumed(dask_worker: Any) -> bool:
            ts = dask_worker.state.tasks.get(f"key-{name}")
            return ts is not None and ts.state == "executing"

        # dask takes the running, cancelled run over for the new request...
        wait_for(lambda: all(client.run(resumed).values()), "the key to be executing again")
        distributed.Event(gate, client=client).set()
        # ...which then fails with TaskCancelled: dask drops that and computes the key.
        assert again.result(timeout=WAIT) == "computed again"


def test_a_closing_worker_stops_its_running_tasks(tmp_path: Any) -> None:
    report = tmp_path / "reason.txt"
    with cluster(CancelRunningTasks()) as client:
        name, log = new_log(client)
        client.submit(tasks.wait_then_write, name, "a", str(report))
        expect(log, ("started", "a"))
        client.run(tasks.close_worker)
        wait_for(lambda: report.exists(), "the task to report its stop")
    # Whichever comes first stops it: the scheduler releasing the closing worker's keys
    # (dask-cancel, as here so far), or the worker cancelling what it awaits as it closes
    # (dask-close: test_cancelling_what_dask_awaits_cancels_the_task).
    assert report.read_text() in (REASON, CLOSE_REASON)


# ------------------------------------------------------------- registering late


def test_registered_while_tasks_run_takes_effect_for_new_ones() -> None:
    with cluster(threads=2) as client:
        name, log = new_log(client)
        release = f"release-{name}"
        old = client.submit(tasks.hold, name, "old", release)
        expect(log, ("started", "old", False))  # on dask's own pool

        client.register_plugin(CancelRunningTasks())
        new = client.submit(tasks.wait_for_cancel, name, "new")
        expect(log, ("started", "new"))
        client.cancel(new)
        expect(log, ("stopped", "new", REASON))

        # The task that started before goes on, on the old pool, and finishes.
        distributed.Event(release, client=client).set()
        assert old.result(timeout=WAIT) == "held"
        # Its entry in dask's active_threads went too (the plugin's view shares it).
        wait_for(lambda: pools(client)[0]["active_threads"] == 0, "no entry left behind")


def test_unregistering_puts_back_dasks_pool() -> None:
    with cluster(CancelRunningTasks(), threads=2) as client:
        assert pools(client)[0]["class"] == "_DaskThreadPoolExecutor"
        client.unregister_worker_plugin(CancelRunningTasks.name)
        assert pools(client)[0]["class"] == "ThreadPoolExecutor"
        assert client.submit(tasks.inc, 1, pure=False).result(timeout=WAIT) == 2


# ---------------------------------------------------------------------- deadlines


def test_a_deadline_annotation_fails_the_task_with_deadline_exceeded() -> None:
    with cluster(CancelRunningTasks()) as client:
        name, log = new_log(client)
        with dask.annotate(**{ANNOTATION: 0.2}):
            future = client.submit(tasks.wait_for_cancel, name, "a")
        expect(log, ("started", "a"))
        expect(log, ("stopped", "a", "deadline"))
        error = future.exception(timeout=WAIT)
        assert isinstance(error, cancelpool.DeadlineExceeded)
        assert "0.2 s" in str(error)
        assert "Compute Failed" in worker_log(client)  # a task error, as dask logs one
        # The slot is free again.
        assert client.submit(tasks.inc, 1).result(timeout=WAIT) == 2


@pytest.mark.parametrize("bad", ["soon", -1, float("nan"), True])
def test_a_bad_deadline_annotation_is_logged_and_ignored(bad: object) -> None:
    with cluster(CancelRunningTasks()) as client:
        with dask.annotate(**{ANNOTATION: bad}):
            future = client.submit(tasks.inc, 1)
        assert future.result(timeout=WAIT) == 2
        assert f"task {future.key!r} has no deadline" in worker_log(client)


def test_a_task_that_ends_in_time_is_not_touched_by_its_deadline() -> None:
    with cluster(CancelRunningTasks()) as client:
        with dask.annotate(**{ANNOTATION: 30}):
            assert client.submit(tasks.inc, 1).result(timeout=WAIT) == 2
        (pool,) = pools(client)
        assert pool["stats"]["timed_out"] == 0


# ------------------------------------------------------------- secede and rejoin


def test_worker_client_secedes_and_rejoins_on_one_thread() -> None:
    with cluster(CancelRunningTasks()) as client:
        assert client.gather(client.map(tasks.via_worker_client, [1, 2, 3])) == [102, 103, 104]

        def settled() -> bool:
            (pool,) = pools(client)
            return bool(pool["threads"] == 1 and pool["detached"] == 0)

        wait_for(settled, "the pool to be back to one thread, nothing detached")


def test_a_seceded_task_is_cancelled_too() -> None:
    with cluster(CancelRunningTasks()) as client:
        name, log = new_log(client)
        future = client.submit(tasks.seceded_wait_for_cancel, name, "a")
        expect(log, ("started", "a"))
        # Seceded: the pool started a thread for this one.
        assert client.submit(tasks.inc, 1).result(timeout=WAIT) == 2
        client.cancel(future)
        expect(log, ("stopped", "a", REASON))
        wait_for(lambda: pools(client)[0]["detached"] == 0, "the seceded thread to retire")


# ------------------------------------------- the executor dask awaits, in-process


def test_what_dask_awaits_is_settled_when_the_code_stops_not_when_cancelled() -> None:
    # dask awaits the future submit() returns: cancelling the task must not cancel it
    # (the worker would drop the asyncio CancelledError and keep the slot busy).
    started, go_on = threading.Event(), threading.Event()

    def job() -> str:
        started.set()
        cancelpool.current_token().wait(WAIT)
        assert go_on.wait(WAIT)
        return "dask's message"

    with _DaskThreadPoolExecutor(1) as ex:
        outer = ex.submit(job)
        assert started.wait(WAIT)
        assert outer.inner is not None and outer.inner.cancel(reason=REASON)
        assert not outer.done()  # the code still runs: dask's slot stays taken
        go_on.set()
        assert outer.result(WAIT) == "dask's message"
        assert not outer.cancelled()


def test_cancelling_what_dask_awaits_cancels_the_task() -> None:
    # What Worker.close() does: it cancels its execute() coroutines, and asyncio
    # cancels the future they await.
    started, reasons = threading.Event(), []

    def job() -> None:
        started.set()
        token = cancelpool.current_token()
        token.wait(WAIT)
        reasons.append(token.reason)

    with _DaskThreadPoolExecutor(1) as ex:
        outer = ex.submit(job)
        assert started.wait(WAIT)
        assert outer.cancel()
        assert outer.inner is not None and outer.inner.wait_stopped(WAIT)
    assert reasons == [CLOSE_REASON]


# ------------------------------------- the plugin's protocol, driven step by step
#
# A stand-in for a dask Worker with what the plugin reads, and dask's task wrapper as it
# writes active_threads: the order of the scheduler's cancel and the run reaching its
# thread is chosen by the test, not left to timing.


class FakeWorker:
    def __init__(self, threads: int = 1) -> None:
        self.state = types.SimpleNamespace(tasks={}, nthreads=threads)
        self.executors: dict[str, Any] = {"default": ThreadPoolExecutor(threads)}
        self.active_threads_lock = threading.Lock()
        self.active_threads: dict[int, Any] = {}
        self.status = "running"

    def task(self, key: str, state: str, **annotations: Any) -> Any:
        ts = types.SimpleNamespace(key=key, state=state, annotations=annotations, run_id=1)
        self.state.tasks[key] = ts
        return ts

    def run(self, key: str, body: Callable[[], Any]) -> Callable[[], Any]:
        """dask's _run_task around *body*: the key is in active_threads while it runs."""

        def run_task() -> Any:
            ident = threading.get_ident()
            with self.active_threads_lock:
                self.active_threads[ident] = key
            try:
                return body()
            finally:
                with self.active_threads_lock:
                    del self.active_threads[ident]

        return run_task


class CountingPlugin(CancelRunningTasks):
    """Counts which side of the race came first, seen under the plugin's own lock."""

    def __init__(self) -> None:
        super().__init__()
        self.cancel_was_first = 0
        self.start_was_first = 0

    def _started(self, key: Any) -> None:
        with self._lock:
            ts = self._worker.state.tasks.get(key)
            if key in self._cancels:
                self.cancel_was_first += 1
            elif ts is not None and ts.state == "executing":
                self.start_was_first += 1
        super()._started(key)


@contextlib.contextmanager
def plugged(threads: int = 1) -> Iterator[tuple[CountingPlugin, FakeWorker]]:
    plugin, worker = CountingPlugin(), FakeWorker(threads)
    plugin.setup(worker)
    try:
        yield plugin, worker
    finally:
        worker.executors["default"].shutdown(wait=True)


def reason_seen() -> Optional[str]:
    token = cancelpool.current_token()
    return token.reason if token.wait(WAIT) else None


def test_a_cancel_before_the_run_reaches_its_thread_is_kept_for_it() -> None:
    with plugged() as (plugin, worker):
        ts = worker.task("k", "executing")
        ts.state = "cancelled"  # executing -> released: dask leaves it cancelled
        plugin.transition("k", "executing", "released")
        future = worker.executors["default"].submit(worker.run("k", reason_seen))
        message = future.result(WAIT)
    assert message == REASON
    assert not plugin._cancels and not plugin._runs


def test_a_cancel_after_the_run_reached_its_thread_cancels_it() -> None:
    with plugged() as (plugin, worker):
        ts = worker.task("k", "executing")
        running = threading.Event()

        def body() -> Optional[str]:
            running.set()
            return reason_seen()

        future = worker.executors["default"].submit(worker.run("k", body))
        assert running.wait(WAIT)
        assert "k" in plugin._runs
        ts.state = "cancelled"
        plugin.transition("k", "executing", "released")
        assert future.result(WAIT) == REASON


def test_a_pending_cancel_is_dropped_when_the_key_leaves_cancelled() -> None:
    with plugged() as (plugin, worker):
        ts = worker.task("k", "executing")
        ts.state = "cancelled"
        plugin.transition("k", "executing", "released")
        ts.state = "executing"  # resumed: the scheduler wants the key after all
        plugin.transition("k", "cancelled", "waiting")
        assert not plugin._cancels

        def body() -> bool:
            return cancelpool.current_token().cancelled

        assert worker.executors["default"].submit(worker.run("k", body)).result(WAIT) is False


def test_an_old_run_ending_leaves_a_newer_run_of_the_key_registered() -> None:
    # An abandoned run whose C call finally returns, after the key ran again.
    with plugged(threads=2) as (plugin, worker):
        old_in, old_out, new_in, new_out = (threading.Event() for _ in range(4))

        def old() -> None:
            old_in.set()
            assert old_out.wait(WAIT)

        def new() -> None:
            new_in.set()
            assert new_out.wait(WAIT)

        pool = worker.executors["default"]
        a = pool.submit(worker.run("k", old))
        assert old_in.wait(WAIT)
        b = pool.submit(worker.run("k", new))
        assert new_in.wait(WAIT)
        newer = plugin._runs["k"]
        old_out.set()
        a.result(WAIT)
        assert plugin._runs["k"] is newer  # the old run did not unregister it
        new_out.set()
        b.result(WAIT)
        assert not plugin._runs


@pytest.mark.stress
def test_cancel_and_start_in_either_order_always_cancel() -> None:
    # The bounded random campaign over the one race: the scheduler's cancel against
    # the run reaching its thread. Every trial must end with the run cancelled.
    sys.setswitchinterval(1e-6)  # hand the GIL over often (the fixture restores it)
    rng = random.Random(13)
    trials = max(1, int(300 * STRESS_SCALE))
    deadline = time.monotonic() + 20 * STRESS_SCALE
    with plugged() as (plugin, worker):
        pool = worker.executors["default"]
        for i in range(trials):
            key = f"k{i}"
            ts = worker.task(key, "executing")
            gate = threading.Barrier(2)

            def body() -> Optional[str]:
                return reason_seen()

            # Who waits after the barrier, and how long: the thread that starts the
            # run, or the scheduler's cancel (both orders must come up).
            # (The run's start wins most of even races: its spins are longer.)
            if rng.random() < 0.5:
                start_spin, cancel_spin = rng.randrange(20000), 0
            else:
                start_spin, cancel_spin = 0, rng.randrange(3000)

            def start(
                key: str = key, gate: threading.Barrier = gate, spin: int = start_spin
            ) -> Any:
                gate.wait(WAIT)
                for _ in range(spin):
                    pass
                return worker.run(key, body)()

            future = pool.submit(start)
            gate.wait(WAIT)
            for _ in range(cancel_spin):
                pass
            ts.state = "cancelled"
            plugin.transition(key, "executing", "released")
            assert future.result(WAIT) == REASON, i
            ts.state = "released"
            plugin.transition(key, "cancelled", "released")
            if time.monotonic() > deadline:
                break
        assert not plugin._cancels and not plugin._runs
    # Both orders happened, or the race was not exercised.
    assert plugin.cancel_was_first > 0 and plugin.start_was_first > 0, vars(plugin)


# ------------------------------------------------------------------- the plugin


def test_the_plugin_checks_its_arguments() -> None:
    with pytest.raises(TypeError, match="force"):
        CancelRunningTasks(force=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="grace"):
        CancelRunningTasks(grace=-1)
    with pytest.raises(TypeError, match="abandon_after"):
        CancelRunningTasks(abandon_after="5")  # type: ignore[arg-type]


def test_the_plugin_travels_with_its_settings_only() -> None:
    plugin = CancelRunningTasks(force=True, grace=0.5, abandon_after=2)
    copy = pickle.loads(pickle.dumps(plugin))
    assert (
        repr(copy)
        == repr(plugin)
        == ("CancelRunningTasks(force=True, grace=0.5, abandon_after=2.0)")
    )

"""shutdown(): timeout, cancelling running tasks, stragglers, exit behaviour."""

from __future__ import annotations

import threading
import time
from concurrent import futures
from typing import Any

import pytest

from cancelpool import CancellableThreadPoolExecutor, TaskState, _drain, _timer, current_token
from cancelpool._drain import SYNC_ITEMS

from .conftest import WAIT, run_forking_program, run_python


def stubborn(started: threading.Event, release: threading.Event) -> str:
    """Never checks its token: only *release* ends it."""
    started.set()
    release.wait(WAIT)
    return "stubborn done"


def cooperative(started: threading.Event) -> str:
    started.set()
    current_token().sleep(WAIT)
    return "slept"


class TestTimeout:
    def test_timeout_zero_returns_at_once_and_names_straggler(self) -> None:
        started, release = threading.Event(), threading.Event()
        ex = CancellableThreadPoolExecutor(max_workers=2)
        future = ex.submit(stubborn, started, release)
        assert started.wait(WAIT)
        still_running = ex.shutdown(wait=True, timeout=0)
        assert still_running == (future,)
        # timeout without cancel_futures: running tasks are not cancelled.
        assert not future.cancelled() and future.task_state is TaskState.RUNNING
        release.set()
        assert future.result(WAIT) == "stubborn done"
        assert ex.shutdown(wait=True, timeout=WAIT) == ()

    def test_cancel_futures_with_timeout_cancels_running(self) -> None:
        started = threading.Event()
        ex = CancellableThreadPoolExecutor(max_workers=1)
        running = ex.submit(cooperative, started)
        assert started.wait(WAIT)
        pending = [ex.submit(int) for _ in range(3)]
        assert ex.shutdown(cancel_futures=True, timeout=WAIT) == ()
        assert running.cancelled() and running.task_state is TaskState.STOPPED
        assert running.token.reason == "shutdown"
        assert all(f.task_state is TaskState.CANCELLED for f in pending)
        assert all(f.token.reason == "shutdown" for f in pending)

    def test_stubborn_task_is_reported_cancelled_but_stopping(self) -> None:
        started, release = threading.Event(), threading.Event()
        ex = CancellableThreadPoolExecutor(max_workers=1)
        future = ex.submit(stubborn, started, release)
        assert started.wait(WAIT)
        still_running = ex.shutdown(cancel_futures=True, timeout=0)
        assert still_running == (future,)
        assert future.cancelled() and future.task_state is TaskState.STOPPING
        assert ex.statistics().stopping == 1
        release.set()
        assert future.wait_stopped(WAIT)
        assert ex.shutdown(timeout=WAIT) == ()

    def test_cancel_running_without_timeout(self) -> None:
        started = threading.Event()
        ex = CancellableThreadPoolExecutor(max_workers=1)
        future = ex.submit(cooperative, started)
        assert started.wait(WAIT)
        assert ex.shutdown(cancel_running=True) == ()
        assert future.task_state is TaskState.STOPPED

    def test_cancel_running_false_overrides_default(self) -> None:
        started, release = threading.Event(), threading.Event()
        ex = CancellableThreadPoolExecutor(max_workers=1)
        future = ex.submit(stubborn, started, release)
        assert started.wait(WAIT)
        assert ex.shutdown(cancel_futures=True, timeout=0, cancel_running=False) == (future,)
        assert not future.cancelled()
        release.set()
        assert future.result(WAIT) == "stubborn done"
        ex.shutdown()

    def test_task_taken_during_cancel_running_shutdown_is_cancelled(self) -> None:
        # A task that a worker takes after shutdown(cancel_running=True) decided to
        # cancel running tasks is cancelled as it starts, never run to completion.
        gate = threading.Event()
        ex = CancellableThreadPoolExecutor(max_workers=1)
        first_started = threading.Event()
        first = ex.submit(stubborn, first_started, gate)
        assert first_started.wait(WAIT)
        ran = threading.Event()
        second = ex.submit(ran.set)
        ex._stop_new_tasks.append("shutdown")  # what shutdown(cancel_running=True) sets first
        gate.set()
        assert second.wait_stopped(WAIT)
        assert second.cancelled() and not ran.is_set()
        ex.shutdown(timeout=WAIT)
        assert first.result(0) == "stubborn done"

    @pytest.mark.slow
    def test_returns_within_timeout_in_real_time(self) -> None:
        started, release = threading.Event(), threading.Event()
        ex = CancellableThreadPoolExecutor(max_workers=1)
        ex.submit(stubborn, started, release)
        assert started.wait(WAIT)
        t0 = time.monotonic()
        still_running = ex.shutdown(cancel_futures=True, timeout=0.2)
        elapsed = time.monotonic() - t0
        release.set()
        assert len(still_running) == 1
        assert 0.15 <= elapsed < 2.0, elapsed  # generous: a loaded CI machine
        ex.shutdown(timeout=WAIT)


class TestShutdownSemantics:
    def test_no_future_is_left_pending(self) -> None:
        started, release = threading.Event(), threading.Event()
        ex = CancellableThreadPoolExecutor(max_workers=2)
        fs = [ex.submit(stubborn, started, release)] + [ex.submit(int) for _ in range(50)]
        assert started.wait(WAIT)
        ex.shutdown(wait=False, cancel_futures=True)
        release.set()
        for f in fs:
            assert f.wait_stopped(WAIT)
            assert f.done()
        ex.shutdown(timeout=WAIT)
        stats = ex.statistics()
        assert stats.pending == stats.running == stats.stopping == 0
        assert stats.completed + stats.cancelled == stats.submitted == 51

    def test_shutdown_from_inside_a_task_does_not_join_itself(self) -> None:
        ex = CancellableThreadPoolExecutor(max_workers=1)
        result: list[Any] = []

        def task() -> None:
            result.append(ex.shutdown(wait=True))

        future = ex.submit(task)
        future.result(WAIT)
        assert result == [(future,)] or result == [()]
        ex.shutdown(timeout=WAIT)

    def test_wait_false_with_timeout_is_an_error(self) -> None:
        ex = CancellableThreadPoolExecutor(max_workers=1)
        with pytest.raises(ValueError, match=r"timeout=1 needs wait=True"):
            ex.shutdown(wait=False, timeout=1)
        ex.shutdown()

    @pytest.mark.parametrize(
        ("kwargs", "exc", "message"),
        [
            ({"timeout": -1}, ValueError, r"timeout must be >= 0 or None, got -1"),
            ({"timeout": float("nan")}, ValueError, r"timeout must be >= 0 or None, got nan"),
            ({"timeout": "1"}, TypeError, r"timeout must be a number of seconds or None, got '1'"),
            ({"cancel_running": 1}, TypeError, r"cancel_running must be True or False, got 1"),
        ],
    )
    def test_bad_arguments(
        self, kwargs: dict[str, Any], exc: type[Exception], message: str
    ) -> None:
        ex = CancellableThreadPoolExecutor(max_workers=1)
        with pytest.raises(exc, match=message):
            ex.shutdown(**kwargs)
        assert not ex._shutdown  # a rejected call changes nothing
        ex.shutdown()


@pytest.mark.subprocess
class TestInterpreterExit:
    def test_queued_work_completes_at_exit(self) -> None:
        # As the stdlib: a program that ends without shutdown() still runs its tasks.
        proc = run_python(
            """
            import threading
            from cancelpool import CancellableThreadPoolExecutor
            ex = CancellableThreadPoolExecutor(max_workers=1)
            gate = threading.Event()
            ex.submit(gate.wait, 30)
            for i in range(3):
                ex.submit(print, "task", i, flush=True)
            gate.set()
            """
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split("\n")[:3] == ["task 0", "task 1", "task 2"]
        assert proc.stderr == ""

    def test_submit_after_interpreter_shutdown(self) -> None:
        proc = run_python(
            """
            import atexit
            from cancelpool import CancellableThreadPoolExecutor
            @atexit.register
            def late():
                try:
                    ex.submit(id, None)
                except RuntimeError as exc:
                    print(exc)
            ex = CancellableThreadPoolExecutor(max_workers=1)
            ex.submit(id, 1).result()
            """
        )
        assert proc.returncode == 0, proc.stderr
        # The stdlib's words: the exit hook also marks each executor shut down.
        assert proc.stdout.startswith("cannot schedule new futures after")

    def test_exit_after_shutdown_with_timeout_around_cooperative_task(self) -> None:
        proc = run_python(
            """
            import threading, time
            from cancelpool import CancellableThreadPoolExecutor, current_token
            started = threading.Event()
            def task():
                started.set()
                current_token().sleep(60)
            ex = CancellableThreadPoolExecutor(max_workers=1)
            ex.submit(task)
            started.wait(30)
            t0 = time.monotonic()
            print(ex.shutdown(cancel_futures=True, timeout=30))
            print("elapsed-ok", time.monotonic() - t0 < 10)
            """
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == ["()", "elapsed-ok", "True"]

    def test_fork_child_can_use_a_new_executor(self) -> None:
        if not hasattr(__import__("os"), "fork"):
            pytest.skip("needs os.fork")
        proc = run_python(
            """
            import os, warnings
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads, 3.12+
            from cancelpool import CancellableThreadPoolExecutor
            with CancellableThreadPoolExecutor(max_workers=2) as ex:
                ex.submit(int).result()
                pid = os.fork()
                if pid == 0:
                    with CancellableThreadPoolExecutor(max_workers=1) as child_ex:
                        os._exit(child_ex.submit(int, "7").result(10))
                _, status = os.waitpid(pid, 0)
                print(os.waitstatus_to_exitcode(status))
            """
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "7"

    def test_fork_child_exits_although_a_parent_thread_held_a_task_lock(self) -> None:
        # The parent's workers do not exist in a forked child, and a lock another parent
        # thread held at the fork stays held there for ever: the child's exit hook must
        # not touch them (CPython's test_hang_global_shutdown_lock hung on this).
        if not hasattr(__import__("os"), "fork"):
            pytest.skip("needs os.fork")
        proc = run_forking_program(
            """
            import os, signal, sys, threading, time, warnings
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads, 3.12+
            from cancelpool import CancellableThreadPoolExecutor
            started, release, holding = threading.Event(), threading.Event(), threading.Event()
            def task():
                started.set()
                release.wait(30)
            ex = CancellableThreadPoolExecutor(max_workers=1)
            fut = ex.submit(task)
            started.wait(30)
            def hold():
                with fut._condition:
                    holding.set()
                    release.wait(30)
            holder = threading.Thread(target=hold)
            holder.start()
            holding.wait(30)
            pid = os.fork()
            if pid == 0:
                sys.exit(7)  # a normal exit: the exit hooks run
            """,
            """
            release.set()
            holder.join(30)
            ex.shutdown()
            """,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "7"


def test_a_worker_whose_task_returns_as_it_is_abandoned_leaves_and_is_replaced() -> None:
    # The ABANDON transition is the decision; the escalation looks for the worker only
    # after it. Here the task returns in between (the escalation never finds the
    # worker): the worker itself must leave the pool, replaced, and take no other task.
    from cancelpool._future import ABANDON

    ex = CancellableThreadPoolExecutor(max_workers=1)
    try:
        started, release = threading.Event(), threading.Event()

        def task() -> int:
            started.set()
            release.wait(WAIT)
            return threading.get_ident()

        future = ex.submit(task)
        assert started.wait(WAIT)
        (worker,) = ex._threads
        assert future.cancel()
        assert future._transition(ABANDON)  # what Ladder.abandon() does first
        release.set()
        assert future.wait_stopped(WAIT)
        worker.join(WAIT)
        assert not worker.is_alive() and worker.abandoned
        # Let go of once it left (issue 11): no longer in _threads nor in _abandoned.
        assert worker not in ex._threads and worker not in ex._abandoned
        next_task = ex.submit(threading.get_ident)
        assert next_task.result(WAIT) != worker.ident
        assert len(ex._threads) == 1
    finally:
        ex.shutdown(timeout=WAIT)


class TestLongQueue:
    """``shutdown(timeout=T)`` with a queue too long to cancel in ``T`` (issue 11).

    The queue is taken off at once; what cannot be cancelled in time is cancelled by a
    thread of its own right after the call returns (``cancelpool._drain``). Functional
    tests: nothing is lost, nothing runs, observers see every cancel. The speed itself
    is a benchmark (``benchmarks/bench_shutdown.py``).
    """

    #: Enough for ``timeout=0`` to hand most of the queue off (``SYNC_ITEMS`` run first).
    N = 20 * SYNC_ITEMS

    @staticmethod
    def blocked_executor() -> CancellableThreadPoolExecutor:
        """One worker, busy with a task that stops when cancelled: the rest stays queued."""
        ex = CancellableThreadPoolExecutor(max_workers=1)
        started = threading.Event()
        ex.submit(cooperative, started)
        assert started.wait(WAIT)
        return ex

    def test_every_queued_future_ends_cancelled_and_none_runs(self) -> None:
        ex = self.blocked_executor()
        ran: list[int] = []
        fs = [ex.submit(ran.append, i) for i in range(self.N)]
        called: list[futures.Future[Any]] = []
        for f in fs:
            f.add_done_callback(called.append)
        ex.shutdown(cancel_futures=True, timeout=0)
        drop = ex._drop
        assert drop is not None and drop._thread is not None  # the rest was handed off
        assert len(list(futures.as_completed(fs, timeout=WAIT))) == self.N
        assert all(f.cancelled() and f.token.reason == "shutdown" for f in fs)
        drop._thread.join(WAIT)
        assert not drop._thread.is_alive()
        assert ran == []
        assert sorted(map(id, called)) == sorted(map(id, fs))  # each callback once
        assert ex.statistics().cancelled == self.N + 1  # and the running one

    def test_the_call_returns_before_the_handed_off_callbacks_run(self) -> None:
        # Fails before the fix: the whole queue's callbacks ran inside shutdown(), so
        # this one waited for a gate that only opens after shutdown() returns.
        ex = self.blocked_executor()
        fs = [ex.submit(int) for _ in range(self.N)]
        released: list[bool] = []
        gate = threading.Event()
        fs[-1].add_done_callback(lambda _: released.append(gate.wait(WAIT)))
        ex.shutdown(cancel_futures=True, timeout=0)
        gate.set()
        assert not futures.wait(fs, timeout=WAIT).not_done
        assert ex._drop is not None
        handed_to = ex._drop._thread
        if handed_to is not None:
            handed_to.join(WAIT)  # the callback has returned
        assert released == [True]
        assert handed_to is not None

    def test_a_later_shutdown_wait_true_waits_for_the_handed_off_rest(self) -> None:
        ex = self.blocked_executor()
        fs = [ex.submit(int) for _ in range(self.N)]
        blocked = SYNC_ITEMS + 10  # cancelled by the hand-off thread, which stops here
        entered, gate = threading.Event(), threading.Event()

        def hold(_: object) -> None:
            entered.set()
            gate.wait(WAIT)

        fs[blocked].add_done_callback(hold)
        ex.shutdown(cancel_futures=True, timeout=0)
        assert entered.wait(WAIT)
        outcome: list[bool] = []

        def shutdown_and_look() -> None:
            ex.shutdown(wait=True)
            outcome.append(all(f.cancelled() for f in fs))

        second = threading.Thread(target=shutdown_and_look)
        second.start()
        try:
            # The second call cancels the rest itself, the hand-off thread being held...
            others = fs[:blocked] + fs[blocked + 1 :]
            assert not futures.wait(others, timeout=WAIT).not_done
            # ...and does not return while that thread is still in a done-callback.
            assert second.is_alive()
        finally:
            gate.set()
            second.join(WAIT)
        assert not second.is_alive()
        assert outcome == [True]

    def test_a_base_exception_from_a_callback_does_not_stop_the_rest(self) -> None:
        class Boom(BaseException):
            pass

        def explode(_: object) -> None:
            raise Boom

        ex = self.blocked_executor()
        fs = [ex.submit(int) for _ in range(self.N)]
        fs[SYNC_ITEMS + 10].add_done_callback(explode)
        ex.shutdown(cancel_futures=True, timeout=0)
        assert not futures.wait(fs, timeout=WAIT).not_done
        assert all(f.cancelled() for f in fs)
        assert ex._drop is not None and ex._drop._thread is not None
        ex._drop._thread.join(WAIT)
        assert not ex._drop._thread.is_alive()

    @pytest.mark.parametrize("why", ["exiting", "no thread"])
    def test_the_rest_is_cancelled_in_the_call_when_no_thread_may_take_it(
        self, why: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # After the exit hook has run (a shutdown() from an atexit function), or when no
        # thread can start (3.12+ at exit): late, but nothing is left pending.
        if why == "exiting":
            monkeypatch.setattr(_drain, "_exiting", True)
        else:
            monkeypatch.setattr(_drain, "_start_thread", lambda target: None)
        ex = self.blocked_executor()
        fs = [ex.submit(int) for _ in range(self.N)]
        ex.shutdown(cancel_futures=True, timeout=0)
        assert all(f.cancelled() for f in fs)
        assert ex._drop is not None and ex._drop._thread is None

    def test_a_short_queue_is_cancelled_before_the_call_returns(self) -> None:
        # As with the stdlib, even with timeout=0.
        ex = self.blocked_executor()
        fs = [ex.submit(int) for _ in range(SYNC_ITEMS)]
        ex.shutdown(cancel_futures=True, timeout=0)
        assert all(f.cancelled() for f in fs)
        assert ex._drop is not None and ex._drop._thread is None

    def test_what_is_handed_off_is_cancelled_before_the_interpreter_exits(self) -> None:
        # The hand-off thread is a daemon; the exit hook finishes its work, so every
        # done-callback still runs (an atexit function runs after the hook).
        proc = run_python(
            f"""
            import atexit, threading
            from cancelpool import CancellableThreadPoolExecutor, current_token
            called = []
            atexit.register(lambda: print("at exit", len(called), flush=True))
            ex = CancellableThreadPoolExecutor(max_workers=1)
            started = threading.Event()
            def block():
                started.set()
                current_token().wait(30)
            ex.submit(block)
            started.wait(30)
            fs = [ex.submit(print, "ran") for _ in range({self.N})]
            for f in fs:
                f.add_done_callback(called.append)
            ex.shutdown(cancel_futures=True, timeout=0)
            print("handed off", ex._drop._thread is not None, flush=True)
            """
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split("\n") == ["handed off True", f"at exit {self.N}", ""]
        assert proc.stderr == ""


class TestNoTimerThreadAfterShutdown:
    """shutdown(wait=True) leaves no thread of ours behind, the timer's included.

    CPython's suite checks it right after each test's shutdown (``threading_cleanup``);
    a conformance run on 3.10 saw the timer thread, idling out its last second, there.
    """

    @pytest.fixture(autouse=True)
    def own_timer(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # A scheduler of this test's own: actions other tests left (withdrawn deadlines,
        # an executor never shut down) must not decide whether the thread may go.
        monkeypatch.setattr(_timer, "_scheduler", _timer.Scheduler())

    def timer_threads(self) -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "cancelpool-timer"]

    def test_after_a_cancelled_task_stopped_within_its_grace(self) -> None:
        # As CPython's test_map_timeout: a running task is cancelled (without force:
        # its StillRunningWarning step is scheduled at the end of the grace period),
        # and ends before that, on its own.
        started, finish = threading.Event(), threading.Event()

        def ignores_its_token() -> None:
            started.set()
            assert finish.wait(WAIT)

        before = self.timer_threads()
        ex = CancellableThreadPoolExecutor(1, grace=60.0)
        future = ex.submit(ignores_its_token)
        assert started.wait(WAIT)
        assert future.cancel()
        assert len(self.timer_threads()) == len(before) + 1  # the step, due in 60 s
        finish.set()
        ex.shutdown(wait=True)
        assert self.timer_threads() == before

    def test_after_deadlines_that_never_came(self) -> None:
        before = self.timer_threads()
        ex = CancellableThreadPoolExecutor(2)
        view = ex.with_options(timeout=3600.0, timeout_from="submit")
        assert [f.result(WAIT) for f in [view.submit(pow, 2, i) for i in range(5)]] == [
            1, 2, 4, 8, 16,
        ]  # fmt: skip
        ex.shutdown(wait=True)
        assert self.timer_threads() == before

    def test_a_timer_with_work_left_stays(self) -> None:
        # Another executor's task still has a deadline: the thread must stay for it.
        started = threading.Event()

        def waits(token_wait: float) -> bool:
            started.set()
            return current_token().wait(token_wait)

        other = CancellableThreadPoolExecutor(1, task_timeout=0.2)
        expiring = other.submit(waits, WAIT)
        assert started.wait(WAIT)
        ex = CancellableThreadPoolExecutor(1)
        assert ex.submit(pow, 2, 3).result(WAIT) == 8
        ex.shutdown(wait=True)
        assert expiring.exception(WAIT) is not None  # its deadline still came
        other.shutdown(wait=True)

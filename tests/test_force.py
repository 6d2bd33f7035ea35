"""Forced cancellation: the ladder, step by step, on a fake clock, and where it lands.

Each test drives the escalation with ``manual_clock.advance()`` (or ``grace=0``, whose
first step runs in the cancelling thread): the ladder's steps run in the test's thread at
the moment the test chooses, so the order of events is fixed by the test, never by
sleeping. The task's thread really runs; a forced step arms it
(``future._interrupts_sent``), and the thread itself raises ``TaskInterrupted`` at its
next safe candidate point (``future._interrupts_landed``; ``cancelpool._inject``).
"""

from __future__ import annotations

import functools
import itertools
import os
import queue
import socket
import sys
import threading
import traceback
from collections.abc import Iterator
from typing import Any

import pytest

import cancelpool
from cancelpool import (
    CancellableThreadPoolExecutor,
    InterruptSwallowedWarning,
    StillRunningWarning,
    TaskCancelled,
    TaskInterrupted,
    TaskState,
    WorkerAbandonedWarning,
    _inject,
    _monitor,
    checkpoint,
    current_token,
    shield,
)
from cancelpool._escalate import MAX_SENDS
from cancelpool._timer import ManualScheduler

from .conftest import WAIT, run_python, wait_for

pytestmark = pytest.mark.skipif(not cancelpool.FORCE_AVAILABLE, reason="needs forced interrupts")


class Spin:
    """A task that never looks at its token: a pure-Python loop until released."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = False
        self.caught: list[BaseException] = []

    def loop(self) -> str:
        self.started.set()
        n = 0
        while not self.release:
            n += 1
        return "released"

    def recording(self) -> str:
        """The same loop, recording the exception that stops it (then re-raising)."""
        try:
            return self.loop()
        except BaseException as exc:
            self.caught.append(exc)
            raise


@pytest.fixture
def pool(manual_clock: ManualScheduler) -> Iterator[CancellableThreadPoolExecutor]:
    ex = CancellableThreadPoolExecutor(max_workers=2, force=True, grace=1.0, abandon_after=4.0)
    yield ex
    ex.shutdown(wait=True, cancel_futures=True, timeout=WAIT)


def state(future: Any) -> TaskState:
    result: TaskState = future.task_state
    return result


class TestInterrupt:
    def test_tight_loop_is_interrupted_after_grace(
        self, pool: CancellableThreadPoolExecutor, manual_clock: ManualScheduler
    ) -> None:
        spin = Spin()
        future = pool.submit(spin.recording)
        assert spin.started.wait(WAIT)
        assert future.cancel()
        assert state(future) is TaskState.STOPPING
        manual_clock.advance(0.999)
        assert state(future) is TaskState.STOPPING  # grace not over: not armed
        assert future._interrupts_sent == 0
        manual_clock.advance(0.001)
        assert future._interrupts_sent == 1
        assert future.wait_stopped(WAIT)
        assert state(future) is TaskState.STOPPED
        (exc,) = spin.caught
        assert isinstance(exc, TaskInterrupted)
        assert isinstance(exc, TaskCancelled)
        assert exc.reason == "cancel"
        assert str(exc) == "task interrupted by forced cancellation (reason: cancel)"
        # The traceback shows where the task's code was when it was interrupted, then
        # the one callback of cancelpool's that raised it there.
        *_, where, raiser = traceback.extract_tb(exc.__traceback__)
        assert where.name == "loop"
        assert "cancelpool" in raiser.filename
        assert pool.statistics().interrupts == 1
        # The worker is unharmed and takes the next task.
        assert pool.submit(pow, 2, 10).result(WAIT) == 1024

    def test_except_exception_does_not_swallow_it(
        self, pool: CancellableThreadPoolExecutor, manual_clock: ManualScheduler
    ) -> None:
        started = threading.Event()

        def careless() -> None:
            started.set()
            while True:
                try:
                    sum(range(50))
                except Exception:  # what task code does to "keep going"
                    continue

        future = pool.submit(careless)
        assert started.wait(WAIT)
        future.cancel(reason="user abort")
        manual_clock.advance(1.0)
        assert future.wait_stopped(WAIT)
        assert state(future) is TaskState.STOPPED
        assert future.token.reason == "user abort"

    def test_per_call_force_on_a_cooperative_executor(self, manual_clock: ManualScheduler) -> None:
        ex = CancellableThreadPoolExecutor(max_workers=1)  # force=False by default
        spin = Spin()
        future = ex.submit(spin.loop)
        assert spin.started.wait(WAIT)
        future.cancel(force=True, grace=0.25)
        manual_clock.advance(0.25)
        assert future.wait_stopped(WAIT)
        ex.shutdown()

    def test_force_after_a_cooperative_cancel_hardens_the_ladder(
        self, manual_clock: ManualScheduler
    ) -> None:
        ex = CancellableThreadPoolExecutor(max_workers=1, grace=10.0)
        spin = Spin()
        future = ex.submit(spin.loop)
        assert spin.started.wait(WAIT)
        assert future.cancel()  # cooperative: would only warn after 10 s
        assert future.cancel(force=True, grace=0.5)  # still True: already cancelled
        manual_clock.advance(0.5)
        assert future.wait_stopped(WAIT)
        assert 1010.0 not in manual_clock.pending()  # the cooperative step was replaced
        ex.shutdown()

    def test_finished_task_is_never_interrupted(
        self, pool: CancellableThreadPoolExecutor, manual_clock: ManualScheduler
    ) -> None:
        spin = Spin()
        future = pool.submit(spin.loop)
        assert spin.started.wait(WAIT)
        future.cancel()
        spin.release = True  # the code ends on its own before the grace period
        assert future.wait_stopped(WAIT)
        manual_clock.advance(1.0)
        assert future._interrupts_sent == 0
        assert state(future) is TaskState.STOPPED
        assert manual_clock.pending() == []


class TestWhereItMustNotLand:
    def test_protected_stdlib_code_defers_then_abandons(
        self, pool: CancellableThreadPoolExecutor, manual_clock: ManualScheduler
    ) -> None:
        # Condition.wait_for() loops in threading.py and calls the task's predicate from
        # there: each call is a candidate point of user code with threading.py on the
        # stack, so it is judged, and refused, while the task is armed.
        cond = threading.Condition()
        started = threading.Event()
        flags = {"release": False}
        calls: list[int] = []
        reached: list[int] = []
        caught: list[BaseException] = []

        def ready() -> bool:
            calls.append(1)
            started.set()  # under cond: the task is in wait() once the test holds cond
            return flags["release"]

        def waits_in_threading() -> None:
            try:
                with cond:
                    cond.wait_for(ready, WAIT)
                for n in range(1000):  # back in the task's own code: a candidate point
                    reached.append(n)
            except BaseException as exc:
                caught.append(exc)
                raise

        future = pool.submit(waits_in_threading)
        assert started.wait(WAIT)
        future.cancel()
        manual_clock.advance(1.0)
        # Armed: the decision is the task thread's own, at its next candidate point.
        assert (future._interrupts_sent, future._interrupts_landed) == (1, 0)
        assert state(future) is TaskState.INTERRUPTING
        with cond:
            cond.notify()  # wait_for() calls the predicate again, from threading.py
        wait_for(lambda: len(calls) == 2 or future._stopped_now(), "the predicate's call")
        assert len(calls) == 2, "interrupted in threading.py"
        assert future._refusal == "inside threading.wait_for"
        assert future._interrupts_landed == 0
        with pytest.warns(
            WorkerAbandonedWarning,
            match=(
                r"waits_in_threading\(\).* and interrupt "
                r"\(last refused: inside threading\.wait_for\).*abandoned and replaced"
            ),
        ):
            manual_clock.advance(4.0)
        assert state(future) is TaskState.ABANDONED
        # The zombie stays armed until its code returns: if it comes back to a candidate
        # point of its own code, it stops there.
        assert future._arm_open
        assert future._tally is not None and _inject._armed.get(future._tally.tid) is future
        flags["release"] = True
        with cond:
            cond.notify()
        assert future.wait_stopped(WAIT)
        assert state(future) is TaskState.STOPPED
        assert reached == [0]  # raised at the first back-edge after threading.py returned
        assert [type(e) for e in caught] == [TaskInterrupted]
        assert last_user_frame(caught[0]) == "waits_in_threading"
        assert (future._interrupts_sent, future._interrupts_landed) == (1, 1)
        assert len(calls) == 3
        assert not _inject._armed

    def test_shield_defers_the_interrupt_and_its_exit_delivers_the_cancel(
        self, pool: CancellableThreadPoolExecutor, manual_clock: ManualScheduler
    ) -> None:
        lock = threading.Lock()
        inside = threading.Event()
        flags = {"release": False}
        caught: list[BaseException] = []

        def critical() -> None:
            try:
                with shield():
                    with lock:
                        inside.set()
                        while not flags["release"]:  # back-edges: judged, refused
                            pass
                    checkpoint()  # still shielded: the lock is released, nothing raised
            except BaseException as exc:
                caught.append(exc)
                raise

        future = pool.submit(critical)
        assert inside.wait(WAIT)
        future.cancel()
        manual_clock.advance(1.0)
        assert future._interrupts_sent == 1  # armed...
        wait_for(lambda: future._refusal is not None, "a candidate point to be judged")
        assert future._refusal == "inside cancelpool.shield()"  # ...and refused inside
        assert future._interrupts_landed == 0
        flags["release"] = True
        assert future.wait_stopped(WAIT)
        assert not lock.locked()
        # The outermost shield's exit delivers the cancel, cooperatively, before any
        # candidate point of the task's code; the worker closes the arm at COMPLETE.
        assert [type(e) for e in caught] == [TaskCancelled]
        assert (future._interrupts_sent, future._interrupts_landed) == (1, 0)
        assert not future._arm_open
        assert state(future) is TaskState.STOPPED

    def test_code_that_ignores_the_shields_cancel_is_interrupted_after_it(
        self, pool: CancellableThreadPoolExecutor, manual_clock: ManualScheduler
    ) -> None:
        inside = threading.Event()
        flags = {"release": False}
        caught: list[BaseException] = []
        spins: list[int] = []

        def ignores_the_cancel() -> None:
            try:
                with shield():
                    inside.set()
                    while not flags["release"]:
                        pass
            except TaskCancelled as exc:
                caught.append(exc)  # ignored: the task goes on, and the open arm stops it
            while len(spins) < 1000:
                spins.append(1)

        def task() -> None:
            try:
                ignores_the_cancel()
            except BaseException as exc:
                caught.append(exc)
                raise

        future = pool.submit(task)
        assert inside.wait(WAIT)
        future.cancel()
        manual_clock.advance(1.0)
        wait_for(lambda: future._refusal is not None, "a candidate point to be judged")
        assert future._refusal == "inside cancelpool.shield()"
        flags["release"] = True
        assert future.wait_stopped(WAIT)
        assert [type(e) for e in caught] == [TaskCancelled, TaskInterrupted]
        # At the first candidate point after the handler: on 3.12, the handler's own jump
        # back to the code after the try statement (handlers are placed after the
        # function's code and end with a JUMP_BACKWARD; 3.13+ use a jump that sends no
        # JUMP event), elsewhere the loop's first back-edge.
        assert len(spins) == (0 if sys.version_info[:2] == (3, 12) else 1)
        assert last_user_frame(caught[1]) == "ignores_the_cancel"
        assert (future._interrupts_sent, future._interrupts_landed) == (1, 1)

    def test_shield_defers_cooperative_checks_and_delivers_once(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        cancelled = threading.Event()
        proceed = threading.Event()
        seen: list[str] = []

        def task() -> None:
            token = current_token()
            with shield():
                with shield():  # nested: only the outermost exit delivers
                    cancelled.wait(WAIT)
                    token.raise_if_cancelled()
                    checkpoint()
                    token.sleep(0)
                    seen.append(f"inner, cancelled={token.cancelled}")
                seen.append("between shields")
                proceed.wait(WAIT)
            seen.append("not reached")

        future = pool.submit(task)
        wait_for(lambda: future.running(), "the task to start")
        future.cancel(force=False)
        cancelled.set()
        wait_for(lambda: len(seen) == 2, "the inner shield to exit")
        proceed.set()
        assert future.wait_stopped(WAIT)
        assert seen == ["inner, cancelled=True", "between shields"]

    def test_shield_outside_a_task_is_a_no_op(self) -> None:
        with shield():
            assert not shield.active()


class TestHandlersOfTheLandingFrame:
    """The interrupt lands in the frame that loops, and that frame's handlers run.

    Raised from a ``sys.monitoring`` JUMP callback, 3.13.0 and 3.14 skip the handlers of
    the frame it is raised in (the class of CPython #139622); ``_monitor`` raises at the
    back-edge's destination instead. Each loop body calls only C code, so the back-edges
    of the task's own frame are its only candidate points.
    """

    @pytest.mark.parametrize("shape", ["while_finally", "while_except_reraise", "for_finally"])
    def test_handlers_in_the_loops_own_frame_run(
        self, shape: str, pool: CancellableThreadPoolExecutor, manual_clock: ManualScheduler
    ) -> None:
        lock = threading.Lock()
        started = threading.Event()
        handled: list[BaseException] = []
        items = list(range(20))

        def while_finally() -> None:
            lock.acquire()
            try:
                started.set()
                total = 0
                while True:
                    total += sum(items)
            finally:
                handled.append(sys.exc_info()[1] or RuntimeError("no exception"))
                lock.release()

        def while_except_reraise() -> None:
            started.set()
            total = 0
            try:
                while True:
                    total += sum(items)
            except TaskCancelled as exc:
                handled.append(exc)
                raise

        def for_finally() -> None:
            lock.acquire()
            try:
                started.set()
                total = 0
                for _ in itertools.count():
                    total += sum(items)
            finally:
                handled.append(sys.exc_info()[1] or RuntimeError("no exception"))
                lock.release()

        task = {
            "while_finally": while_finally,
            "while_except_reraise": while_except_reraise,
            "for_finally": for_finally,
        }[shape]
        future = pool.submit(task)
        assert started.wait(WAIT)
        future.cancel()
        manual_clock.advance(1.0)
        assert future.wait_stopped(WAIT)
        assert state(future) is TaskState.STOPPED
        (exc,) = handled  # the handler ran, once, with the interrupt
        assert type(exc) is TaskInterrupted
        assert last_user_frame(exc) == shape  # it landed in the looping frame itself
        assert not lock.locked()
        assert (future._interrupts_sent, future._interrupts_landed) == (1, 1)
        assert pool.submit(pow, 2, 5).result(WAIT) == 32


class TestBlockedInC:
    def test_consumer_stops_after_the_get_it_was_waiting_in(
        self, pool: CancellableThreadPoolExecutor, manual_clock: ManualScheduler
    ) -> None:
        q: queue.Queue[int] = queue.Queue()
        seen: list[int] = []
        caught: list[BaseException] = []

        def consume() -> None:
            try:
                while True:
                    seen.append(q.get(timeout=WAIT))
            except BaseException as exc:
                caught.append(exc)
                raise

        future = pool.submit(consume)
        q.put(0)
        wait_for(lambda: seen == [0], "the first item to be consumed")
        wait_for(lambda: top_frame(future) == ("threading", "wait"), "the task to wait in get()")
        future.cancel(force=True, grace=0)
        assert (future._interrupts_sent, future._interrupts_landed) == (1, 0)
        assert state(future) is TaskState.INTERRUPTING  # armed, waiting in C
        for item in range(1, 6):
            q.put(item)
        assert future.wait_stopped(WAIT)
        # The get() pending at the cancel returned an item; it was appended, and the
        # back-edge after it raised: nothing lost, one item taken after the cancel.
        assert seen == [0, 1]
        assert [q.get_nowait() for _ in range(q.qsize())] == [2, 3, 4, 5]
        assert [type(e) for e in caught] == [TaskInterrupted]
        assert last_user_frame(caught[0]) == "consume"
        assert (future._interrupts_sent, future._interrupts_landed) == (1, 1)

    def test_blocked_in_c_stays_armed_then_abandoned_then_lands_when_it_returns(
        self, pool: CancellableThreadPoolExecutor, manual_clock: ManualScheduler
    ) -> None:
        ours, peer = socket.socketpair()
        chunks: list[bytes] = []
        caught: list[BaseException] = []

        def reads() -> None:
            try:
                while True:
                    chunks.append(ours.recv(16))  # blocked in C: nothing can land here
            except BaseException as exc:
                caught.append(exc)
                raise

        try:
            future = pool.submit(reads)
            wait_for(lambda: _blocked_in_recv(future), "the task to block in recv()")
            future.cancel()
            manual_clock.advance(1.0)
            assert (future._interrupts_sent, future._interrupts_landed) == (1, 0)
            manual_clock.advance(2.0)
            assert future._interrupts_sent == 1  # never armed again while an arm is open
            with pytest.warns(WorkerAbandonedWarning, match="recv"):
                manual_clock.advance(2.0)
            assert state(future) is TaskState.ABANDONED
            assert future._arm_open  # still armed
            peer.send(b"x")  # recv() returns; the back-edge after it raises
            assert future.wait_stopped(WAIT)
            assert chunks == [b"x"]
            assert [type(e) for e in caught] == [TaskInterrupted]
            assert (future._interrupts_sent, future._interrupts_landed) == (1, 1)
        finally:
            ours.close()
            peer.close()

    def test_an_arm_never_fires_in_the_workers_next_task(
        self, manual_clock: ManualScheduler
    ) -> None:
        ex = CancellableThreadPoolExecutor(max_workers=1, force=True, grace=1.0)
        started = threading.Event()
        gate = threading.Event()

        def returns_from_c() -> str:
            started.set()
            gate.wait(WAIT)  # armed meanwhile; no candidate point after it returns
            return "first"

        def pure_loop(n: int) -> int:
            count = 0
            while count < n:  # checks nothing: an open arm would land here
                count += 1
            return count

        try:
            first = ex.submit(returns_from_c)
            assert started.wait(WAIT)
            first.cancel(force=True, grace=0)
            assert (first._arm_open, first._interrupts_sent) == (True, 1)
            gate.set()
            assert first.wait_stopped(WAIT)
            assert state(first) is TaskState.STOPPED
            assert not first._arm_open  # closed by COMPLETE, in the task's thread
            assert first._interrupts_landed == 0
            assert not _inject._armed
            second = ex.submit(pure_loop, 200_000)
            assert second.result(WAIT) == 200_000
            assert state(second) is TaskState.FINISHED
            assert first._tally is second._tally  # the same worker, so the same thread
            assert not _inject._armed
        finally:
            ex.shutdown(wait=True, cancel_futures=True, timeout=WAIT)


class TestUserContextManager:
    def test_a_lock_taken_in_enter_is_always_released(
        self, pool: CancellableThreadPoolExecutor, manual_clock: ManualScheduler
    ) -> None:
        sys.setswitchinterval(1e-6)  # many thread switches: cancels at varied points

        class Guard:
            def __init__(self) -> None:
                self.lock = threading.Lock()
                self.entered = self.exited = 0

            def __enter__(self) -> None:
                self.lock.acquire()
                for _ in range(3):  # candidate points with the lock taken, not recorded
                    pass
                self.entered += 1

            def __exit__(self, *exc_info: object) -> None:
                self.exited += 1
                for _ in range(3):  # candidate points with the lock still to release
                    pass
                self.lock.release()

        def work() -> None:
            for _ in range(3):
                pass

        trials = 50
        for trial in range(trials):
            guard = Guard()
            started = threading.Event()

            def task(guard: Guard = guard, started: threading.Event = started) -> None:
                while True:
                    with guard:
                        started.set()
                        work()

            future = pool.submit(task)
            assert started.wait(WAIT)
            future.cancel(force=True, grace=0)
            assert future.wait_stopped(WAIT), f"trial {trial}: not stopped"
            assert state(future) is TaskState.STOPPED
            assert not guard.lock.locked(), f"trial {trial}: the lock was left held"
            assert guard.entered == guard.exited, f"trial {trial}: __exit__ skipped"
            assert future._interrupts_landed == 1
        assert pool.statistics().interrupts == trials


class TestSwallowAndAbandon:
    def test_swallowed_interrupt_is_rearmed_then_the_worker_abandoned(
        self, pool: CancellableThreadPoolExecutor, manual_clock: ManualScheduler
    ) -> None:
        started = threading.Event()
        swallowed: list[BaseException] = []
        flags = {"release": False}

        def stubborn() -> None:
            started.set()
            while not flags["release"]:
                try:
                    while not flags["release"]:  # lands here, in this frame...
                        pass
                except BaseException as exc:  # ...whose handler swallows it
                    swallowed.append(exc)

        future = pool.submit(stubborn)
        assert started.wait(WAIT)
        future.cancel()  # at t0: first arm at t0 + 1, abandon at t0 + 1 + 4
        t0 = manual_clock.now
        manual_clock.advance(1.0)
        assert future._interrupts_sent == 1
        wait_for(lambda: len(swallowed) == 1, "the first interrupt to be swallowed")
        with pytest.warns(InterruptSwallowedWarning, match=r"stubborn\(\).*bare except"):
            step_until(manual_clock, lambda: future._interrupts_sent == 2)
        for sends in range(2, MAX_SENDS + 1):
            wait_for(functools.partial(has_length, swallowed, sends), f"swallow {sends}")
            if sends < MAX_SENDS:
                step_until(manual_clock, functools.partial(sent, future, sends + 1))
        assert all(type(exc) is TaskInterrupted for exc in swallowed)
        manual_clock.advance(t0 + 4.99 - manual_clock.now)
        assert future._interrupts_sent == future._interrupts_landed == MAX_SENDS  # no more
        assert not future._arm_open
        assert state(future) is TaskState.INTERRUPTING
        with pytest.warns(WorkerAbandonedWarning):
            manual_clock.advance(0.01)
        assert state(future) is TaskState.ABANDONED
        stats = pool.statistics()
        assert (stats.abandoned_workers, stats.interrupts, stats.stopping) == (1, MAX_SENDS, 1)
        # The pool keeps its capacity: two tasks still run side by side.
        barrier = threading.Barrier(3, timeout=WAIT)
        both = [pool.submit(barrier.wait) for _ in range(2)]
        barrier.wait()
        for f in both:
            f.result(WAIT)
        flags["release"] = True
        assert future.wait_stopped(WAIT)
        assert state(future) is TaskState.STOPPED
        assert len(swallowed) == MAX_SENDS


class TestWhereItCannotArm:
    @pytest.mark.skipif(
        sys.version_info >= (3, 12), reason="3.9-3.11 only: 3.12+ arms with sys.monitoring"
    )
    def test_a_thread_traced_by_another_tool_is_not_armed(
        self, pool: CancellableThreadPoolExecutor, manual_clock: ManualScheduler
    ) -> None:
        started = threading.Event()
        flags = {"release": False}
        events: list[str] = []

        def other_tool(frame: Any, event: str, arg: Any) -> None:
            events.append(event)  # a debugger's or coverage's; no local tracing

        def traced() -> None:
            sys.settrace(other_tool)
            try:
                started.set()
                while not flags["release"]:
                    pass
            finally:
                sys.settrace(None)

        try:
            future = pool.submit(traced)
            assert started.wait(WAIT)
            future.cancel()
            manual_clock.advance(1.0)
            assert future._interrupts_sent == 0
            assert future._refusal is not None
            assert "traced by another tool" in future._refusal
            assert state(future) is TaskState.STOPPING
            with pytest.warns(
                WorkerAbandonedWarning, match=r"last refused: its thread is traced by another"
            ):
                manual_clock.advance(4.0)
            assert state(future) is TaskState.ABANDONED
            assert not _inject._armed
        finally:
            flags["release"] = True
        assert future.wait_stopped(WAIT)
        assert "call" in events  # the other tool kept its trace function

    @pytest.mark.subprocess
    @pytest.mark.skipif(sys.version_info < (3, 12), reason="3.12+ only: sys.monitoring tools")
    def test_monitoring_tool_ids_held_by_other_tools_refuse_the_arm(self) -> None:
        proc = run_python(TOOLS_TAKEN_CHILD)
        assert proc.returncode == 0, proc.stderr
        refusal, counts, warning, tools = proc.stdout.splitlines()
        assert refusal == (
            "sys.monitoring tool ids 4: 'other-a', 3: 'other-b' are held by other tools"
        )
        assert counts == "sent=0 landed=0 state=STOPPED armed={}"
        assert "(last refused: sys.monitoring tool ids 4: 'other-a', 3: 'other-b'" in warning
        assert tools == "other-a other-b"


TOOLS_TAKEN_CHILD = """
    import sys, threading, warnings
    monitoring = sys.monitoring
    monitoring.use_tool_id(4, "other-a")
    monitoring.use_tool_id(3, "other-b")
    try:
        import cancelpool
        from cancelpool import CancellableThreadPoolExecutor, _inject
        shown, abandoned = [], threading.Event()
        def showwarning(message, category, *args, **kwargs):
            shown.append(str(message))
            if category is cancelpool.WorkerAbandonedWarning:
                abandoned.set()
        warnings.showwarning = showwarning
        started, flags = threading.Event(), {"release": False}
        def busy():
            started.set()
            while not flags["release"]:
                pass
        ex = CancellableThreadPoolExecutor(max_workers=1, abandon_after=0.05)
        future = ex.submit(busy)
        assert started.wait(30)
        future.cancel(force=True, grace=0)
        assert abandoned.wait(30)
        flags["release"] = True
        assert future.wait_stopped(30)
        print(future._refusal)
        print(
            f"sent={future._interrupts_sent} landed={future._interrupts_landed} "
            f"state={future.task_state.name} armed={_inject._armed}"
        )
        print(shown[-1].splitlines()[0])
        print(monitoring.get_tool(4), monitoring.get_tool(3))
        ex.shutdown(wait=True)
    finally:
        monitoring.free_tool_id(4)
        monitoring.free_tool_id(3)
"""


class TestNothingWhenNotForced:
    def test_no_tracing_or_monitoring_outside_a_forced_cancel(
        self, manual_clock: ManualScheduler
    ) -> None:
        ex = CancellableThreadPoolExecutor(max_workers=1)
        try:
            self.run_normal_tasks(ex)
            assert machinery_left_on() == []
            spin = Spin()
            forced = ex.submit(spin.recording)
            assert spin.started.wait(WAIT)
            forced.cancel(force=True, grace=0)
            assert forced.wait_stopped(WAIT)
            assert [type(e) for e in spin.caught] == [TaskInterrupted]
            # The window closed when the arm landed: nothing left on, the code of the
            # interrupted loop restored.
            assert machinery_left_on(Spin.loop.__code__) == []
            self.run_normal_tasks(ex)
            assert machinery_left_on(Spin.loop.__code__) == []
        finally:
            ex.shutdown(wait=True, cancel_futures=True, timeout=WAIT)

    @staticmethod
    def run_normal_tasks(ex: CancellableThreadPoolExecutor) -> None:
        """Many tasks that complete, and cooperative cancels; each looks at its thread."""
        assert [f.result(WAIT) for f in [ex.submit(thread_hooks) for _ in range(200)]] == [
            (None, 0)
        ] * 200
        for _ in range(20):
            waiting = threading.Event()
            seen: list[tuple[Any, int]] = []

            def cooperative(
                waiting: threading.Event = waiting, seen: list[tuple[Any, int]] = seen
            ) -> None:
                waiting.set()
                current_token().wait(WAIT)
                seen.append(thread_hooks())
                current_token().raise_if_cancelled()

            future = ex.submit(cooperative)
            assert waiting.wait(WAIT)
            future.cancel()
            assert future.wait_stopped(WAIT)
            assert seen == [(None, 0)]
            assert state(future) is TaskState.STOPPED
            assert future._interrupts_sent == 0


def thread_hooks() -> tuple[Any, int]:
    """The calling thread's trace function, and cancelpool's global monitoring events."""
    return sys.gettrace(), monitoring_events()


def monitoring_events() -> int:
    """The events cancelpool's ``sys.monitoring`` tool has on (0 if it has no tool)."""
    events = 0
    if sys.version_info >= (3, 12) and _monitor._tool is not None:
        events = sys.monitoring.get_events(_monitor._tool)
    return events


def machinery_left_on(*codes: Any) -> list[str]:
    """What of the forced-interrupt machinery is on (empty: nothing), and where."""
    left = []
    if _inject._armed:
        left.append(f"armed threads {list(_inject._armed)}")
    if sys.version_info >= (3, 12):
        if _monitor._instrumented:
            left.append(f"instrumented {_monitor._instrumented}")
        if _monitor._pending or _monitor._user_code:
            left.append("a pending raise, or user code remembered from an open window")
        if monitoring_events():
            left.append(f"global events {monitoring_events():#x}")
        tool = _monitor._tool
        left.extend(
            f"local events on {code.co_name}"
            for code in codes
            if tool is not None and sys.monitoring.get_local_events(tool, code)
        )
    return left


def has_length(items: list[Any], n: int) -> bool:
    return len(items) == n


def sent(future: Any, n: int) -> bool:
    result: bool = future._interrupts_sent == n
    return result


def step_until(clock: ManualScheduler, done: Any, step: float = 0.05) -> None:
    """Advance the fake clock in small steps until *done()*; at most 10 fake seconds."""
    for _ in range(int(10 / step)):
        if done():
            return
        clock.advance(step)
    pytest.fail("the ladder never got there")


def _blocked_in_recv(future: Any) -> bool:
    from cancelpool._escalate import stack_of

    return "ours.recv(16)" in stack_of(future)


def top_frame(future: Any) -> tuple[str, str]:
    """The module and function of the top frame of the task's thread now."""
    tally = future._tally
    frame = sys._current_frames().get(tally.tid) if tally is not None else None
    if frame is None:
        return "", ""
    return frame.f_globals.get("__name__", ""), frame.f_code.co_name


PACKAGE_DIR = os.path.dirname(cancelpool.__file__)


def last_user_frame(exc: BaseException) -> str:
    """The function the interrupt landed in; checks that one cancelpool frame follows it.

    The traceback of a ``TaskInterrupted`` ends with the task's frame where it was raised,
    then the one callback of cancelpool's that raised it there.
    """
    *_, where, raiser = traceback.extract_tb(exc.__traceback__)
    assert os.path.dirname(raiser.filename) == PACKAGE_DIR, raiser
    assert os.path.dirname(where.filename) != PACKAGE_DIR, where
    return where.name


class TestCooperativeWarning:
    def test_still_running_warning_names_the_task_and_its_stack(
        self, manual_clock: ManualScheduler
    ) -> None:
        ex = CancellableThreadPoolExecutor(max_workers=1, grace=2.0)
        spin = Spin()
        future = ex.submit(spin.loop)
        try:
            assert spin.started.wait(WAIT)
            future.cancel()
            manual_clock.advance(1.9)
            with pytest.warns(StillRunningWarning) as record:
                manual_clock.advance(0.1)
            message = str(record[0].message)
            assert "Spin.loop()" in message
            assert "without force" in message
            assert ", in loop\n" in message  # where its thread is: in Spin.loop
            manual_clock.advance(100.0)  # warned once; no escalation without force
            assert future._interrupts_sent == 0
            assert state(future) is TaskState.STOPPING
        finally:
            spin.release = True
        assert future.wait_stopped(WAIT)
        ex.shutdown()


LOOP_SHAPES = ["while_call_lt", "while_true_break", "for_range", "nested_with"]


@pytest.mark.parametrize("shape", LOOP_SHAPES)
def test_loop_shapes_stop_and_worker_survives(
    shape: str, pool: CancellableThreadPoolExecutor, manual_clock: ManualScheduler
) -> None:
    """CPython #139622: on 3.13.0 an exception raised at the back-edge of such loops skipped
    the handlers of the frame it was raised in; the interrupt is raised so that they run."""
    started = threading.Event()
    flags = {"stop": False}
    cleanups: list[str] = []
    counter = iter(range(10**12))

    class Resource:
        def __enter__(self) -> None:
            return None

        def __exit__(self, *a: object) -> None:
            cleanups.append("exit")

    def task() -> None:
        started.set()
        if shape == "while_call_lt":
            try:
                while next(counter) < 10**12 and not flags["stop"]:
                    pass
            finally:
                cleanups.append("finally")
        elif shape == "while_true_break":
            while True:
                if flags["stop"]:
                    break
        elif shape == "for_range":
            for _ in range(10**12):
                if flags["stop"]:
                    break
        else:
            with Resource():
                while not flags["stop"]:
                    pass

    future = pool.submit(task)
    try:
        assert started.wait(WAIT)
        future.cancel()
        manual_clock.advance(1.0)
        assert future.wait_stopped(WAIT)
    finally:
        flags["stop"] = True  # a failed interrupt fails the test, not the next ones
    assert state(future) is TaskState.STOPPED
    assert future._interrupts_landed == 1
    # The landing frame's handlers run, on 3.13.0 too.
    if shape == "while_call_lt":
        assert cleanups == ["finally"]
    elif shape == "nested_with":
        assert cleanups == ["exit"]
    else:
        assert cleanups == []
    assert pool.submit(pow, 3, 3).result(WAIT) == 27

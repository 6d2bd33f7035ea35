"""Forced cancellation: the ladder, step by step, on a fake clock.

Each test drives the escalation with ``manual_clock.advance()``: the ladder's steps run
in the test's thread at the moment the test chooses, so the order of events is fixed by
the test, never by sleeping. The task's thread really runs, and the interrupt really is
injected into it.
"""

from __future__ import annotations

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
    checkpoint,
    current_token,
    shield,
)
from cancelpool._timer import ManualScheduler

from .conftest import WAIT, wait_for

pytestmark = pytest.mark.skipif(not cancelpool.FORCE_AVAILABLE, reason="needs injection")


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
        assert state(future) is TaskState.STOPPING  # grace not over: nothing sent
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
        gate = threading.Event()
        started = threading.Event()

        def waits_on_event() -> None:
            started.set()
            gate.wait(WAIT)  # inside threading.py: an exception must not land there

        future = pool.submit(waits_on_event)
        assert started.wait(WAIT)
        future.cancel()
        manual_clock.advance(1.0)
        assert future._interrupts_sent == 0
        assert future._refusal is not None
        assert future._refusal.startswith("inside threading.")
        with pytest.warns(
            WorkerAbandonedWarning, match=r"waits_on_event\(\).*abandoned and replaced"
        ):
            manual_clock.advance(4.0)
        assert state(future) is TaskState.ABANDONED
        gate.set()
        assert future.wait_stopped(WAIT)

    def test_shield_defers_the_interrupt_and_its_exit_delivers_it(
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
                        while not flags["release"]:
                            pass
                    # still shielded: the lock is released, no interrupt yet
                    checkpoint()
            except BaseException as exc:
                caught.append(exc)
                raise

        future = pool.submit(critical)
        assert inside.wait(WAIT)
        future.cancel()
        manual_clock.advance(1.0)
        assert future._interrupts_sent == 0
        assert future._refusal == "inside cancelpool.shield()"
        assert future._interrupt_wanted
        flags["release"] = True
        assert future.wait_stopped(WAIT)
        assert not lock.locked()
        assert [type(e) for e in caught] == [TaskInterrupted]
        assert future._interrupts_sent == future._interrupts_landed == 1

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


class TestSwallowAndAbandon:
    def test_swallowed_interrupt_is_resent_then_the_worker_abandoned(
        self, pool: CancellableThreadPoolExecutor, manual_clock: ManualScheduler
    ) -> None:
        started = threading.Event()
        swallowed: list[int] = []
        flags = {"release": False}

        def spin_until_released() -> None:
            while not flags["release"]:
                pass

        def stubborn() -> None:
            started.set()
            while not flags["release"]:
                # The loop is in its own frame: on 3.13.0 a handler in the frame where
                # the interrupt lands may be skipped (#139622); its caller's runs.
                try:
                    spin_until_released()
                except BaseException:  # swallows even TaskInterrupted
                    swallowed.append(1)

        future = pool.submit(stubborn)
        assert started.wait(WAIT)
        future.cancel()  # at t0: first send at t0 + 1, abandon at t0 + 1 + 4
        t0 = manual_clock.now
        manual_clock.advance(1.0)
        assert future._interrupts_sent == 1
        wait_for(lambda: len(swallowed) == 1, "the first interrupt to be swallowed")
        with pytest.warns(InterruptSwallowedWarning, match=r"stubborn\(\).*bare except"):
            step_until(manual_clock, lambda: future._interrupts_sent == 2)
        wait_for(lambda: len(swallowed) == 2, "the second interrupt to be swallowed")
        step_until(manual_clock, lambda: future._interrupts_sent == 3)
        wait_for(lambda: len(swallowed) == 3, "the third interrupt to be swallowed")
        manual_clock.advance(t0 + 4.99 - manual_clock.now)
        assert future._interrupts_sent == 3  # three at most
        assert state(future) is TaskState.INTERRUPTED
        with pytest.warns(WorkerAbandonedWarning):
            manual_clock.advance(0.01)
        assert state(future) is TaskState.ABANDONED
        stats = pool.statistics()
        assert (stats.abandoned_workers, stats.interrupts, stats.stopping) == (1, 3, 1)
        # The pool keeps its capacity: two tasks still run side by side.
        barrier = threading.Barrier(3, timeout=WAIT)
        both = [pool.submit(barrier.wait) for _ in range(2)]
        barrier.wait()
        for f in both:
            f.result(WAIT)
        flags["release"] = True
        assert future.wait_stopped(WAIT)
        assert state(future) is TaskState.STOPPED

    def test_blocked_in_c_gets_interrupt_pending_then_abandoned(
        self, pool: CancellableThreadPoolExecutor, manual_clock: ManualScheduler
    ) -> None:
        ours, peer = socket.socketpair()
        started = threading.Event()
        caught: list[BaseException] = []

        def reads() -> bytes:
            started.set()
            try:
                return ours.recv(16)  # blocked in C: no interrupt lands here
            except BaseException as exc:
                caught.append(exc)
                raise

        future = pool.submit(reads)
        assert started.wait(WAIT)
        wait_for(lambda: _blocked_in_recv(future), "the task to block in recv()")
        future.cancel()
        manual_clock.advance(1.0)
        assert future._interrupts_sent == 1  # sent: the task's own frame is on top
        assert future._interrupts_landed == 0  # ...but it cannot land during recv()
        manual_clock.advance(2.0)
        assert future._interrupts_sent == 1  # never a second send while one is pending
        with pytest.warns(WorkerAbandonedWarning, match="blocked in C|recv"):
            manual_clock.advance(2.0)
        assert state(future) is TaskState.ABANDONED
        peer.send(b"x")  # recv() returns; the pending interrupt lands right after it
        assert future.wait_stopped(WAIT)
        assert [type(e) for e in caught] == [TaskInterrupted]
        ours.close()
        peer.close()


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
    """CPython #139622: on 3.13.0 an interrupt landing at the back edge of such loops skips
    the landing frame's handlers; the worker must catch it in its own frame anyway."""
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
    assert started.wait(WAIT)
    future.cancel()
    manual_clock.advance(1.0)
    assert future.wait_stopped(WAIT)
    assert state(future) is TaskState.STOPPED
    if sys.version_info[:3] != (3, 13, 0):
        # Elsewhere the landing frame's handlers do run.
        if shape == "while_call_lt":
            assert cleanups == ["finally"]
        if shape == "nested_with":
            assert cleanups == ["exit"]
    assert pool.submit(pow, 3, 3).result(WAIT) == 27

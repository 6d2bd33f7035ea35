"""``cancelpool.shield()``: one instance reused, nested and by several tasks at once.

Issue 11, item 6: a shield used to remember the task it was entered in on the instance,
so a second use overwrote the first, and one task stayed shielded for ever: its
``checkpoint()`` never raised again and a forced cancel could only abandon its worker.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from typing import Callable

import pytest

import cancelpool
from cancelpool import (
    CancellableThreadPoolExecutor,
    TaskCancelled,
    TaskState,
    checkpoint,
    current_token,
    shield,
)

from .conftest import STRESS_SCALE, WAIT

#: One shield for the whole module, as library code would keep it.
SHARED = cancelpool.shield()


@pytest.fixture
def pool() -> Iterator[CancellableThreadPoolExecutor]:
    # abandon_after: far beyond the test, so a forced cancel that cannot interrupt shows as
    # a task still running, not as an abandoned worker left behind.
    ex = CancellableThreadPoolExecutor(max_workers=2, abandon_after=4 * WAIT)
    yield ex
    ex.shutdown(wait=True, cancel_futures=True, timeout=WAIT)


class Outcome:
    """What a task saw after its shields: whether it was still shielded, what raised."""

    def __init__(self) -> None:
        self.left = threading.Event()
        self.active_after = True
        self.raised: list[str] = []


def use_together(together: threading.Barrier) -> None:
    """Two tasks inside the one shared instance at the same time."""
    with SHARED:
        together.wait(WAIT)
        assert shield.active()


def use_nested(together: threading.Barrier) -> None:
    """The shared instance inside itself, in two tasks inside it at the same time."""
    with SHARED:
        together.wait(WAIT)
        with SHARED:
            assert shield.active()
        assert shield.active()  # the inner exit leaves the outer use in force


SHAPES = pytest.mark.parametrize("use", [use_together, use_nested], ids=["together", "nested"])


def after_shields(outcome: Outcome) -> None:
    """Record whether still shielded; wait to be cancelled; record what raises."""
    outcome.active_after = shield.active()
    outcome.left.set()
    token = current_token()
    token.wait(WAIT)
    for check in (token.raise_if_cancelled, checkpoint, lambda: token.sleep(0)):
        try:
            check()
        except TaskCancelled as exc:
            outcome.raised.append(exc.reason)


@SHAPES
def test_after_a_reused_shield_cancellation_is_delivered_again(
    pool: CancellableThreadPoolExecutor, use: Callable[[threading.Barrier], None]
) -> None:
    together = threading.Barrier(2)
    outcomes = [Outcome(), Outcome()]

    def task(outcome: Outcome) -> None:
        use(together)
        after_shields(outcome)

    futures = [pool.submit(task, outcome) for outcome in outcomes]
    for outcome in outcomes:
        assert outcome.left.wait(WAIT)
    assert [o.active_after for o in outcomes] == [False, False]
    assert [f._shield_depth for f in futures] == [0, 0]
    for future in futures:
        assert future.cancel(reason="stop", force=False)
    for future in futures:
        assert future.wait_stopped(WAIT)
    assert [o.raised for o in outcomes] == [["stop"] * 3, ["stop"] * 3]


def test_nested_reuse_delivers_a_deferred_cancel_once_at_the_outer_exit(
    pool: CancellableThreadPoolExecutor,
) -> None:
    inside = threading.Event()
    cancelled = threading.Event()
    seen: list[str] = []

    def task() -> None:
        s = shield()
        try:
            with s:
                with s:  # the same instance, twice
                    inside.set()
                    assert cancelled.wait(WAIT)
                    checkpoint()  # shielded: does not raise
                seen.append("inner exit: nothing raised")
                checkpoint()  # still shielded by the outer use
                seen.append("still shielded")
        except TaskCancelled as exc:
            seen.append(f"outer exit raised {exc.reason}")
            raise

    future = pool.submit(task)
    assert inside.wait(WAIT)
    assert future.cancel(reason="stop", force=False)
    cancelled.set()
    assert future.wait_stopped(WAIT)
    assert seen == ["inner exit: nothing raised", "still shielded", "outer exit raised stop"]
    assert future._shield_depth == 0


@pytest.mark.skipif(not cancelpool.FORCE_AVAILABLE, reason="needs forced interrupts (not PyPy)")
@SHAPES
def test_after_a_reused_shield_a_forced_cancel_interrupts(
    pool: CancellableThreadPoolExecutor, use: Callable[[threading.Barrier], None]
) -> None:
    together = threading.Barrier(2)
    spinning = threading.Barrier(3)  # both tasks, past their shields, and us
    flags = {"release": False}
    caught: list[BaseException] = []

    def task() -> None:
        try:
            use(together)
            spinning.wait(WAIT)
            while not flags["release"]:  # never looks at its token
                pass
        except BaseException as exc:
            caught.append(exc)
            raise

    futures = [pool.submit(task), pool.submit(task)]
    spinning.wait(WAIT)
    try:
        for future in futures:
            future.cancel(force=True, grace=0)
        stopped = [future.wait_stopped(WAIT) for future in futures]
    finally:
        flags["release"] = True
    assert stopped == [True, True]
    assert [type(exc) for exc in caught] == [cancelpool.TaskInterrupted] * 2
    assert [future.task_state for future in futures] == [TaskState.STOPPED] * 2


def test_exit_in_a_task_that_never_entered_warns_and_keeps_the_depth() -> None:
    def holds_a_shield() -> Iterator[None]:
        with SHARED:  # entered here, outside any task...
            yield

    gen = holds_a_shield()
    next(gen)

    def resume() -> tuple[bool, int]:
        with pytest.warns(RuntimeWarning, match=r"shield\(\) exited in .* never entered"):
            next(gen, None)  # ...and exited inside one
        return shield.active(), cancelpool.current_token().cancelled

    with CancellableThreadPoolExecutor(max_workers=1) as ex:
        future = ex.submit(resume)
        assert future.result(WAIT) == (False, False)
        depth = future._shield_depth
    assert depth == 0


def test_a_shield_outside_a_task_does_nothing_and_can_be_reused() -> None:
    with SHARED:
        with SHARED:  # the same instance, twice
            assert not shield.active()
        assert not shield.active()


def nest(depth: int) -> tuple[bool, bool]:
    """Enter the shared instance *depth* times, spinning a little at each level."""
    if depth == 0:
        return shield.active(), False
    with SHARED:
        for _ in range(50):  # let other threads in (switch interval 1e-6)
            pass
        inside, _ = nest(depth - 1)
    return inside, shield.active()


@pytest.mark.stress
def test_campaign_many_tasks_share_one_instance() -> None:
    sys.setswitchinterval(1e-6)
    deadline = time.monotonic() + 10.0 * STRESS_SCALE
    rounds = 0
    with CancellableThreadPoolExecutor(max_workers=4) as ex:
        for _ in range(max(1, int(200 * STRESS_SCALE))):
            futures = [ex.submit(nest, depth) for depth in (1, 2, 3, 1, 2, 3, 1, 2)]
            outcomes = [future.result(WAIT) for future in futures]
            assert outcomes == [(True, False)] * len(futures)
            assert [future._shield_depth for future in futures] == [0] * len(futures)
            rounds += 1
            if time.monotonic() > deadline:
                break
    assert rounds > 0

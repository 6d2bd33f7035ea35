"""The timer thread's scheduler: ordering, cancel, and scheduling when no thread can start."""

from __future__ import annotations

import threading

import pytest

from cancelpool._timer import Scheduler

from .conftest import WAIT


def test_actions_run_in_due_order_and_a_cancelled_one_does_not_run() -> None:
    scheduler = Scheduler()
    ran: list[str] = []
    done = threading.Event()
    base = scheduler.clock()
    scheduler.call_at(base + 0.02, lambda: ran.append("second"))
    skipped = scheduler.call_at(base + 0.01, lambda: ran.append("cancelled"))
    scheduler.call_at(base, lambda: ran.append("first"))
    scheduler.call_at(base + 0.03, done.set)
    skipped.cancel()
    assert done.wait(WAIT)
    assert ran == ["first", "second"]


def test_scheduling_never_fails_when_no_thread_can_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # At interpreter exit 3.12+ refuses new threads; cancel() must still not raise, and
    # the exit hook runs the due actions itself.
    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't create new thread at interpreter shutdown")

    scheduler = Scheduler()
    ran: list[str] = []
    with monkeypatch.context() as m:
        m.setattr(threading.Thread, "start", refuse)
        scheduler.call_later(0.0, lambda: ran.append("due"))
        scheduler.call_later(3600.0, lambda: ran.append("later"))
    assert ran == []
    delay = scheduler.run_due_without_thread()
    assert ran == ["due"]
    assert delay is not None and 3500 < delay <= 3600


def test_run_due_without_thread_leaves_actions_to_a_running_thread() -> None:
    scheduler = Scheduler()
    release = threading.Event()
    blocked = threading.Event()

    def block() -> None:
        blocked.set()
        release.wait(WAIT)

    scheduler.call_later(0.0, block)
    assert blocked.wait(WAIT)
    try:
        scheduler.call_later(0.0, lambda: None)
        assert scheduler.run_due_without_thread() is None
    finally:
        release.set()


def test_an_action_added_while_the_timer_decides_to_sleep_still_runs() -> None:
    """The one window of the lock-free ``call_at``, forced open with the clock.

    The timer thread, holding its lock, has looked at the incoming actions and found
    none; before it sets the time it will sleep until, another thread appends an action
    without the lock (the thread was busy, so the appender sees no need to wake it).
    The thread must look again before sleeping, or the action waits for ever.
    """
    in_window, appended, first_ran = threading.Event(), threading.Event(), threading.Event()

    def clock() -> float:
        # The timer thread reads the clock right after taking the incoming actions in.
        in_timer = threading.current_thread().name == "cancelpool-timer"
        if in_timer and first_ran.is_set() and not appended.is_set():
            in_window.set()
            appended.wait(WAIT)
        return 0.0

    scheduler = Scheduler(clock=clock)
    ran = threading.Event()
    scheduler.call_at(0.0, first_ran.set)  # starts the thread; it runs this, then looks
    assert in_window.wait(WAIT)
    scheduler.call_at(0.0, ran.set)  # lock-free: the thread is between its look and sleep
    assert scheduler._incoming
    appended.set()
    assert ran.wait(WAIT), "the action appended in the window never ran"

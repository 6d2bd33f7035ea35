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

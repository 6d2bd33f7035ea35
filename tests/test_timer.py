"""The timer thread's scheduler: ordering, cancel, idle exit, and each race with call_at.

The races of ``call_at`` (which takes no lock on its common path) with the timer thread
deciding to sleep or to exit are forced open, not hoped for: the scheduler's two deques
are swapped for ``Hooked`` ones that hold a chosen operation of a chosen thread until the
test lets it go. ``cancelpool._timer`` numbers the steps: a caller appends (1) and then
reads the time the thread looks next (2); the thread publishes that time, or "no
thread" when it exits (A), and then looks at the incoming actions once more (B).
"""

from __future__ import annotations

import math
import threading
from collections import deque
from typing import Any, Callable

import pytest

from cancelpool._timer import IDLE_TIMEOUT, ManualScheduler, Scheduler

from .conftest import WAIT, wait_for

TIMER = "cancelpool-timer"


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
    # At interpreter exit 3.12+ refuses new threads; call_at must still not raise, and
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
        # It stood in for the thread only while it ran them: the next action still
        # tries to start one.
        assert scheduler._thread is None and scheduler._until[0] == math.inf
    assert scheduler.starts == 0


def test_run_due_without_thread_starts_a_thread_when_it_can(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As at exit on 3.9-3.11, where threads can still start: the thread runs them.
    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    scheduler = Scheduler()
    ran = threading.Event()
    with monkeypatch.context() as m:
        m.setattr(threading.Thread, "start", refuse)
        scheduler.call_later(0.0, ran.set)
    assert not ran.is_set()
    assert scheduler.run_due_without_thread() is None
    assert ran.wait(WAIT)
    assert scheduler.starts == 1


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


def test_an_action_due_at_infinity_never_runs_and_breaks_nothing() -> None:
    # It used to be pushed on the heap and put the thread to sleep for ever: waiting
    # with an infinite timeout raised OverflowError, and the thread died with it.
    scheduler = Scheduler(idle_timeout=0.0)
    never = scheduler.call_at(math.inf, lambda: pytest.fail("ran"))
    ran = threading.Event()
    scheduler.call_later(0.0, ran.set)
    assert ran.wait(WAIT)
    wait_for(lambda: scheduler._thread is None, "the idle timer thread to exit")
    never.cancel()


def test_the_thread_exits_when_idle_and_the_next_action_starts_another() -> None:
    scheduler = Scheduler(idle_timeout=0.0)
    first: list[threading.Thread] = []
    second = threading.Event()
    scheduler.call_later(0.0, lambda: first.append(threading.current_thread()))
    wait_for(lambda: bool(first), "the first action to run")
    wait_for(lambda: scheduler._thread is None, "the idle timer thread to exit")
    thread = first[0]
    thread.join(WAIT)
    assert not thread.is_alive() and thread not in threading.enumerate()
    scheduler.call_later(0.0, second.set)
    assert second.wait(WAIT)
    assert scheduler.starts == 2


def test_withdrawn_actions_do_not_keep_the_thread_alive() -> None:
    # Deadlines of tasks that ended in time stay in the heap until due (no wake-up to
    # withdraw them); once nothing else is left, the thread drops them and exits.
    scheduler = Scheduler(idle_timeout=0.0)
    handles = [scheduler.call_later(3600.0, lambda: None) for _ in range(10)]
    for handle in handles:
        handle.cancel()
    ran = threading.Event()
    scheduler.call_later(0.0, ran.set)  # due before the hour: wakes the thread
    assert ran.wait(WAIT)
    wait_for(lambda: scheduler._thread is None, "the idle timer thread to exit")
    assert scheduler._heap == []


def test_tidy_lets_a_thread_asleep_until_a_withdrawn_action_go() -> None:
    # Withdrawing costs no wake-up, so the thread sleeps on until the withdrawn time;
    # shutdown() calls tidy() (through DeadlineWatch.close) to let it go idle.
    scheduler = Scheduler(idle_timeout=0.0)
    far = scheduler.call_later(3600.0, lambda: None)
    wait_for(lambda: scheduler._until[0] == far.when, "the thread to sleep until the hour")
    far.cancel()
    assert scheduler._thread is not None
    scheduler.tidy()
    wait_for(lambda: scheduler._thread is None, "the idle timer thread to exit")
    assert scheduler._heap == [] and scheduler.starts == 1


def test_an_action_added_while_the_timer_decides_to_sleep_still_runs() -> None:
    """The window between the thread's look at the incoming actions and its sleep.

    The timer thread, holding its lock, has taken the incoming actions in and found
    nothing due (the next action is an hour away); before it publishes the time it will
    sleep until, another thread appends an action without the lock (the thread was
    busy, so the appender sees no need to wake it). The thread must look again before
    sleeping (step B), or the action waits for the hour.
    """
    in_window, appended, first_ran = threading.Event(), threading.Event(), threading.Event()

    def clock() -> float:
        # The timer thread reads the clock right after taking the incoming actions in.
        in_timer = threading.current_thread().name == TIMER
        if in_timer and first_ran.is_set() and not appended.is_set():
            in_window.set()
            appended.wait(WAIT)
        return 0.0

    scheduler = Scheduler(clock=clock)
    far = scheduler.call_at(3600.0, lambda: None)  # what the thread would sleep until
    ran = threading.Event()
    scheduler.call_at(0.0, first_ran.set)  # starts the thread; it runs this, then looks
    assert in_window.wait(WAIT)
    scheduler.call_at(0.0, ran.set)  # lock-free: the thread is between its look and sleep
    assert scheduler._incoming
    appended.set()
    assert ran.wait(WAIT), "the action appended in the window never ran"
    far.cancel()
    scheduler.tidy()  # let the thread go


def test_an_action_due_after_the_thread_wakes_is_taken_in_when_it_wakes() -> None:
    # Due no earlier than the time the thread sleeps until: no wake-up, no lock; the
    # thread takes it in when it wakes for the earlier one.
    scheduler = Scheduler()
    first, second = threading.Event(), threading.Event()
    now = scheduler.clock()
    scheduler.call_at(now + 0.05, first.set)
    wait_for(lambda: scheduler._until[0] == now + 0.05, "the thread to sleep until 50 ms")
    settles: list[None] = []
    settle = scheduler._settle

    def counted_settle() -> None:
        settles.append(None)
        settle()

    scheduler._settle = counted_settle  # type: ignore[method-assign]
    scheduler.call_at(now + 0.06, second.set)
    assert settles == []  # neither lock nor wake-up
    assert first.wait(WAIT) and second.wait(WAIT)


# ------------------------------------------------------- call_at against the idle exit


class Hooked(deque):  # type: ignore[type-arg]
    """A deque that reports its operations to ``hook(name, op, value)``, which may block.

    ``op`` is ``"append"`` (before appending *value*), ``"appended"`` (after),
    ``"read"`` (``d[0]`` is about to return *value*) or ``"len"`` (``len(d)`` or its
    truth test is about to use *value*).
    """

    def __init__(self, items: Any, name: str, hook: Callable[[str, str, Any], None], **kw: Any):
        super().__init__(items, **kw)
        self.name = name
        self.hook = hook

    def append(self, value: Any) -> None:
        self.hook(self.name, "append", value)
        super().append(value)
        self.hook(self.name, "appended", value)

    def __getitem__(self, index: Any) -> Any:
        value = super().__getitem__(index)
        self.hook(self.name, "read", value)
        return value

    def __len__(self) -> int:
        value = super().__len__()
        self.hook(self.name, "len", value)
        return value

    def __bool__(self) -> bool:  # deque's own truth test skips __len__ on 3.9, 3.10
        return len(self) > 0


class Pause:
    """Hold the first operation that *matches*, in its thread, until ``release``."""

    def __init__(self, match: Callable[[str, str, Any], bool]) -> None:
        self.match = match
        self.reached = threading.Event()
        self.release = threading.Event()
        self.used = False

    def __call__(self, name: str, op: str, value: Any) -> None:
        if not self.used and self.match(name, op, value):
            self.used = True
            self.reached.set()
            assert self.release.wait(WAIT)


def in_thread(name: str) -> bool:
    return threading.current_thread().name == name


class Harness:
    """A scheduler that exits as soon as it is idle, with its deques hooked."""

    def __init__(self, *pauses: Pause) -> None:
        self.pauses = pauses
        self.scheduler = Scheduler(idle_timeout=0.0)
        self.scheduler._until = Hooked((math.inf,), "until", self.hook, maxlen=1)
        self.scheduler._incoming = Hooked((), "incoming", self.hook)
        self.log: list[tuple[str, str, str, Any]] = []
        self.lock = threading.Lock()

    def hook(self, name: str, op: str, value: Any) -> None:
        with self.lock:
            self.log.append((threading.current_thread().name, name, op, value))
        for pause in self.pauses:
            pause(name, op, value)

    def until(self) -> float:
        return deque.__getitem__(self.scheduler._until, 0)

    def start_and_go_idle(self) -> threading.Thread:
        """Run one action, so that the thread then finds itself idle and decides to exit."""
        ran: list[threading.Thread] = []
        self.scheduler.call_later(0.0, lambda: ran.append(threading.current_thread()))
        wait_for(lambda: bool(ran), "the first action to run")
        return ran[0]

    def call_in_thread(self, action: Callable[[], None]) -> threading.Thread:
        caller = threading.Thread(
            target=self.scheduler.call_later, args=(0.0, action), name="caller"
        )
        caller.start()
        return caller


def timer_publishes_no_thread(name: str, op: str, value: Any) -> bool:
    return in_thread(TIMER) and name == "until" and op == "append" and value == math.inf


def test_an_action_appended_before_the_thread_says_it_exits_is_run_by_it() -> None:
    # 1 and 2 between the thread's look (it found nothing) and A: the caller reads
    # "awake", needs no lock; B finds the action and the thread stays.
    before_a = Pause(timer_publishes_no_thread)
    harness = Harness(before_a)
    thread = harness.start_and_go_idle()
    assert before_a.reached.wait(WAIT)
    ran = threading.Event()
    harness.scheduler.call_later(0.0, ran.set)  # returns at once: the thread is "awake"
    assert harness.until() == -math.inf
    before_a.release.set()
    assert ran.wait(WAIT)
    assert harness.scheduler.starts == 1  # run by the same thread
    assert ("MainThread", "until", "read", -math.inf) in harness.log
    wait_for(lambda: not thread.is_alive(), "the idle timer thread to exit")


def test_an_action_appended_between_the_exit_notice_and_the_last_look_is_run_by_it() -> None:
    # A, then 1 and 2: the caller reads "no thread" and takes the lock; B finds the
    # action, so the thread stays and runs it; the caller starts no second thread.
    after_a = Pause(
        lambda name, op, value: (
            in_thread(TIMER) and name == "until" and op == "appended" and value == math.inf
        )
    )
    appended = Pause(lambda name, op, value: in_thread("caller") and op == "appended")
    harness = Harness(after_a, appended)
    harness.start_and_go_idle()
    assert after_a.reached.wait(WAIT)
    ran = threading.Event()
    caller = harness.call_in_thread(ran.set)
    assert appended.reached.wait(WAIT)
    appended.release.set()  # on to 2: it reads "no thread", then waits for the lock
    wait_for(lambda: ("caller", "until", "read", math.inf) in harness.log, "the caller to read")
    after_a.release.set()
    assert ran.wait(WAIT)
    caller.join(WAIT)
    assert harness.scheduler.starts == 1


def test_an_action_appended_after_the_thread_decided_to_exit_starts_a_new_one() -> None:
    # A and B (B found nothing: the thread will exit), then 1 and 2: the caller reads
    # "no thread", waits for the lock the exiting thread holds, and starts a new one.
    after_b = Pause(
        lambda name, op, value: (
            in_thread(TIMER)
            and name == "incoming"
            and op == "len"
            and value == 0
            and harness.until() == math.inf
        )
    )
    appended = Pause(lambda name, op, value: in_thread("caller") and op == "appended")
    harness = Harness(after_b, appended)
    first = harness.start_and_go_idle()
    assert after_b.reached.wait(WAIT)
    ran = threading.Event()
    caller = harness.call_in_thread(ran.set)
    assert appended.reached.wait(WAIT)
    appended.release.set()
    wait_for(lambda: ("caller", "until", "read", math.inf) in harness.log, "the caller to read")
    after_b.release.set()
    assert ran.wait(WAIT)
    caller.join(WAIT)
    assert harness.scheduler.starts == 2
    first.join(WAIT)
    assert not first.is_alive()


def test_a_caller_held_between_its_append_and_its_read_across_the_exit_notice() -> None:
    # 1 before A, 2 after it: B finds the action, the thread stays and runs it while
    # the caller is still held; the caller's read then finds the thread awake.
    before_a = Pause(timer_publishes_no_thread)
    after_append = Pause(lambda name, op, value: in_thread("caller") and op == "appended")
    harness = Harness(before_a, after_append)
    harness.start_and_go_idle()
    assert before_a.reached.wait(WAIT)
    ran = threading.Event()
    caller = harness.call_in_thread(ran.set)
    assert after_append.reached.wait(WAIT)
    before_a.release.set()
    assert ran.wait(WAIT)  # run by the thread that was exiting, caller still held
    after_append.release.set()
    caller.join(WAIT)
    assert harness.scheduler.starts == 1


def test_a_caller_held_at_its_first_step_while_the_thread_exits_is_not_lost() -> None:
    # The whole exit happens between the caller's first step and its second: whatever
    # it read before would be stale, so it must read after appending (1, then 2).
    first_step = Pause(lambda name, op, value: in_thread("caller") and op in ("append", "read"))
    before_a = Pause(timer_publishes_no_thread)
    harness = Harness(first_step, before_a)
    first = harness.start_and_go_idle()
    assert before_a.reached.wait(WAIT)  # the thread is alive, "awake", about to exit
    ran = threading.Event()
    caller = harness.call_in_thread(ran.set)
    assert first_step.reached.wait(WAIT)
    before_a.release.set()
    first.join(WAIT)
    assert not first.is_alive() and harness.scheduler._thread is None
    first_step.release.set()
    assert ran.wait(WAIT), "an action scheduled across the thread's exit was lost"
    caller.join(WAIT)
    assert harness.scheduler.starts == 2


def test_an_action_after_the_thread_exited_starts_a_new_one() -> None:
    harness = Harness()
    first = harness.start_and_go_idle()
    wait_for(lambda: harness.scheduler._thread is None, "the idle timer thread to exit")
    ran = threading.Event()
    harness.scheduler.call_later(0.0, ran.set)
    assert ran.wait(WAIT)
    assert harness.scheduler.starts == 2
    first.join(WAIT)
    assert not first.is_alive()


def test_call_at_reads_the_wake_up_time_through_the_deque_after_appending() -> None:
    # The premise of the argument in cancelpool._timer: step 2 is an operation on the
    # deque the thread writes through, and comes after step 1.
    harness = Harness()
    harness.scheduler.call_at(harness.scheduler.clock() + 3600.0, lambda: None)
    mine = [(name, op) for who, name, op, _ in harness.log if who == "MainThread"]
    assert mine[:3] == [("incoming", "append"), ("incoming", "appended"), ("until", "read")]


def test_the_deadline_watch_reads_the_check_time_through_its_deque() -> None:
    # The same premise for cancelpool._deadline: a worker reads the time of the next
    # check through the deque that a check appends to before it reads the workers.
    from cancelpool._deadline import DeadlineWatch

    reads: list[str] = []
    watch = DeadlineWatch(ManualScheduler(), set())
    watch._armed = Hooked((math.inf,), "armed", lambda name, op, value: reads.append(op), maxlen=1)

    class Future:
        _deadline_at = math.inf

    watch.start(Future(), 1.0)  # type: ignore[arg-type]
    assert reads[0] == "read"
    assert watch.armed_at == 1001.0


@pytest.mark.slow
def test_the_default_idle_timeout_is_about_a_second() -> None:
    scheduler = Scheduler()
    assert scheduler.idle_timeout == IDLE_TIMEOUT == 1.0
    ran = threading.Event()
    scheduler.call_later(0.0, ran.set)
    assert ran.wait(WAIT)
    thread = scheduler._thread
    assert thread is not None
    thread.join(0.5)
    assert thread.is_alive()  # not before about a second
    thread.join(WAIT)
    assert not thread.is_alive() and scheduler._thread is None


def test_retire_if_idle_ends_an_idle_thread_before_it_returns() -> None:
    # shutdown(wait=True) calls it: no thread of ours may outlive that call (CPython's
    # threading_cleanup() looks right after it), and the idle wait lasts a second.
    scheduler = Scheduler()  # the default idle timeout: 1 s
    ran = threading.Event()
    scheduler.call_later(0.0, ran.set)
    assert ran.wait(WAIT)
    thread = scheduler._thread
    assert thread is not None and thread.is_alive()
    scheduler.retire_if_idle(WAIT)
    assert not thread.is_alive() and scheduler._thread is None
    # The next action starts another thread, which idles as before.
    again = threading.Event()
    scheduler.call_later(0.0, again.set)
    assert again.wait(WAIT)
    assert scheduler.starts == 2
    scheduler.retire_if_idle(WAIT)


def test_retire_if_idle_leaves_a_thread_that_has_actions_to_run() -> None:
    scheduler = Scheduler(idle_timeout=0.0)
    ran = threading.Event()
    later = scheduler.call_later(3600.0, lambda: None)  # a real action, an hour away
    wait_for(lambda: scheduler._until[0] == later.when, "the thread to sleep until it")
    thread = scheduler._thread
    scheduler.retire_if_idle(WAIT)
    assert thread is not None and thread.is_alive() and scheduler._thread is thread
    scheduler.call_later(0.0, ran.set)
    assert ran.wait(WAIT)
    later.cancel()
    scheduler.tidy()
    wait_for(lambda: scheduler._thread is None, "the idle timer thread to exit")


def test_retire_if_idle_without_a_thread_does_nothing() -> None:
    scheduler = Scheduler()
    scheduler.retire_if_idle(WAIT)
    assert scheduler._thread is None and scheduler.starts == 0

"""Races forced, not hoped for: cancel against completion, shutdown against submit,
scheduling against the timer thread going idle.

``sys.setswitchinterval(1e-6)`` makes the interpreter switch threads at almost every
opportunity, so the interleavings the state machine must survive happen thousands of
times per run. Campaigns have fixed trial counts (times ``CANCELPOOL_STRESS_SCALE``) and a
time cap, and check invariants on every trial:

* a cancelled future never has a result, a finished one never was cancelled;
* ``cancel()`` returned True exactly when the future ended cancelled;
* done-callbacks run exactly once;
* no worker is lost and the counts add up.
"""

from __future__ import annotations

import functools
import queue
import random
import sys
import threading
import time
from concurrent.futures import CancelledError
from typing import Any, Callable, Optional

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from cancelpool import (
    CancellableFuture,
    CancellableThreadPoolExecutor,
    CancelSource,
    CancelToken,
    DeadlineExceeded,
    TaskState,
    _inject,
)
from cancelpool._future import ABANDON, COMPLETE, DROP, EXPIRE, INTERRUPT, TAKE
from cancelpool._stats import SharedCounts, WorkerCounts
from cancelpool._timer import Scheduler

from .conftest import STRESS_SCALE, WAIT, wait_for

TIME_CAP = 20.0 * STRESS_SCALE


def no_callbacks(token: CancelToken) -> bool:
    return not token._callbacks


def trials(base: int) -> int:
    return max(1, int(base * STRESS_SCALE))


class CallbackCounter:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        # Keyed by the future itself (kept alive), not id(): ids are reused.
        self.calls: dict[Any, int] = {}

    def __call__(self, future: Any) -> None:
        with self.lock:
            self.calls[future] = self.calls.get(future, 0) + 1


def check_outcome(future: CancellableFuture[Any], cancel_returned: bool, value: Any) -> None:
    assert future.wait_stopped(WAIT)
    assert future.done()
    if cancel_returned:
        assert future.cancelled(), future
        assert future.task_state in (TaskState.CANCELLED, TaskState.STOPPED), future
        assert future._result is None  # never a result
        with pytest.raises(CancelledError):
            future.result(0)
        assert future.token.cancelled
    else:
        assert not future.cancelled(), future
        assert future.task_state is TaskState.FINISHED
        assert future.result(0) == value
        assert not future.token.cancelled


@pytest.mark.stress
def test_cancel_races_completion() -> None:
    sys.setswitchinterval(1e-6)
    counter = CallbackCounter()
    rng = random.Random(1234)
    ex = CancellableThreadPoolExecutor(max_workers=4)
    deadline = time.monotonic() + TIME_CAP
    n = trials(20000)
    done_trials = 0
    outcomes = {True: 0, False: 0}
    for i in range(n):
        future = ex.submit(pow, i, 2)
        future.add_done_callback(counter)
        for _ in range(rng.randrange(40)):  # a random head start for the worker
            pass
        cancelled = future.cancel()
        outcomes[cancelled] += 1
        check_outcome(future, cancelled, i * i)
        done_trials += 1
        if time.monotonic() > deadline:
            break
    assert ex.shutdown(timeout=WAIT) == ()
    assert set(counter.calls.values()) == {1}
    assert len(counter.calls) == done_trials
    stats = ex.statistics()
    assert stats.completed + stats.cancelled == stats.submitted == done_trials
    assert stats.failed == stats.pending == stats.running == stats.stopping == 0
    assert len(ex._threads) <= 4
    # Both outcomes must have happened, or the race was not exercised.
    assert outcomes[True] > 0 and outcomes[False] > 0, outcomes


@pytest.mark.stress
def test_many_cancellers_one_completion() -> None:
    sys.setswitchinterval(1e-6)
    counter = CallbackCounter()
    ex = CancellableThreadPoolExecutor(max_workers=2)
    deadline = time.monotonic() + TIME_CAP
    n = trials(2000)
    for i in range(n):
        future = ex.submit(pow, i, 2)
        future.add_done_callback(counter)
        results: list[bool] = []
        barrier = threading.Barrier(3, timeout=WAIT)

        def cancel(
            f: CancellableFuture[Any] = future,
            b: threading.Barrier = barrier,
            out: list[bool] = results,
        ) -> None:
            b.wait()
            out.append(f.cancel())

        threads = [threading.Thread(target=cancel) for _ in range(2)]
        for t in threads:
            t.start()
        barrier.wait()
        for t in threads:
            t.join(WAIT)
        # All cancellers agree: either the future was cancelled or it had finished.
        assert len(set(results)) == 1, results
        check_outcome(future, results[0], i * i)
        if time.monotonic() > deadline:
            break
    assert ex.shutdown(timeout=WAIT) == ()
    assert set(counter.calls.values()) == {1}


@pytest.mark.stress
def test_shutdown_races_submitters() -> None:
    sys.setswitchinterval(1e-6)
    rng = random.Random(99)
    sizes: list[int] = []
    deadline = time.monotonic() + TIME_CAP
    for _ in range(trials(100)):
        ex = CancellableThreadPoolExecutor(max_workers=3)
        submitted: list[CancellableFuture[Any]] = []
        lock = threading.Lock()
        go = threading.Barrier(4, timeout=WAIT)

        def submitter(
            ex: CancellableThreadPoolExecutor = ex,
            go: threading.Barrier = go,
            lock: threading.Lock = lock,
            submitted: list[CancellableFuture[Any]] = submitted,
        ) -> None:
            go.wait()
            for k in range(200):
                try:
                    f = ex.submit(pow, k, 2)
                except RuntimeError:
                    return
                with lock:
                    submitted.append(f)

        threads = [threading.Thread(target=submitter) for _ in range(3)]
        for t in threads:
            t.start()
        go.wait()
        # Shut down at a random point of the submitters' run, mid-stream.
        target = rng.randrange(400)
        while len(submitted) < target and any(t.is_alive() for t in threads):
            time.sleep(0)
        ex.shutdown(wait=True, cancel_futures=True, timeout=WAIT, cancel_running=True)
        sizes.append(len(submitted))
        for t in threads:
            t.join(WAIT)
        for f in submitted:
            assert f.wait_stopped(WAIT), f
            assert f.done(), f
            if not f.cancelled():
                f.result(0)
        stats = ex.statistics()
        assert stats.submitted == len(submitted)
        assert stats.completed + stats.cancelled == stats.submitted
        assert stats.pending == stats.running == stats.stopping == 0
        if time.monotonic() > deadline:
            break
    # Shutdown landed mid-stream: some trials had accepted work, none accepted it all.
    assert max(sizes) > 0 and min(sizes) < 600, sizes


RUNNING_STATES = (
    TaskState.RUNNING,
    TaskState.STOPPING,
    TaskState.INTERRUPTING,
    TaskState.ABANDONED,
)


class FutureStateMachine(RuleBasedStateMachine):
    """Drive one bound future through random events; compare with a model.

    Checks that the future's own state strings, its public predicates, the counts and
    the callbacks stay consistent with the task state after every step, including the
    events that are errors (starting twice, completing a pending task).
    """

    def __init__(self) -> None:
        super().__init__()
        self.counts = SharedCounts()
        self.counts.submitted = 1
        self.tally = WorkerCounts()
        self.future: CancellableFuture[Any] = CancellableFuture._for_task(self.counts, None)
        self.callbacks = 0
        self.future.add_done_callback(self._on_done)
        self.taken = False
        self.expected = TaskState.PENDING
        self.interrupts = 0
        self.expired = False  # its deadline passed: the future failed, not cancelled

    def _on_done(self, _: Any) -> None:
        self.callbacks += 1

    @rule()
    def take(self) -> None:
        if self.taken:
            with pytest.raises(RuntimeError, match="already taken"):
                self.future._transition(TAKE, tally=self.tally)
            return
        self.taken = True
        should_run = self.future._transition(TAKE, tally=self.tally)
        assert should_run == (self.expected is TaskState.PENDING)
        if should_run:
            self.expected = TaskState.RUNNING

    @rule(reason=st.sampled_from(["cancel", "shutdown", "map"]))
    def cancel(self, reason: str) -> None:
        answer = self.future.cancel(reason=reason)
        before = self.expected
        assert answer == (before is not TaskState.FINISHED and not self.expired)
        if before is TaskState.PENDING:
            self.expected = TaskState.CANCELLED
        elif before is TaskState.RUNNING:
            self.expected = TaskState.STOPPING

    @precondition(lambda self: self.expected in RUNNING_STATES)
    @rule(fail=st.booleans())
    def complete(self, fail: bool) -> None:
        exc = ValueError("boom") if fail else None
        kept = self.future._transition(COMPLETE, result=7, exception=exc, tally=self.tally)
        if self.expected is TaskState.RUNNING:
            assert kept
            self.expected = TaskState.FINISHED
        else:
            assert not kept  # cancelled: the outcome is dropped
            self.expected = TaskState.STOPPED

    @rule(safe=st.booleans())
    def interrupt(self, safe: bool) -> None:
        # Arming the thread is simulated: the model checks the state machine around it.
        refusal = None if safe else "its thread is traced by another tool"
        was_armed = self.future._arm_open
        real_arm = _inject.arm
        _inject.arm = lambda future, tally: refusal
        try:
            sent = self.future._transition(INTERRUPT, "", None)
        finally:
            _inject.arm = real_arm
        can = self.expected in (TaskState.STOPPING, TaskState.INTERRUPTING)
        if can and was_armed:
            assert sent  # already armed: nothing more to do
            return
        assert sent == (can and safe and self.future._tally is not None)
        if sent:
            self.expected = TaskState.INTERRUPTING
            self.interrupts += 1

    @rule()
    def abandon(self) -> None:
        done = self.future._transition(ABANDON)
        assert done == (self.expected in (TaskState.STOPPING, TaskState.INTERRUPTING))
        if done:
            self.expected = TaskState.ABANDONED

    @rule()
    def expire(self) -> None:
        applied = self.future._transition(EXPIRE, "deadline", None, DeadlineExceeded(1.0))
        before = self.expected
        assert applied == (before in (TaskState.PENDING, TaskState.RUNNING))
        if applied:
            self.expired = True
            self.expected = (
                TaskState.CANCELLED if before is TaskState.PENDING else TaskState.STOPPING
            )
            assert isinstance(self.future.exception(0), DeadlineExceeded)
            assert self.future.token.reason == "deadline"

    @rule(broken=st.booleans())
    def drop(self, broken: bool) -> None:
        if self.taken:
            with pytest.raises(RuntimeError, match="already taken"):
                self.future._transition(DROP, reason="shutdown")
            return
        self.taken = True
        exc = RuntimeError("broken") if broken else None
        self.future._transition(DROP, reason="shutdown", exception=exc)
        if self.expected is TaskState.PENDING:
            self.expected = TaskState.FINISHED if broken else TaskState.CANCELLED

    @invariant()
    def consistent(self) -> None:
        f = self.future
        state = f.task_state
        assert state is self.expected
        assert f.running() == (state is TaskState.RUNNING)
        assert self.counts.interrupts == self.interrupts
        assert f.done() == (state not in (TaskState.PENDING, TaskState.RUNNING))
        assert f.cancelled() == (
            state not in (TaskState.PENDING, TaskState.RUNNING, TaskState.FINISHED)
            and not self.expired
        )
        assert f.token.cancelled == (f.cancelled() or self.expired)
        code_stopped = state in (TaskState.FINISHED, TaskState.CANCELLED, TaskState.STOPPED)
        assert f.wait_stopped(0) == code_stopped
        assert self.callbacks == (1 if f.done() else 0)
        # The executor's statistics() arithmetic, for this one task.
        c, t = self.counts, self.tally
        expired = c.expired_pending + c.expired_running
        derived = {
            "pending": 1 - t.started - c.cancelled_pending - c.expired_pending - c.broken,
            "running": t.started - t.completed - t.failed - c.cancelled_running - c.expired_running,
            "finished": t.completed + t.failed + c.broken,
            "cancelled": c.cancelled_pending,
            # The ladder's states are sub-states of stopping for the counts.
            "stopping": c.cancelled_running + c.expired_running - t.stopped,
            "stopped": t.stopped,
            "timed_out": expired,
        }
        stopping = (TaskState.STOPPING, TaskState.INTERRUPTING, TaskState.ABANDONED)
        expected = {s: int(s == state.value) for s in derived}
        if state in stopping:
            expected["stopping"] = 1
        if self.expired:
            expected["timed_out"] = 1
            expected["cancelled"] = 0  # never ran, but failed by its deadline
        assert derived == expected
        if state is TaskState.CANCELLED and self.taken and not self.expired:
            assert f._state == "CANCELLED_AND_NOTIFIED"


FutureStateMachine.TestCase.settings = settings(
    max_examples=int(200 * STRESS_SCALE), stateful_step_count=12, deadline=None
)
TestFutureStateMachine = pytest.mark.stress(FutureStateMachine.TestCase)


@pytest.mark.stress
def test_deadline_races_completion() -> None:
    """The timer's expiry and the task's end, racing: exactly one of them wins."""
    sys.setswitchinterval(1e-6)
    counter = CallbackCounter()
    rng = random.Random(4321)
    ex = CancellableThreadPoolExecutor(max_workers=4)
    view = ex.with_options(timeout=3600.0)  # armed, but we fire the expiry ourselves
    deadline = time.monotonic() + TIME_CAP
    outcomes = {"result": 0, "deadline": 0}
    done_trials = 0
    for i in range(trials(20000)):
        future = view.submit(pow, i, 2)
        future.add_done_callback(counter)
        for _ in range(rng.randrange(40)):  # a random head start for the worker
            pass
        future._expire()  # what the timer thread does when the deadline passes
        assert future.wait_stopped(WAIT)
        exc = future.exception(0)
        if exc is None:
            outcomes["result"] += 1
            assert future.result(0) == i * i and not future.token.cancelled
            assert future.task_state is TaskState.FINISHED
        else:
            outcomes["deadline"] += 1
            assert isinstance(exc, DeadlineExceeded) and future.token.reason == "deadline"
            assert future.task_state in (TaskState.STOPPED, TaskState.CANCELLED)
            assert future._result is None
        assert not future.cancelled()
        done_trials += 1
        if time.monotonic() > deadline:
            break
    assert ex.shutdown(timeout=WAIT) == ()
    assert set(counter.calls.values()) == {1} and len(counter.calls) == done_trials
    stats = ex.statistics()
    assert stats.completed + stats.timed_out == stats.submitted == done_trials
    assert stats.cancelled == stats.pending == stats.running == stats.stopping == 0
    assert outcomes["result"] > 0 and outcomes["deadline"] > 0, outcomes


@pytest.mark.stress
def test_deadline_checks_race_workers_starting_tasks() -> None:
    """Workers start tasks with deadlines while the executor's check runs: none is missed.

    Each trial mixes tasks that end at once (their deadlines are never due, so checks
    come and go around them) with tasks that wait on their token until their deadline
    fails them. A deadline the check missed would leave its task waiting for ``WAIT``.
    """
    sys.setswitchinterval(1e-6)
    rng = random.Random(2468)
    ex = CancellableThreadPoolExecutor(max_workers=4)
    deadline = time.monotonic() + TIME_CAP
    expired = 0

    def wait_for_deadline() -> None:
        from cancelpool import current_token

        current_token().wait(WAIT)

    try:
        for _ in range(trials(150)):
            futures = []
            for _ in range(8):
                timeout = rng.choice((0.0, 0.001, 0.003, 0.01))
                view = ex.with_options(timeout=timeout)
                if rng.random() < 0.5:
                    futures.append((view.submit(wait_for_deadline), True))
                else:
                    futures.append((view.submit(pow, 3, 4), False))
            for future, waits in futures:
                exc = future.exception(WAIT)
                if waits:
                    assert isinstance(exc, DeadlineExceeded), (future, exc)
                    expired += 1
                else:  # ended at once, or (timeout=0) failed by its deadline first
                    assert exc is None or isinstance(exc, DeadlineExceeded), exc
                assert future.wait_stopped(WAIT)
            if time.monotonic() > deadline:
                break
    finally:
        assert ex.shutdown(cancel_futures=True, timeout=WAIT) == ()
    assert expired > 0


@pytest.mark.stress
def test_group_cancel_races_submitters_and_completions() -> None:
    """A group cancelled while tasks are submitted to it and finish: none escapes it."""
    sys.setswitchinterval(1e-6)
    rng = random.Random(77)
    deadline = time.monotonic() + TIME_CAP
    cancelled_some = finished_some = 0
    for _ in range(trials(200)):
        ex = CancellableThreadPoolExecutor(max_workers=3)
        group = CancelSource()
        view = ex.with_options(token=group.token)
        submitted: list[CancellableFuture[Any]] = []
        after: list[CancellableFuture[Any]] = []
        go = threading.Barrier(2, timeout=WAIT)
        cancel_returned = threading.Event()

        def submitter(
            view: Any = view,
            go: threading.Barrier = go,
            submitted: list[CancellableFuture[Any]] = submitted,
            after: list[CancellableFuture[Any]] = after,
            cancel_returned: threading.Event = cancel_returned,
        ) -> None:
            go.wait()
            for k in range(150):
                late = cancel_returned.is_set()
                f = view.submit(pow, k, 2)
                submitted.append(f)
                if late:
                    after.append(f)

        thread = threading.Thread(target=submitter)
        thread.start()
        go.wait()
        target = rng.randrange(150)
        while len(submitted) < target and thread.is_alive():
            time.sleep(0)
        group.cancel("group")
        cancel_returned.set()
        thread.join(WAIT)
        for f in submitted:
            assert f.wait_stopped(WAIT), f
            if f.cancelled():
                assert f.token.reason == "group"
                cancelled_some += 1
            else:
                assert f.result(0) is not None and not f.token.cancelled
                finished_some += 1
        # Submitted once the cancel had returned: cancelled before any worker took it.
        assert all(f.task_state is TaskState.CANCELLED for f in after)
        # Every link dropped, none leaked (each right after its task's outcome, out of
        # the future's lock: wait_stopped() may return first).
        wait_for(functools.partial(no_callbacks, group.token), "every link to be dropped")
        assert ex.shutdown(timeout=WAIT) == ()
        stats = ex.statistics()
        assert stats.completed + stats.cancelled == stats.submitted == len(submitted)
        if time.monotonic() > deadline:
            break
    assert cancelled_some > 0 and finished_some > 0


#: A caller's part of a trial: (trial, key, head start, seconds until due).
TimerStep = tuple[int, int, int, float]


class TimerCampaign:
    """Actions scheduled from several threads at the moment the timer thread goes idle.

    The scheduler's idle timeout is 0: after a trial's last action the thread finds
    nothing pending and lets go at once. That action also releases the next trial's
    callers (one to three threads, waiting on an event, each after a random head start,
    some due a moment later), so their ``call_at`` calls race the thread's decision to
    exit, or to sleep. Two groups of callers take turns, so that one group already
    waits while the other's trial runs.
    """

    CALLERS = 3

    def __init__(self, seed: int, trials: int) -> None:
        self.rng = random.Random(seed)
        self.scheduler = Scheduler(idle_timeout=0.0)
        self.lock = threading.Lock()
        self.runs: dict[int, int] = {}
        self.runner_of: dict[int, threading.Thread] = {}
        self.active = 0
        self.overlaps = 0
        self.trials = trials
        self.fire = [threading.Event() for _ in range(trials + 1)]
        self.done = [threading.Event() for _ in range(trials)]
        self.remaining = [0] * trials
        # How long the last action of each trial keeps the timer thread busy after it
        # released the next trial's callers: spreads their calls across the thread's
        # return to its loop, its look, and its decision to exit.
        self.linger = [self.rng.randrange(3000) for _ in range(trials)]
        self.keys: list[list[int]] = [[] for _ in range(trials)]
        # How often the thread's last look (step B) found an action and kept it running.
        self.let_go = {True: 0, False: 0}
        let_go = self.scheduler._let_go

        def counted_let_go() -> bool:
            stopped = let_go()
            self.let_go[stopped] += 1
            return stopped

        self.scheduler._let_go = counted_let_go  # type: ignore[method-assign]
        self.inboxes: list[queue.SimpleQueue[Optional[TimerStep]]] = [
            queue.SimpleQueue() for _ in range(2 * self.CALLERS)
        ]
        self.callers = [
            threading.Thread(target=self.caller, args=(inbox,), name=f"caller-{n}")
            for n, inbox in enumerate(self.inboxes)
        ]

    def action(self, trial: int, key: int) -> Callable[[], None]:
        def run() -> None:
            with self.lock:
                self.active += 1
                self.overlaps += self.active > 1  # two threads running actions at once
                self.runs[key] = self.runs.get(key, 0) + 1
                self.runner_of[key] = threading.current_thread()
                self.active -= 1
                self.remaining[trial] -= 1
                last = self.remaining[trial] == 0
            if last:
                self.fire[trial + 1].set()  # the next trial's callers: go, now
                for _ in range(self.linger[trial]):
                    pass
                self.done[trial].set()

        return run

    def caller(self, inbox: queue.SimpleQueue[Optional[TimerStep]]) -> None:
        while True:
            step = inbox.get()
            if step is None:
                return
            trial, key, spin, due_in = step
            assert self.fire[trial].wait(WAIT)
            for _ in range(spin):  # a random head start
                pass
            self.scheduler.call_later(due_in, self.action(trial, key))

    def hand_out(self, trial: int, first_key: int) -> int:
        """Give trial *trial*'s steps to callers of its group; they wait to be fired."""
        rng = self.rng
        group = self.inboxes[(trial % 2) * self.CALLERS : (trial % 2 + 1) * self.CALLERS]
        chosen = rng.sample(group, rng.randint(1, self.CALLERS))
        self.remaining[trial] = len(chosen)
        for n, inbox in enumerate(chosen):
            due_in = rng.choice((0.0, 0.0, 0.0, 0.0001, 0.001))
            self.keys[trial].append(first_key + n)
            inbox.put((trial, first_key + n, rng.randrange(300), due_in))
        return first_key + len(chosen)

    def run(self, time_cap: float) -> int:
        """Run the trials (or as many as *time_cap* allows); returns how many ran."""
        for thread in self.callers:
            thread.start()
        deadline = time.monotonic() + time_cap
        handed = ran = 0
        try:
            key = 0
            while handed < min(2, self.trials):
                key = self.hand_out(handed, key)
                handed += 1
            self.fire[0].set()
            while ran < handed:
                assert self.done[ran].wait(WAIT), f"an action of trial {ran} never ran"
                ran += 1
                if handed < self.trials and time.monotonic() < deadline:
                    key = self.hand_out(handed, key)
                    handed += 1
        finally:
            for inbox in self.inboxes:
                inbox.put(None)
            for thread in self.callers:
                thread.join(WAIT)
        return ran


@pytest.mark.stress
def test_timer_idle_exit_races_call_at() -> None:
    """No action scheduled while the timer thread decides to exit is lost or run twice.

    Each is seen by the thread that was about to exit (which then stays), or starts a
    new one; never both, never neither, and never two threads running actions at once.
    """
    sys.setswitchinterval(1e-6)
    campaign = TimerCampaign(1357, trials(3000))
    ran = campaign.run(TIME_CAP)
    keys = [k for trial in campaign.keys[:ran] for k in trial]
    assert campaign.runs == dict.fromkeys(keys, 1)  # each exactly once
    assert campaign.overlaps == 0
    wait_for(lambda: campaign.scheduler._thread is None, "the idle timer thread to exit")
    for runner in set(campaign.runner_of.values()):
        runner.join(WAIT)
        assert not runner.is_alive()
    # Both outcomes, or the race was not exercised: a trial whose first action was run
    # by the thread that ran the trial before (caught before it let go), and one whose
    # first action had to start a new thread.
    kept = restarted = 0
    for before, trial in zip(campaign.keys[: ran - 1], campaign.keys[1:ran]):
        same = campaign.runner_of[trial[0]] is campaign.runner_of[before[-1]]
        kept += same
        restarted += not same
    assert kept > 0 and restarted > 0, (kept, restarted)
    print(
        f"timer campaign: {ran} trials, {len(keys)} actions, {campaign.scheduler.starts}"
        f" threads started, kept {kept}, restarted {restarted}; the exiting thread's last"
        f" look found an action {campaign.let_go[False]} times"
    )

"""Hostile numbers and callbacks never disable cancellation (issue 11, items 1, 3 and 4).

Every public parameter that takes seconds (or a count) is driven with values a careless
or hostile caller could pass: NaN, infinities, ints too large for a float, bools, -0.0,
strings, fractions, a numpy-like ``numbers.Real``. Each call either refuses the value at
once with a ``TypeError``/``ValueError`` naming the parameter, before it changes any
state, or behaves correctly (infinity and anything beyond ``threading.TIMEOUT_MAX``
mean "no limit"); and afterwards the executor still runs tasks and the timer thread
still fires deadlines. No ``OverflowError`` may reach the caller.
"""

from __future__ import annotations

import functools
import logging
import math
import numbers
import queue
import threading
from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cancelpool
from cancelpool import (
    CancellableThreadPoolExecutor,
    CancelSource,
    DeadlineExceeded,
    TaskCancelled,
)
from cancelpool._compat import FuturesTimeoutError
from cancelpool._timer import get_scheduler, run_action

from .conftest import STRESS_SCALE, WAIT, run_python, wait_for


class NumpyLikeReal:
    """A number that is not an int or a float but registers as ``numbers.Real``."""

    def __init__(self, value: float) -> None:
        self.value = value

    def __float__(self) -> float:
        return float(self.value)

    def __gt__(self, other: object) -> bool:
        return self.value > other  # type: ignore[operator]

    def __repr__(self) -> str:
        return f"NumpyLikeReal({self.value!r})"


numbers.Real.register(NumpyLikeReal)


def _timer_fires() -> bool:
    """Whether the process-wide timer thread still runs what is scheduled on it."""
    source = CancelSource()
    source.cancel_after(0.001)
    return source.token.wait(WAIT)


def _executor_works(ex: CancellableThreadPoolExecutor) -> bool:
    return ex.submit(abs, -3).result(WAIT) == 3


# --- item 1: delays the clock cannot reach; a callback that raises SystemExit ------------


@pytest.mark.parametrize(
    "schedule",
    [
        pytest.param(lambda ex: CancelSource().cancel_after(math.inf), id="cancel_after-inf"),
        pytest.param(lambda ex: CancelSource().cancel_after(1e12), id="cancel_after-1e12"),
        pytest.param(lambda ex: CancelSource().cancel_after(10**400), id="cancel_after-huge-int"),
        pytest.param(
            lambda ex: (
                ex.with_options(timeout=math.inf, timeout_from="submit").submit(abs, 1).result(WAIT)
            ),
            id="deadline-from-submit-inf",
        ),
        pytest.param(
            lambda ex: (
                ex.with_options(timeout=1e11, timeout_from="submit").submit(abs, 1).result(WAIT)
            ),
            id="deadline-from-submit-1e11",
        ),
    ],
)
def test_unreachable_delays_leave_the_timer_working(
    schedule: Callable[[CancellableThreadPoolExecutor], object],
) -> None:
    with CancellableThreadPoolExecutor(max_workers=1) as ex:
        schedule(ex)
        assert _timer_fires()
        assert _executor_works(ex)


@pytest.mark.parametrize("grace", [math.inf, 1e12, 10**400])
def test_unreachable_grace_means_never_escalate(grace: float) -> None:
    release = threading.Event()
    started = threading.Event()

    def stubborn() -> str:
        started.set()
        assert release.wait(WAIT)
        return "finished"

    with CancellableThreadPoolExecutor(max_workers=1, grace=grace) as ex:
        future = ex.submit(stubborn)
        assert started.wait(WAIT)
        assert future.cancel(force=True, grace=grace)
        assert _timer_fires()  # the escalation scheduled at infinity broke nothing
        assert future.task_state is cancelpool.TaskState.STOPPING
        assert future._interrupts_sent == 0
        release.set()
        assert future.wait_stopped(WAIT)


def test_base_exception_from_an_action_is_logged_and_the_thread_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A SystemExit raised by an action ends neither the action loop nor its thread."""
    ran_in: list[threading.Thread] = []
    done = threading.Event()

    def exits() -> None:
        ran_in.append(threading.current_thread())
        raise SystemExit("from a callback")

    def after() -> None:
        ran_in.append(threading.current_thread())
        done.set()

    scheduler = get_scheduler()
    when = scheduler.clock() + 0.01
    with caplog.at_level(logging.ERROR, logger="cancelpool"):
        scheduler.call_at(when, exits)
        scheduler.call_at(when, after)  # same due time: runs right after, in order
        assert done.wait(WAIT)
    assert ran_in[0] is ran_in[1], "the timer thread died and another ran the next action"
    assert any(
        "exits" in record.getMessage() and record.exc_info and record.exc_info[0] is SystemExit
        for record in caplog.records
    )


def test_system_exit_from_a_done_callback_of_an_expired_task(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The issue's reproducer: a done-callback raising SystemExit on a deadline failure."""
    release = threading.Event()
    called = threading.Event()

    def callback(_: object) -> None:
        called.set()
        raise SystemExit("done-callback")

    with (
        CancellableThreadPoolExecutor(max_workers=2) as ex,
        caplog.at_level(logging.ERROR, logger="cancelpool"),
    ):
        future = ex.with_options(timeout=0.01, timeout_from="submit").submit(release.wait, WAIT)
        future.add_done_callback(callback)
        assert called.wait(WAIT)
        with pytest.raises(DeadlineExceeded):
            future.result(WAIT)
        release.set()
        # The timer thread still runs deadlines: a second task's expires.
        second = ex.with_options(timeout=0.01, timeout_from="submit").submit(cancelpool.sleep, WAIT)
        with pytest.raises(DeadlineExceeded):
            second.result(WAIT)
    assert any(record.exc_info and record.exc_info[0] is SystemExit for record in caplog.records)


def test_run_action_reports_keyboard_interrupt(caplog: pytest.LogCaptureFixture) -> None:
    scheduler = cancelpool._timer.ManualScheduler()

    def interrupts() -> None:
        raise KeyboardInterrupt

    handle = scheduler.call_later(0, interrupts)
    with caplog.at_level(logging.ERROR, logger="cancelpool"):
        run_action(handle)  # does not raise
    assert "interrupts" in caplog.records[-1].getMessage()


# --- item 3: exit_timeout=inf means "wait as long as it takes" ------------------------------


def test_exit_timeout_inf_runs_queued_work_at_exit() -> None:
    """Three tasks still queued at exit all run; the exit hook raises nothing."""
    result = run_python(
        """
        import math, threading
        import cancelpool

        ex = cancelpool.CancellableThreadPoolExecutor(1, exit_timeout=math.inf)
        at_exit = threading.Event()
        ex.submit(at_exit.wait, 30)  # holds the worker until the exit hooks run
        for i in range(3):
            ex.submit(print, "ran", i, flush=True)

        def report():  # a threading exit hook registered after cancelpool's runs first
            print("queued at exit:", ex._work_queue.qsize(), flush=True)
            at_exit.set()

        threading._register_atexit(report)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "queued at exit: 3" in result.stdout
    assert [line for line in result.stdout.splitlines() if line.startswith("ran")] == [
        "ran 0",
        "ran 1",
        "ran 2",
    ]
    assert "Exception ignored" not in result.stderr
    assert "OverflowError" not in result.stderr


# --- item 4: infinite and huge numbers are checked before anything changes ----------------


@pytest.mark.parametrize("timeout", [math.inf, 1e300, 10**400])
def test_no_limit_values_wait_without_limit(timeout: float) -> None:
    gate = threading.Event()
    with CancellableThreadPoolExecutor(max_workers=2) as ex:
        future = ex.submit(gate.wait, WAIT)

        # Open the gate once this thread waits in result(), so that the wait is real.
        def open_gate() -> None:
            waiters = future._condition._waiters  # type: ignore[attr-defined]
            wait_for(lambda: bool(waiters), "result() to wait")
            gate.set()

        opener = threading.Thread(target=open_gate)
        opener.start()
        assert future.result(timeout) is True
        opener.join(WAIT)
        assert future.exception(timeout) is None
        assert future.wait_stopped(timeout)
        assert list(ex.map(abs, [-1, -2], timeout=timeout)) == [1, 2]
        assert _cancelled_token().wait(timeout) is True
        assert ex.shutdown(timeout=timeout) == ()


@pytest.mark.parametrize(
    ("kwargs", "exc", "message"),
    [
        ({"timeout": "1"}, TypeError, r"timeout must be a number of seconds or None, got '1'"),
        ({"timeout": -1}, ValueError, r"timeout must be >= 0 or None, got -1"),
        ({"timeout": math.nan}, ValueError, r"timeout must be >= 0 or None, got nan"),
        ({"timeout": 1, "wait": False}, ValueError, r"timeout=1 needs wait=True"),
        ({"cancel_running": "yes"}, TypeError, r"cancel_running must be True or False"),
        ({"force": 1}, TypeError, r"force must be True or False, got 1"),
    ],
)
def test_refused_shutdown_changes_nothing(
    kwargs: dict[str, Any], exc: type[Exception], message: str
) -> None:
    with CancellableThreadPoolExecutor(max_workers=1) as ex:
        with pytest.raises(exc, match=message):
            ex.shutdown(**kwargs)
        assert not ex._shutdown
        assert _executor_works(ex)


def test_timeout_zero_from_start_cancels_the_token_before_the_code_runs() -> None:
    seen: list[bool] = []

    def task() -> str:
        seen.append(cancelpool.current_token().cancelled)
        return "result"

    with CancellableThreadPoolExecutor(max_workers=1) as ex:
        future = ex.with_options(timeout=0).submit(task)
        with pytest.raises(DeadlineExceeded):
            future.result(WAIT)
        assert future.wait_stopped(WAIT)
    assert seen == [True]


def test_timeout_zero_from_submit_never_runs() -> None:
    ran: list[int] = []
    with CancellableThreadPoolExecutor(max_workers=1) as ex:
        future = ex.with_options(timeout=0, timeout_from="submit").submit(ran.append, 1)
        assert future.done()  # failed in submit(), before any worker could take it
        with pytest.raises(DeadlineExceeded):
            future.result(0)
    assert ran == []


def test_sleep_inf_sleeps_until_cancelled() -> None:
    source = CancelSource()
    started = threading.Event()
    outcome: list[BaseException] = []

    def sleeper() -> None:
        started.set()
        try:
            cancelpool.sleep(math.inf, token=source.token)
        except TaskCancelled as exc:
            outcome.append(exc)

    thread = threading.Thread(target=sleeper)
    thread.start()
    assert started.wait(WAIT)
    source.cancel()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert len(outcome) == 1


def test_max_workers_takes_any_integral() -> None:
    class IntLike:  # numpy.int64 is an Integral that is not an int
        def __index__(self) -> int:
            return 2

    numbers.Integral.register(IntLike)
    with CancellableThreadPoolExecutor(max_workers=IntLike()) as ex:  # type: ignore[arg-type]
        assert ex._max_workers == 2
        assert _executor_works(ex)


# --- the property: every public numeric parameter, hostile values ---------------------------

HOSTILE = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.sampled_from(
        [
            None,
            True,
            False,
            -0.0,
            0,
            1e-300,
            5e-324,
            threading.TIMEOUT_MAX,
            10**400,
            -(10**400),
            "1",
            b"1",
            [1],
            object(),
            Fraction(1, 3),
            Fraction(10**400, 3),
            Decimal("0.5"),
            Decimal("NaN"),
            complex(1, 0),
            NumpyLikeReal(0.001),
            NumpyLikeReal(math.inf),
            NumpyLikeReal(-1.0),
            NumpyLikeReal(math.nan),
        ]
    ),
)


def _cancelled_token() -> cancelpool.CancelToken:
    source = CancelSource()
    source.cancel()
    return source.token


def _ready_condition() -> threading.Condition:
    return threading.Condition()


def _queue_with_item() -> queue.Queue[int]:
    q: queue.Queue[int] = queue.Queue()
    q.put(1)
    return q


def _set_event() -> threading.Event:
    event = threading.Event()
    event.set()
    return event


def _done(ex: CancellableThreadPoolExecutor) -> cancelpool.CancellableFuture[int]:
    future = ex.submit(abs, -1)
    assert future.wait_stopped(WAIT)
    return future


def _with_running(ex: CancellableThreadPoolExecutor, value: object) -> None:
    """cancel(force=True, grace=value) on a running task that waits on its token."""
    started = threading.Event()

    def task() -> None:
        started.set()
        cancelpool.current_token().wait(WAIT)

    future = ex.submit(task)
    assert started.wait(WAIT)
    try:
        future.cancel(force=True, grace=value)  # type: ignore[arg-type]
    finally:
        future.cancel()  # a refused grace must not leave the task running
        assert future.wait_stopped(WAIT)


def _constructed(ex: CancellableThreadPoolExecutor, **kwargs: object) -> None:
    with CancellableThreadPoolExecutor(**kwargs) as other:  # type: ignore[arg-type]
        try:
            other.submit(abs, -1).result(WAIT)
        except DeadlineExceeded:
            assert "task_timeout" in kwargs  # a deadline of 1e-300 s may pass first


def _view_submit(ex: CancellableThreadPoolExecutor, **kwargs: object) -> None:
    view = ex.with_options(**kwargs)  # type: ignore[arg-type]
    try:
        view.submit(abs, -1).result(WAIT)
    except DeadlineExceeded:
        assert "timeout" in kwargs


# Each entry: the parameter's name, and a call that passes the value to it and returns
# promptly whatever the value (a token already cancelled, an item already there, ...).
CALLS: dict[str, Callable[[CancellableThreadPoolExecutor, Any], object]] = {
    "max_workers": lambda ex, v: _constructed(ex, max_workers=v),
    "grace": lambda ex, v: _constructed(ex, grace=v),
    "abandon_after": lambda ex, v: _constructed(ex, abandon_after=v),
    "exit_timeout": lambda ex, v: _constructed(ex, exit_timeout=v),
    "task_timeout": lambda ex, v: _constructed(ex, task_timeout=v),
    "timeout (with_options)": lambda ex, v: _view_submit(ex, timeout=v),
    "grace (with_options)": lambda ex, v: _view_submit(ex, grace=v),
    "grace (cancel)": _with_running,
    "timeout (map)": lambda ex, v: list(ex.map(abs, [-1], timeout=v)),
    "buffersize (map)": lambda ex, v: list(ex.map(abs, [-1, -2], buffersize=v)),
    # (result() is the stdlib's: it checks nothing, and a done future never waits)
    "timeout (result)": lambda ex, v: _done(ex).result(v),
    "timeout (wait_stopped)": lambda ex, v: ex.submit(abs, -1).wait_stopped(v),
    "timeout (shutdown)": lambda ex, v: CancellableThreadPoolExecutor(1).shutdown(timeout=v),
    "timeout (token.wait)": lambda ex, v: _cancelled_token().wait(v),
    "seconds (token.sleep)": lambda ex, v: _cancelled_token().sleep(v),
    "seconds (cancel_after)": lambda ex, v: CancelSource().cancel_after(v),
    "seconds (sleep)": lambda ex, v: cancelpool.sleep(v, token=_cancelled_token()),
    "timeout (wait_event)": lambda ex, v: cancelpool.wait_event(_set_event(), v),
    "timeout (wait_for)": lambda ex, v: cancelpool.wait_for(_ready_condition(), lambda: 1, v),
    "timeout (queue_get)": lambda ex, v: cancelpool.queue_get(_queue_with_item(), timeout=v),
    "timeout (future_result)": lambda ex, v: cancelpool.future_result(ex.submit(abs, -1), v),
}

# What the error must name: the parameter itself (the part before any parenthesis).
ACCEPTED_ERRORS = (TypeError, ValueError)


@pytest.fixture
def shared_executor() -> Iterator[CancellableThreadPoolExecutor]:
    ex = CancellableThreadPoolExecutor(max_workers=2)
    yield ex
    ex.shutdown(cancel_futures=True, timeout=WAIT)


@pytest.mark.parametrize("parameter", sorted(CALLS))
def test_hostile_values(parameter: str, shared_executor: CancellableThreadPoolExecutor) -> None:
    call = CALLS[parameter]
    name = parameter.split(" ")[0]

    @settings(
        max_examples=max(1, int(40 * STRESS_SCALE)),  # CANCELPOOL_STRESS_SCALE: more
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(value=HOSTILE)
    def check(value: object) -> None:
        refusal = ""
        try:
            call(shared_executor, value)
        except ACCEPTED_ERRORS as exc:
            refusal = str(exc)
        except TaskCancelled:
            assert "sleep" in parameter, f"{parameter}={value!r}"  # a cancelled token's sleep
        except FuturesTimeoutError:  # a valid timeout too short for the task
            assert float(value) < 1, f"{parameter}={value!r}"  # type: ignore[arg-type]
        except OverflowError as exc:  # pragma: no cover - what the issue forbids
            pytest.fail(f"{parameter}={value!r} raised OverflowError: {exc}")
        if refusal:
            assert name in refusal, f"{parameter}={value!r}: {refusal!r} does not name it"

    check()
    assert _executor_works(shared_executor)
    assert _timer_fires()


# --- loops of cancels: a token callback's KeyboardInterrupt stops none of the others --------


def _raise_keyboard_interrupt() -> None:
    raise KeyboardInterrupt


def test_shutdown_cancels_every_running_task_before_reraising() -> None:
    started = threading.Barrier(3)

    def task() -> None:
        started.wait(WAIT)
        cancelpool.current_token().wait(WAIT)

    ex = CancellableThreadPoolExecutor(max_workers=2)
    futures = [ex.submit(task) for _ in range(2)]
    started.wait(WAIT)
    for future in futures:
        future.token.register(_raise_keyboard_interrupt)
    queued = ex.submit(abs, -1)
    with pytest.raises(KeyboardInterrupt):
        ex.shutdown(cancel_futures=True, cancel_running=True, timeout=WAIT)
    assert queued.cancelled()
    assert all(f.cancelled() and f.wait_stopped(WAIT) for f in futures)
    assert ex._shutdown


@pytest.mark.parametrize("how", ["close", "raise"])
def test_map_cancels_every_future_before_reraising(how: str) -> None:
    gate = threading.Event()
    started = threading.Event()

    def task(i: int) -> int:
        if i == 0:
            started.set()
            cancelpool.current_token().wait(WAIT)
            raise ValueError("first")  # ends the iteration ("raise")
        assert gate.wait(WAIT)
        return i

    with CancellableThreadPoolExecutor(max_workers=1) as ex:
        results = ex.map(task, range(4))
        assert started.wait(WAIT)
        first, *rest = futures = list(results._futures)  # type: ignore[attr-defined]
        for future in rest:
            future.token.register(_raise_keyboard_interrupt)
        if how == "close":
            stop = results.close  # type: ignore[attr-defined]
        else:
            first.cancel()  # the running task stops: the map ends at its result
            stop = functools.partial(next, results)
        with pytest.raises(KeyboardInterrupt):
            stop()
        gate.set()
        assert all(f.cancelled() for f in futures), futures

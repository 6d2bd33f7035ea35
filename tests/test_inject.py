"""The forced interrupt's decision (``cancelpool._inject``), and what it relies on.

Most tests here make the decision in the calling thread, with no timing at all: a harness
function, ``run_task``, stands in for the worker frame that calls a task
(``_inject._STOP_CODE``); the "task" puts itself in the position under test and asks
``unsafe_reason()`` about its own stack, as the armed thread's callback does at a
candidate point:

* at a function entry (``Judge.entry``, a plain method called from the position): the
  entered frame is judged at no offset, its callers at the instruction that called;
* at a loop's back-edge (``Judge.back_edges``): the frame itself, at the back-edge's
  destination (found with ``dis``).

Then what the design relies on, per interpreter: which route arms a thread, that
``sys.monitoring`` callbacks can raise into the frame's handlers, and two end-to-end runs
through the executor.
"""

from __future__ import annotations

import dis
import functools
import platform
import sys
import threading
import traceback
import types
from collections.abc import Generator, Iterator
from typing import Any, Callable, Optional, TypeVar, Union

import pytest

import cancelpool
from cancelpool import (
    CancellableFuture,
    CancellableThreadPoolExecutor,
    TaskInterrupted,
    TaskState,
    _inject,
)
from cancelpool._current import _slot
from cancelpool._timer import ManualScheduler

from .conftest import WAIT

T = TypeVar("T")
PYPY = platform.python_implementation() == "PyPy"
needs_force = pytest.mark.skipif(not cancelpool.FORCE_AVAILABLE, reason="needs forced interrupts")
# unsafe_offsets() reads CPython's bytecode; PyPy's differs (SETUP_EXCEPT, other handler
# layouts) and PyPy never asks (it has no forced interrupt).
cpython_bytecode = pytest.mark.skipif(PYPY, reason="PyPy: no forced interrupt, other bytecode")


def run_task(task: Callable[[], T]) -> T:
    """Stands in for the worker's frame that calls the task's function."""
    return task()


class Judge:
    """Asks ``unsafe_reason()`` about the calling thread's stack, for one future."""

    def __init__(self, future: CancellableFuture[Any]) -> None:
        self.future = future

    def entry(self) -> Optional[str]:
        """A function entry: this frame, just entered, and its callers at their calls."""
        return _inject.unsafe_reason(sys._getframe(), None, self.future)

    def back_edges(self) -> list[Optional[str]]:
        """The caller's loop back-edges: the caller judged at each destination."""
        frame = sys._getframe(1)
        return [
            _inject.unsafe_reason(frame, destination, self.future)
            for destination in back_edge_destinations(frame.f_code)
        ]


def back_edge_destinations(code: types.CodeType) -> list[int]:
    """Where the loops of *code* jump back to (a jump whose target is before it)."""
    jumps = set(dis.hasjrel) | set(dis.hasjabs) | set(getattr(dis, "hasjump", ()))
    destinations = {
        i.argval
        for i in dis.get_instructions(code)
        if i.opcode in jumps and isinstance(i.argval, int) and i.argval <= i.offset
    }
    assert destinations, f"no loop in {code.co_name}"
    return sorted(destinations)


@pytest.fixture
def judge(monkeypatch: pytest.MonkeyPatch) -> Judge:
    """A judge for a future that is the calling thread's task, run by ``run_task``."""
    monkeypatch.setattr(_inject, "_STOP_CODE", run_task.__code__)
    future: CancellableFuture[Any] = CancellableFuture()
    monkeypatch.setattr(_slot, "future", future)
    return Judge(future)


# ------------------------------------------------------------------ the tasks judged


def plain(judge: Judge) -> Optional[str]:
    return judge.entry()


def call_entry(judge: Judge) -> Optional[str]:
    # Recompiled below under other names and other modules' globals; uses no globals.
    return judge.entry()


def plain_loop(judge: Judge) -> list[Optional[str]]:
    answers: list[Optional[str]] = []
    for _ in range(2):
        answers += judge.back_edges()
    return answers


def loop_around_try_finally(judge: Judge) -> list[Optional[str]]:
    answers: list[Optional[str]] = []
    n = cleanups = 0
    while True:
        try:
            answers += judge.back_edges()
            n += 1
            if n == 2:
                return answers
        finally:
            cleanups += 1


def loop_around_with(judge: Judge) -> list[Optional[str]]:
    answers: list[Optional[str]] = []
    lock = threading.Lock()
    n = 0
    while True:
        with lock:
            answers += judge.back_edges()
            n += 1
            if n == 2:
                return answers


def shielded(judge: Judge) -> Optional[str]:
    with cancelpool.shield():
        return judge.entry()


def in_except(judge: Judge) -> Optional[str]:
    try:
        raise ValueError("handled")
    except ValueError:
        return judge.entry()


def in_exceptional_finally(judge: Judge) -> list[Optional[str]]:
    answers: list[Optional[str]] = []
    try:
        try:
            raise ValueError("handled")
        finally:
            answers.append(judge.entry())
    except ValueError:
        return answers


def in_normal_finally(judge: Judge) -> list[Optional[str]]:
    answers: list[Optional[str]] = []
    try:
        answers.append(None)
    finally:
        answers.append(judge.entry())  # no exception: sys.exc_info() says nothing here
    return answers[1:]


def loop_in_finally(judge: Judge) -> list[Optional[str]]:
    answers: list[Optional[str]] = []
    try:
        answers.append(None)
    finally:
        for _ in range(2):
            answers += judge.back_edges()
    return answers[1:]


class ExitUnderAnotherName:
    """A context manager whose ``__exit__`` is a method named ``close``."""

    def __init__(self, judge: Judge) -> None:
        self.judge = judge
        self.answers: list[Optional[str]] = []

    def __enter__(self) -> ExitUnderAnotherName:
        return self

    def close(self, *exc_info: object) -> None:
        self.answers.append(self.judge.entry())

    __exit__ = close


def exit_under_another_name(judge: Judge) -> list[Optional[str]]:
    manager = ExitUnderAnotherName(judge)
    with manager:
        pass
    return manager.answers


class EnterUnderAnotherName:
    """A lock-like context manager: ``__enter__ = acquire``, as ``threading.Semaphore``."""

    def __init__(self, judge: Judge) -> None:
        self.judge = judge
        self.answers: list[Optional[str]] = []

    def acquire(self) -> EnterUnderAnotherName:
        self.answers.append(self.judge.entry())  # as if after taking a lock
        return self

    __enter__ = acquire

    def __exit__(self, *exc_info: object) -> None:
        return None


def enter_under_another_name(judge: Judge) -> list[Optional[str]]:
    manager = EnterUnderAnotherName(judge)
    with manager:
        pass
    return manager.answers


class AcquiredInPython:
    """A lock written in Python: its ``acquire`` runs Python code once the lock is taken."""

    def __init__(self, judge: Judge) -> None:
        self.judge = judge
        self.answers: list[Optional[str]] = []

    def acquire(self) -> None:
        self.answers.append(self.judge.entry())  # as if right after taking its lock

    def release(self) -> None:
        return None


def acquire_then_try(judge: Judge) -> list[Optional[str]]:
    lock = AcquiredInPython(judge)
    lock.acquire()
    try:
        # A body that can raise: 3.11+ finds the try by its exception-table range, and
        # ``try: pass`` has none (a documented gap of cancelpool._cleanup).
        plain(judge)
    finally:
        lock.release()
    return lock.answers


# ------------------------------------------------------------------ unsafe_reason()


def test_accepts_a_function_entry_in_plain_code(judge: Judge) -> None:
    assert run_task(functools.partial(plain, judge)) is None


@pytest.mark.parametrize("task", [plain_loop, loop_around_try_finally, loop_around_with])
def test_accepts_a_plain_back_edge(judge: Judge, task: Callable[[Judge], list[Any]]) -> None:
    # The head of a loop, even one around a try/finally or a with: else it could never
    # be interrupted.
    answers = run_task(functools.partial(task, judge))
    assert answers and all(answer is None for answer in answers), answers


def test_refuses_inside_a_shield(judge: Judge) -> None:
    assert run_task(functools.partial(shielded, judge)) == "inside cancelpool.shield()"
    assert judge.future._shield_depth == 0
    assert run_task(functools.partial(plain, judge)) is None  # and after it, accepts


@pytest.mark.parametrize("task", [in_except, in_exceptional_finally])
def test_refuses_while_an_exception_is_handled(judge: Judge, task: Callable[[Judge], Any]) -> None:
    answer = run_task(functools.partial(task, judge))
    if isinstance(answer, list):
        (answer,) = answer
    assert answer is not None and answer.startswith("handling an exception"), answer


@pytest.mark.parametrize("name", sorted(_inject.GUARDED_NAMES))
def test_refuses_inside_a_guarded_method(judge: Judge, name: str) -> None:
    guarded = types.FunctionType(call_entry.__code__.replace(co_name=name), {})
    answer = run_task(functools.partial(guarded, judge))
    assert answer is not None and answer.startswith(f"inside {name} ("), answer


@pytest.mark.parametrize(
    ("module", "refused"),
    [
        ("threading", True),
        ("threading.fake", True),
        ("queue.x", True),
        ("logging.handlers", True),
        ("concurrent.futures.thread", True),
        ("cancelpool._future", True),
        ("cancelpool._demo", False),
        ("app.threading", False),
        ("threadingx", False),
        ("__main__", False),
    ],
)
def test_refuses_inside_a_protected_module(judge: Judge, module: str, refused: bool) -> None:
    # A frame whose globals say it belongs to *module*, as that module's functions do.
    through = types.FunctionType(call_entry.__code__, {"__name__": module})
    answer = run_task(functools.partial(through, judge))
    assert answer == (f"inside {module}.call_entry" if refused else None)


@cpython_bytecode
@pytest.mark.parametrize(
    "task",
    [
        loop_in_finally,
        pytest.param(in_normal_finally),
        exit_under_another_name,  # its caller is at the exit CALL itself, on 3.11/3.12 too
        pytest.param(enter_under_another_name),
        pytest.param(acquire_then_try),
    ],
)
def test_refuses_at_an_unsafe_offset(judge: Judge, task: Callable[[Judge], list[Any]]) -> None:
    # No exception is being handled in any of these: only the bytecode says "cleanup".
    answers = run_task(functools.partial(task, judge))
    assert answers, "the position was not reached"
    for answer in answers:
        assert answer is not None and answer.startswith("running cleanup in "), answers


def test_without_the_task_caller_it_is_not_the_tasks_code(
    judge: Judge, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_inject, "_STOP_CODE", (lambda: None).__code__)  # not on the stack
    assert run_task(functools.partial(plain, judge)) == "not running the task's code"


def test_the_stop_code_is_the_workers_task_caller() -> None:
    from cancelpool._worker import TASK_CALLER_CODE

    assert _inject._stop_code() is TASK_CALLER_CODE


# ------------------------------------------------------------------ judge()


def test_judge_needs_the_thread_armed_for_its_running_task(
    judge: Judge, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = sys._getframe()
    future = judge.future
    assert _inject.judge(frame, None) is None  # this thread is not armed
    monkeypatch.setitem(_inject._armed, threading.get_ident(), future)
    monkeypatch.setattr(_slot, "future", None)
    assert _inject.judge(frame, None) is None  # armed, but not inside that task's code
    monkeypatch.setattr(_slot, "future", future)
    assert run_task(lambda: _inject.judge(sys._getframe(), None)) is future
    with cancelpool.shield():
        assert run_task(lambda: _inject.judge(sys._getframe(), None)) is None
    assert future._refusal == "inside cancelpool.shield()"


# ------------------------------------------------------------------ per interpreter


def test_mechanism_is_named_per_interpreter() -> None:
    assert cancelpool.FORCE_AVAILABLE is _inject.AVAILABLE
    if PYPY:
        assert not _inject.AVAILABLE
        assert _inject.MECHANISM.startswith("none: PyPy cannot arm another thread")
    elif sys.version_info >= (3, 12):
        assert _inject.AVAILABLE
        assert _inject.MECHANISM.startswith("sys.monitoring")
    else:
        assert _inject.AVAILABLE
        assert _inject.MECHANISM.startswith("per-thread trace function (_PyEval_SetTrace")
    assert (_inject._backend is not None) is _inject.AVAILABLE


@pytest.mark.parametrize(
    ("module", "protected"),
    [
        ("threading", True),
        ("queue", True),
        ("logging.handlers", True),
        ("concurrent.futures.thread", True),
        ("importlib._bootstrap", True),
        ("cancelpool", True),
        ("cancelpool._future", True),
        ("cancelpool._inject", True),
        ("cancelpool._demo", False),  # its functions are tasks like any user's
        ("cancelpool_extras", False),
        ("threadingx", False),
        ("myapp.queue", False),
        ("", False),
    ],
)
def test_is_protected(module: str, protected: bool) -> None:
    assert _inject.is_protected(module) is protected


@pytest.mark.skipif(
    PYPY or sys.version_info >= (3, 12), reason="the trace route is 3.9-3.11's (CPython)"
)
def test_trace_route_finds_the_trampoline_and_the_thread_state() -> None:
    from cancelpool import _trace

    assert _trace.prepare() is None, _trace.prepare()
    assert _trace._trampoline != 0
    assert _trace._func_offset >= 0
    assert _trace.thread_state() != 0
    assert _inject.thread_state() == _trace.thread_state()


# ------------------------------------------------------------------ sys.monitoring (3.12+)
# What cancelpool._monitor relies on, measured with a tool id of the test's own.


class Interrupt(BaseException):
    """Raised from a monitoring callback."""


def loop_in_try(n: int) -> str:
    try:
        i = 0
        while i < n:
            i += 1
    except Interrupt:
        return "handled"
    return "not raised"


def callee() -> str:
    return "ran"


def calls_in_try() -> str:
    try:
        return callee()
    except Interrupt:
        return "handled"


def inner() -> Generator[int, None, None]:
    yield 1
    yield 2


def delegates() -> Generator[int, None, None]:
    yield from inner()


def monitor(
    event_name: str, code: types.CodeType, callback: Callable[..., Any], run: Callable[[], T]
) -> Union[T, str]:
    """Run *run* with *callback* on *event_name* events local to *code*; "escaped" if
    ``Interrupt`` left it."""
    monitoring: Any = sys.monitoring  # type: ignore[attr-defined]
    tool = next((t for t in (2, 1, 0, 5) if monitoring.get_tool(t) is None), None)
    if tool is None:
        pytest.skip("no free sys.monitoring tool id")
    event = getattr(monitoring.events, event_name)
    monitoring.use_tool_id(tool, "cancelpool-tests")
    try:
        monitoring.register_callback(tool, event, callback)
        monitoring.set_local_events(tool, code, event)
        try:
            return run()
        except Interrupt:
            return "escaped"
    finally:
        monitoring.set_local_events(tool, code, 0)
        monitoring.register_callback(tool, event, None)
        monitoring.free_tool_id(tool)


needs_monitoring = pytest.mark.skipif(
    PYPY or sys.version_info < (3, 12), reason="sys.monitoring: CPython 3.12+"
)


@needs_monitoring
def test_raising_from_instruction_and_py_start_events_runs_the_handlers() -> None:
    # cancelpool raises at a back-edge's destination from an INSTRUCTION event, and at a
    # function entry from PY_START: the exception must meet the handlers of the frame it
    # lands in (INSTRUCTION), and of the caller (PY_START).
    heads = set(back_edge_destinations(loop_in_try.__code__))

    def on_instruction(code: types.CodeType, offset: int) -> None:
        if offset in heads:
            raise Interrupt

    def on_start(code: types.CodeType, offset: int) -> None:
        raise Interrupt

    assert monitor("INSTRUCTION", loop_in_try.__code__, on_instruction, lambda: loop_in_try(5)) == (
        "handled"
    )
    assert monitor("PY_START", callee.__code__, on_start, calls_in_try) == "handled"


# Raising from the JUMP event itself, measured here per CPython release: whether the
# frame's own handlers run. Not relied on (cancelpool raises from INSTRUCTION instead).
JUMP_RAISE_RUNS_HANDLERS = {
    (3, 12, 1): False,
    (3, 13, 0): False,
    (3, 14, 10): True,
    (3, 15, 2): True,
}


@needs_monitoring
def test_raising_from_a_jump_event_per_release() -> None:
    def on_jump(code: types.CodeType, source: int, destination: int) -> None:
        if destination < source:
            raise Interrupt

    outcome = monitor("JUMP", loop_in_try.__code__, on_jump, lambda: loop_in_try(5))
    assert outcome in ("handled", "escaped")
    release = sys.version_info[:3]
    runs = outcome == "handled"
    if release not in JUMP_RAISE_RUNS_HANDLERS:
        pytest.skip(f"not measured on {release} before: raising from JUMP {outcome} the handlers")
    assert runs is JUMP_RAISE_RUNS_HANDLERS[release], (
        f"CPython {release} changed in this patch release: raising from a JUMP callback "
        f"now {'runs' if runs else 'skips'} the frame's handlers; update "
        "JUMP_RAISE_RUNS_HANDLERS (cancelpool raises from INSTRUCTION, unaffected)"
    )


@needs_monitoring
def test_the_resend_loop_of_yield_from_is_not_a_jump_event() -> None:
    # JUMP_BACKWARD_NO_INTERRUPT (await, yield from) gives no JUMP event: so a frame
    # waiting on an __aenter__/__aexit__ awaitable is never judged at its SEND. If this
    # changes, _cleanup must mark those SENDs.
    jumps: list[tuple[int, int]] = []

    def on_jump(code: types.CodeType, source: int, destination: int) -> None:
        jumps.append((source, destination))

    assert monitor("JUMP", delegates.__code__, on_jump, lambda: list(delegates())) == [1, 2]
    assert jumps == []


# ------------------------------------------------------------------ through the executor


@pytest.fixture
def forced(manual_clock: ManualScheduler) -> Iterator[CancellableThreadPoolExecutor]:
    """One worker, forced cancels with no grace; abandonment only if the clock says so."""
    ex = CancellableThreadPoolExecutor(1, force=True, grace=0)
    yield ex
    ex.shutdown(wait=True, cancel_futures=True, timeout=WAIT)


@needs_force
def test_a_pure_loop_is_interrupted_in_its_own_frame(
    forced: CancellableThreadPoolExecutor,
) -> None:
    started = threading.Event()
    caught: list[BaseException] = []

    def spin() -> None:
        started.set()
        n = 0
        while True:
            n += 1

    def task() -> None:
        try:
            spin()
        except BaseException as exc:
            caught.append(exc)
            raise

    future = forced.submit(task)
    assert started.wait(WAIT)
    assert future.cancel()
    assert future.wait_stopped(WAIT)
    assert future.task_state is TaskState.STOPPED
    assert future._interrupts_sent == future._interrupts_landed == 1
    assert not _inject._armed
    (exc,) = caught
    assert isinstance(exc, TaskInterrupted)
    # The traceback ends in the loop's frame, then the one callback that raised there.
    *_, where, raiser = traceback.extract_tb(exc.__traceback__)
    assert where.name == "spin"
    assert raiser.filename.startswith(cancelpool.__path__[0])


def arm_open(future: CancellableFuture[Any]) -> bool:
    """Whether *future*'s thread is armed (read anew each time)."""
    return future._arm_open


@needs_force
def test_an_arm_never_fires_in_the_next_task(forced: CancellableThreadPoolExecutor) -> None:
    # The first task is armed while it waits in threading (protected: refused), and returns
    # without passing a candidate point: its COMPLETE closes the arm. The next task on the
    # same worker loops freely and keeps its result.
    started, gate = threading.Event(), threading.Event()
    threads: list[int] = []

    def waits() -> str:
        threads.append(threading.get_ident())
        started.set()
        gate.wait(WAIT)
        return "first"

    def counts(n: int) -> int:
        threads.append(threading.get_ident())
        total = 0
        for i in range(n):
            total += i
        return total

    first = forced.submit(waits)
    assert started.wait(WAIT)
    assert first.cancel()
    assert first._interrupts_sent == 1
    assert arm_open(first)  # armed now, in Event.wait
    gate.set()
    assert first.wait_stopped(WAIT)
    assert first.task_state is TaskState.STOPPED
    assert first._interrupts_landed == 0
    assert not arm_open(first) and not _inject._armed
    second = forced.submit(counts, 10_000)
    assert second.result(WAIT) == sum(range(10_000))
    assert second._interrupts_sent == 0
    assert threads[0] == threads[1]


def suspended_in_finally(log: list[str]) -> Generator[str, None, None]:
    try:
        yield "body"
    finally:
        yield "cleanup started"
        log.append("cleanup finished")


@needs_force
def test_resuming_a_generator_inside_its_finally_is_not_a_candidate_point(
    forced: CancellableThreadPoolExecutor,
) -> None:
    # The task is armed while a generator it holds is suspended in a finally body (on
    # the normal path: no exception is being handled), then resumes it. A resumption is
    # not a function entry: the generator's cleanup must finish.
    started, gate = threading.Event(), threading.Event()
    log: list[str] = []

    def task() -> str:
        steps = suspended_in_finally(log)
        assert next(steps) == "body"
        assert next(steps) == "cleanup started"
        started.set()
        gate.wait(WAIT)
        assert next(steps, None) is None  # resumed in the finally body: it finishes
        return "done"

    future = forced.submit(task)
    assert started.wait(WAIT)
    assert future.cancel()
    assert future._interrupts_sent == 1
    gate.set()
    assert future.wait_stopped(WAIT)
    assert log == ["cleanup finished"]
    assert future._interrupts_landed == 0  # no candidate point after the resumption

"""The quarantined injection module: its contract with the C API, and its refusals."""

from __future__ import annotations

import ctypes
import threading
from typing import Any

import pytest

import cancelpool
from cancelpool import (
    CancellableThreadPoolExecutor,
    ForceUnavailableWarning,
    TaskState,
    _escalate,
    _inject,
)
from cancelpool._timer import ManualScheduler
from cancelpool._worker import WorkerThread

from .conftest import WAIT

needs_injection = pytest.mark.skipif(not cancelpool.FORCE_AVAILABLE, reason="needs injection")


@needs_injection
def test_prototypes_declare_unsigned_long_and_int() -> None:
    send: Any = _inject._send_exc
    null: Any = _inject._send_null
    assert send.argtypes == (ctypes.c_ulong, ctypes.py_object)
    assert null.argtypes == (ctypes.c_ulong, ctypes.c_void_p)
    assert send.restype is ctypes.c_int


@needs_injection
def test_unknown_thread_is_reported_not_raised() -> None:
    # An id no thread has: unsafe_reason() sees no frame, and a raw send modifies nothing.
    assert _inject.unsafe_reason(1, WorkerThread.run_task.__code__) == "the thread has exited"
    assert _inject._send_exc is not None
    assert _inject._send_exc(1, cancelpool.TaskInterrupted) == 0


class FakeSend:
    def __init__(self, result: int) -> None:
        self.result = result
        self.calls: list[tuple[int, Any]] = []

    def __call__(self, tid: int, exc: Any) -> int:
        self.calls.append((tid, exc))
        return self.result


@needs_injection
@pytest.mark.parametrize(("result", "expected"), [(0, "the thread has exited"), (2, SystemError)])
def test_send_result_handling(monkeypatch: pytest.MonkeyPatch, result: int, expected: Any) -> None:
    send, null = FakeSend(result), FakeSend(1)
    monkeypatch.setattr(_inject, "_send_exc", send)
    monkeypatch.setattr(_inject, "_send_null", null)
    monkeypatch.setattr(_inject, "_why_not", lambda *a: None)
    if expected is SystemError:
        with pytest.raises(SystemError, match="modified 2 thread states; revoked"):
            _inject.interrupt(123, WorkerThread.run_task.__code__, lambda: False)
        assert null.calls == [(123, None)]  # revoked with NULL (c_void_p None)
    else:
        assert _inject.interrupt(123, WorkerThread.run_task.__code__, lambda: False) == expected
        assert null.calls == []


@needs_injection
def test_second_look_revokes(monkeypatch: pytest.MonkeyPatch) -> None:
    send, null = FakeSend(1), FakeSend(1)
    looks = iter([None, "inside threading.wait"])
    monkeypatch.setattr(_inject, "_send_exc", send)
    monkeypatch.setattr(_inject, "_send_null", null)
    monkeypatch.setattr(_inject, "_why_not", lambda *a: next(looks))
    why = _inject.interrupt(77, WorkerThread.run_task.__code__, lambda: False)
    assert why == "inside threading.wait"
    assert len(send.calls) == 1
    assert null.calls == [(77, None)]


def test_quick_looks_restores_the_interval() -> None:
    import sys

    before = sys.getswitchinterval()
    _inject.quick_looks.begin()
    _inject.quick_looks.begin()
    assert sys.getswitchinterval() == min(before, _inject.LOOK_INTERVAL)
    _inject.quick_looks.end()
    assert sys.getswitchinterval() == min(before, _inject.LOOK_INTERVAL)
    _inject.quick_looks.end()
    assert sys.getswitchinterval() == before


def test_without_injection_force_warns_once_and_abandons(
    monkeypatch: pytest.MonkeyPatch, manual_clock: ManualScheduler
) -> None:
    monkeypatch.setattr(_inject, "AVAILABLE", False)
    monkeypatch.setattr(_escalate, "_force_unavailable_warned", False)
    ex = CancellableThreadPoolExecutor(max_workers=1, force=True, grace=0.5, abandon_after=1.0)
    gate = threading.Event()
    started = threading.Event()

    def stubborn() -> None:
        started.set()
        gate.wait(WAIT)

    future = ex.submit(stubborn)
    assert started.wait(WAIT)
    future.cancel()
    with pytest.warns(ForceUnavailableWarning, match="cannot interrupt tasks"):
        manual_clock.advance(0.5)
    assert future._interrupts_sent == 0
    with pytest.warns(cancelpool.WorkerAbandonedWarning):
        manual_clock.advance(1.0)
    assert future.task_state is TaskState.ABANDONED
    gate.set()
    assert future.wait_stopped(WAIT)
    ex.shutdown()


def test_mechanism_is_named() -> None:
    assert isinstance(_inject.MECHANISM, str)
    assert cancelpool.FORCE_AVAILABLE is _inject.AVAILABLE


def test_cleanup_offsets_mark_the_exit_of_a_with_block() -> None:
    import dis

    cond = threading.Condition()

    def uses_with() -> int:
        with cond:
            cond.notify_all()
        return 1

    unsafe = _inject.cleanup_offsets(uses_with.__code__)
    instructions = list(dis.get_instructions(uses_with))
    notify = next(i for i in instructions if i.argval == "notify_all")
    exit_call = [
        i
        for i in instructions
        if i.opname in ("CALL", "CALL_FUNCTION") and i.offset in unsafe and i.offset > notify.offset
    ]
    assert len(exit_call) == 1  # the call of __exit__(None, None, None)
    assert notify.offset not in unsafe  # inside the block: safe, __exit__ will run
    assert any(i.opname == "WITH_EXCEPT_START" and i.offset in unsafe for i in instructions)


def test_cleanup_offsets_mark_each_exit_of_nested_with_blocks() -> None:
    # Every version's shape of the __exit__(None, None, None) call (3.15 loads the Nones
    # with LOAD_COMMON_CONSTANT); the compiler may copy an exit (3.10 does, per path).
    import dis

    outer, inner = threading.Lock(), threading.Lock()

    def nested() -> int:
        with outer, inner:
            value = len("body")
        return value

    unsafe = _inject.cleanup_offsets(nested.__code__)
    instructions = list(dis.get_instructions(nested))
    body = next(i for i in instructions if i.argval == "len")
    calls = [i for i in instructions if i.opname in ("CALL", "CALL_FUNCTION")]
    body_call = next(i for i in calls if i.offset > body.offset)
    exit_calls = [i for i in calls if i.offset > body_call.offset]  # __exit__ calls only
    assert len(exit_calls) >= 2, dis.Bytecode(nested).dis()
    assert all(i.offset in unsafe for i in exit_calls), dis.Bytecode(nested).dis()
    assert body.offset not in unsafe and body_call.offset not in unsafe


def test_cleanup_offsets_leave_plain_code_alone() -> None:
    def plain(x: int) -> int:
        y = x + 1
        return y * 2

    assert _inject.cleanup_offsets(plain.__code__) == frozenset()

"""Arming a thread for a forced interrupt on CPython 3.9-3.11: a trace function on it alone.

``cancelpool._inject`` says what arming is for and why it is safe; this module only makes
the armed thread call ``_inject.candidate()`` at its candidate points.

``sys.settrace()`` sets the trace function of the *calling* thread. CPython's C API has
the per-thread form, ``_PyEval_SetTrace(tstate, func, obj)``, private but frozen in these
releases and written to be called for another thread's state (it is how
``threading.settrace_all_threads`` works in 3.12). Its *func* must be a C function; a
``ctypes`` callback cannot raise (``ctypes`` prints and swallows its exceptions), so we
pass CPython's own trampoline, the C function ``sys.settrace()`` installs, which calls a
Python callable and lets it raise. Its address is private too: we read it, once, from the
state of a short-lived thread of ours right after it calls ``sys.settrace()``, next to the
trace object it points at (``c_tracefunc`` sits two pointers before ``c_traceobj`` in
``PyThreadState`` on 3.9-3.11). Each worker records its own thread state's address when
it starts (``PyThreadState_Get()``); a thread state lives as long as its thread, which
runs the task's code while an arm is made (the arm is made under the task's lock, which
the worker takes to end the task).

* ``start()``: set the thread's trace function to ``_global_trace`` (called on every
  function entry in that thread), and ``f_trace`` of the user frames on its stack.
* ``_global_trace``: a user function's entry is a candidate point; its frame gets a
  ``_FrameTrace``, called at each new line (3.9: each instruction). An event whose offset
  is not above the previous one in that frame is a loop's back-edge: a candidate point.
* Landing raises from the trace function; CPython then removes the thread's trace
  function itself. ``stop()`` removes it when the task ends, in the task's own thread.

A thread that already has a trace function (a debugger, coverage) is not armed: we do
not replace another tool's.
"""

from __future__ import annotations

import ctypes
import dis
import sys
import threading
from types import FrameType
from typing import Any, Callable, Optional

__all__ = (
    "MECHANISM",
    "forget_all",
    "prepare",
    "start",
    "stop",
    "thread_state",
    "unavailable",
    "window",
)

MECHANISM = "per-thread trace function (_PyEval_SetTrace, raised by the task's own thread)"
_POINTER = ctypes.sizeof(ctypes.c_void_p)

_set_trace: Optional[Callable[..., int]] = None
_clear_trace: Optional[Callable[..., int]] = None
_get_state: Optional[Callable[[], int]] = None
# Found by prepare(): the trampoline's address, and where c_tracefunc/c_traceobj sit.
_trampoline = 0
_func_offset = -1
_prepared: Optional[str] = "not prepared"
_get_ident = threading.get_ident
# Bound by prepare(): ``cancelpool._inject`` imports this module, so not at import time.
_inject: Any = None
_armed: dict[int, Any] = {}


def unavailable() -> Optional[str]:
    """None if the C API this route needs is there, else why not (at import)."""
    global _set_trace, _clear_trace, _get_state
    api = getattr(ctypes, "pythonapi", None)
    if api is None or not hasattr(api, "_PyEval_SetTrace"):
        return "none: this CPython has no _PyEval_SetTrace (see cancelpool._trace)"
    proto = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.py_object)
    proto_null = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
    _set_trace = proto(("_PyEval_SetTrace", api))
    _clear_trace = proto_null(("_PyEval_SetTrace", api))
    get_state = api.PyThreadState_Get
    get_state.restype = ctypes.c_void_p
    get_state.argtypes = ()
    _get_state = get_state
    return None


def thread_state() -> int:
    """The calling thread's ``PyThreadState*`` (each worker records its own)."""
    assert _get_state is not None
    return int(_get_state() or 0)


def prepare() -> Optional[str]:
    """Find the trampoline and the trace fields, once; None, or why they were not found."""
    global _prepared, _inject, _armed
    if _prepared == "not prepared":
        from . import _inject as inject

        _inject, _armed = inject, inject._armed
        box: list[Optional[str]] = ["the probe thread did not run"]
        probe = threading.Thread(target=_probe, args=(box,), name="cancelpool-trace-probe")
        probe.start()
        probe.join()
        _prepared = box[0]
    return _prepared


def _probe(box: list[Optional[str]]) -> None:
    """In a fresh thread: set a trace object, find it in our thread state, unset it."""
    global _trampoline, _func_offset

    def sentinel(frame: FrameType, event: str, arg: Any) -> None:
        return None

    sys.settrace(None)  # threading.settrace() may have given this thread a tracer
    state = thread_state()
    sys.settrace(sentinel)
    try:
        words = (ctypes.c_void_p * 64).from_address(state)
        hits = [n for n in range(2, 64) if words[n] == id(sentinel)]
        if len(hits) != 1:
            box[0] = "none: CPython's trace fields were not found in its thread state"
            return
        func, obj = hits[0] - 2, hits[0]
        trampoline = words[func]
    finally:
        sys.settrace(None)
    if not trampoline or words[func] or words[obj]:
        box[0] = "none: CPython's trace trampoline was not found in its thread state"
        return
    _trampoline, _func_offset = trampoline, func * _POINTER
    box[0] = None


def window(open_: bool) -> None:
    """Nothing process-wide to switch here: tracing is per thread."""


def start(tid: int, tstate: int, top: Optional[FrameType]) -> Optional[str]:
    """Trace thread *tid* (state *tstate*) and the user frames on its stack (top *top*)."""
    assert _set_trace is not None
    if not tstate:
        return "its worker did not record its thread state"
    current = ctypes.c_void_p.from_address(tstate + _func_offset).value
    if current:
        return (
            "its thread is traced by another tool (a debugger or coverage, sys.settrace); "
            "cancelpool does not replace another tool's trace function"
        )
    try:
        _set_trace(tstate, _trampoline, _global_trace)
    except Exception as exc:  # noqa: BLE001 - an audit hook refused sys.settrace
        return f"setting its trace function failed: {exc!r}"
    stop_code, wrapper = _inject.stop_codes()
    frame = top
    while frame is not None and frame.f_code is not stop_code and frame.f_code is not wrapper:
        if not _inject.is_protected(frame.f_globals.get("__name__", "")):
            # Where the frame is now is unknown here: it runs between our steps (the
            # GIL changes hands between them), so the frame's first event only sets the
            # mark. Read here, a back-edge could be seen where there was none.
            frame.f_trace = _FrameTrace(frame, None)
        frame = frame.f_back
    return None


def stop(tid: int, own_thread: bool) -> None:
    """Remove our trace function from the calling thread, the armed one, if still ours."""
    if not own_thread:
        return  # tracing is only ever removed by the traced thread itself
    if sys.gettrace() is _global_trace:
        sys.settrace(None)


def forget_all() -> None:
    """After a fork, in the child: stop tracing the one thread left, if we were."""
    if sys.gettrace() is _global_trace:
        sys.settrace(None)


def _global_trace(frame: FrameType, event: str, arg: Any) -> Optional[_FrameTrace]:
    """The armed thread's trace function: called at each function entry in that thread."""
    if event != "call" or _armed.get(_get_ident()) is None:
        return None
    if _inject.is_protected(frame.f_globals.get("__name__", "")):
        return None  # no line events in protected code; its callees are still seen
    if _is_start(frame):
        # A function's entry: a candidate point. (A generator resumed also reports
        # "call"; resumed where it yielded, maybe in a finally, it is not one.)
        interrupt = _inject.candidate(frame, None)
        if interrupt is not None:
            raise interrupt
    return _FrameTrace(frame, frame.f_lasti)


_RESUME = dis.opmap.get("RESUME", -1)


def _is_start(frame: FrameType) -> bool:
    """Whether *frame* is starting, not resuming (a generator's or coroutine's)."""
    lasti = frame.f_lasti
    if lasti < 0:
        return True  # 3.9, 3.10: nothing ran yet
    code = frame.f_code.co_code
    # 3.11: a frame starts at its ``RESUME 0``; it resumes at ``RESUME 1``-``3``.
    return code[lasti] == _RESUME and code[lasti + 1] == 0


# 3.10+ reports a line event after every backward jump (PEP 626); 3.9 does not when a
# loop jumps back to the instruction it is on (``while True: pass``), so there each
# instruction of an armed frame is reported ("opcode" events, ``f_trace_opcodes``).
_BY_OPCODE = sys.version_info < (3, 10)
_EVENT = "opcode" if _BY_OPCODE else "line"


class _FrameTrace:
    """The local trace function of one user frame: a back-edge is a candidate point.

    Events in one frame come in the order its instructions run, so an event at an offset
    not above the previous event's is a backward jump (a line event: to the start of a
    line; an opcode event: to any instruction, itself included). The first mark is set in
    the frame's own thread: by its entry, or, for a frame armed from another thread, by
    its first event (the offset read from another thread may be stale by a whole loop
    iteration, and a 3.9 campaign raised once between ``q.put()`` and ``q.get()`` that
    way before this rule, 1 in 10,000).
    """

    __slots__ = ("last",)

    def __init__(self, frame: FrameType, last: Optional[int]) -> None:
        self.last = last  # None: not known yet (set by the frame's next event)
        if _BY_OPCODE:
            frame.f_trace_opcodes = True

    def __call__(self, frame: FrameType, event: str, arg: Any) -> _FrameTrace:
        if event == _EVENT:
            lasti = frame.f_lasti
            last = self.last
            if last is not None and lasti <= last:
                interrupt = _inject.candidate(frame, lasti)
                if interrupt is not None:
                    raise interrupt
            self.last = lasti
        return self

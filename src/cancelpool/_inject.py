"""Raising an exception in another thread: the one dangerous thing cancelpool does.

The problem
-----------
A task that never looks at its token (a tight loop, third-party code, an
``except Exception: continue``) cannot be stopped cooperatively. Python has no thread
kill; the only lever is ``PyThreadState_SetAsyncExc(id, exc)``, which asks the
interpreter to raise ``exc`` in the thread ``id`` "soon". Every ``ctypes`` recipe for
stopping a thread calls it, and every one of them is unsafe.

The mechanism and its contract
------------------------------
* The thread id is an ``unsigned long`` (``threading.get_ident()``, 3.7+). Recipes that
  pass ``ctypes.c_long`` corrupt large ids and hit no thread, or another one. We declare
  ``argtypes`` (``c_ulong``, ``py_object``) and ``restype`` (``c_int``) explicitly.
* The return value is the number of thread states modified: 0 means the thread is gone
  (we report it), 1 is success, more than 1 "means you are in trouble" (the C API docs):
  we revoke at once by calling again with a real ``NULL`` (a second prototype whose
  second argument is ``c_void_p``; passing ``None`` as a ``py_object`` would *set*
  ``None`` as the pending exception) and raise ``SystemError``.
* The exception is a *class* (the interpreter instantiates it where it lands; that is
  when ``TaskInterrupted`` records the landing).
* It lands only while the thread runs bytecode, at the next point where the interpreter
  checks for pending events: a loop's back edge, a function's entry, right after a call
  into C returns. A thread blocked in C (``time.sleep()``, ``Lock.acquire()``, ``recv()``,
  ``select()``, a long computation in an extension) is not interrupted: the exception
  waits and lands right after that call returns. For such tasks the ladder ends by
  abandoning the worker (``cancelpool._escalate``).

Where it must not land
----------------------
Measured here over 500 trials per primitive, a naive injection into a loop that uses a
``queue.Queue``, a ``threading.Condition`` (``with cond:``) or a ``Semaphore``
(``with sem:``) left the primitive broken (mutex held, lock held, count lost) in 28%,
38% and 32% of trials: it lands inside ``threading.py``/``queue.py``, between an
``acquire`` and the ``try`` that would release it, or inside ``__exit__``. The same
holds for ``logging`` (handler locks), ``concurrent.futures`` (future conditions),
``importlib`` (the import lock), ``contextlib``/``weakref`` (``__exit__`` and callback
machinery), and cancelpool's own bookkeeping.

The solution: look before sending, and look again
-------------------------------------------------
While we hold the GIL the target thread is not running bytecode: it is either blocked
in C, or paused at one of the check points above, waiting for the GIL. Either way,
``sys._current_frames()`` shows exactly the frame where the exception will land (paused:
right there, on resuming; blocked in C: in that frame, right after the call returns). So
``unsafe_reason()`` walks the target's stack from the top down to the worker frame that
called the task, and refuses if any frame belongs to a protected module (see
``PROTECTED``), if any frame is leaving a ``with`` block (between the block's end and the
return of its ``__exit__``, see ``cleanup_offsets()``: on 3.9 and 3.10 a thread can pause
exactly there, and the 3.9 campaign left ``with cond:`` locks held in 11 of 1,500 trials
before this check), or if the task is inside ``cancelpool.shield()``; the caller defers
and looks again a little later. The first frame of a protected function may be entered with
the exception pending (it lands on its first instruction, before it has done anything),
which is harmless.

The look and the send are two steps; if the GIL changed hands between them, the target
may have moved. ``interrupt()`` therefore looks again right after sending, and revokes
(``NULL``) if the target is now somewhere unsafe. A failure would need the GIL to change
hands in both windows, each a few bytecodes long. CPython hands the GIL over only when
another thread has waited a whole switch interval (5 ms by default) without a switch;
``interrupt()`` is called by the escalation thread right after it acquires the GIL, and
``_gil_quiet()`` lifts a switch interval below 5 ms for the duration. The campaigns in
``tests/test_force.py`` (and the numbers in the closing notes) count zero misplaced
landings; the window is narrow, not closed by construction, and this paragraph says so.

A stray exception, one sent while the task's code ran but landing after it returned,
lands in the worker's own frames: the worker catches ``TaskInterrupted`` around all of
its bookkeeping, revokes anything still pending when the task ends, and only ever
interrupts a task whose future is already cancelled, so no outcome can be lost.

Handlers in the landing frame
-----------------------------
On 3.13.0 an injected exception that lands at the back edge of a loop such as
``while f() < x: pass`` skips the ``except``/``finally``/``__exit__`` of the frame it
lands in in most trials (measured here: 84 of 100; CPython issue #139622); its callers'
handlers run. So cancelpool never relies on a handler in the frame where the exception
lands: the task is called from a frame that is not the task's (``run_task`` on 3.9-3.13;
on 3.14+ the stdlib's ``WorkerContext.run``, with ``run_task`` catching right below it:
``_worker.TASK_CALLER_CODE``), and the regression tests run such loop shapes on every
interpreter.

Designs that do not work
------------------------
* The naive ``ctypes`` recipe: the numbers above, plus ``c_long`` ids and unchecked
  return values.
* ``sys.settrace`` in the worker, raising from the trace function at a safe line (the
  old "killable thread" recipe): exact, but tracing every line and call of every task
  costs 2-10x; and a trace function cannot be attached to another, already running
  thread before 3.12 (``threading.settrace_all_threads``), nor does it trace a frame
  that is already running without setting its ``f_trace``.
* Signals: delivered to the main thread only.

PyPy
----
PyPy offers ``__pypy__.thread._raise_in_thread(id, exc)``, with no way to revoke a
pending exception, and delivers it at its periodic action checks rather than at the
points above, so a look at the stack does not predict where it lands. cancelpool
therefore does not inject on PyPy: forced cancellation is cooperative plus abandoning
the worker there, like any interpreter without injection (``FORCE_AVAILABLE`` is False).
"""

from __future__ import annotations

import ctypes
import dis
import functools
import platform
import sys
import threading
import time
from types import CodeType, FrameType
from typing import Callable, Optional

from ._exceptions import TaskInterrupted

__all__ = ("AVAILABLE", "MECHANISM", "PROTECTED", "interrupt", "revoke", "unsafe_reason")

#: Modules (and their submodules) an exception must never land in: the stdlib's
#: synchronisation and machinery, and cancelpool's own bookkeeping (every module of the
#: package except the demo, whose functions are tasks like any user's).
PROTECTED = (
    "threading",
    "queue",
    "logging",
    "concurrent.futures",
    "importlib",
    "contextlib",
    "weakref",
    "_weakrefset",
    "cancelpool",
)
_PROTECTED_PREFIXES = tuple(name + "." for name in PROTECTED)
_NOT_PROTECTED = frozenset({"cancelpool._demo"})

MECHANISM: str
_send_exc: Optional[Callable[[int, object], int]] = None
_send_null: Optional[Callable[[int, Optional[int]], int]] = None


def gil_disabled() -> bool:
    """Whether other threads may run Python code at the same time as this one.

    True on a free-threaded build (3.13t+) whose GIL is off, or whose GIL is on only
    for now: unless forced on for the whole run (``-X gil=1``, ``PYTHON_GIL=1``:
    ``sys.flags.gil == 1``), a free-threaded build turns it on while it loads an
    extension module that needs it and may turn it off again. Builds with a GIL, and
    every Python before 3.13, have no ``sys._is_gil_enabled`` or report it on for good.
    """
    is_gil_enabled = getattr(sys, "_is_gil_enabled", None)
    if is_gil_enabled is None:
        return False
    return not is_gil_enabled() or getattr(sys.flags, "gil", 1) != 1


def _why_no_mechanism() -> Optional[str]:
    """``MECHANISM`` when this interpreter cannot inject, or None when it can."""
    if platform.python_implementation() != "CPython" or not hasattr(ctypes, "pythonapi"):
        return f"none: {platform.python_implementation()} (see cancelpool._inject)"
    if gil_disabled():
        # The safety argument above is a look at the target's stack while it cannot
        # move (we hold the GIL). Without a GIL it runs while we look: what we see says
        # nothing about where the exception will land.
        is_gil_enabled = getattr(sys, "_is_gil_enabled", None)
        gil = "not forced on" if is_gil_enabled is not None and is_gil_enabled() else "disabled"
        return (
            f"none: free-threaded build with the GIL {gil} (another thread's stack says "
            "nothing about where it is while it runs; see cancelpool._inject)"
        )
    return None


_no_mechanism = _why_no_mechanism()
if _no_mechanism is None:
    _proto_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)
    _proto_null = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
    _send_exc = _proto_exc(("PyThreadState_SetAsyncExc", ctypes.pythonapi))
    _send_null = _proto_null(("PyThreadState_SetAsyncExc", ctypes.pythonapi))
    MECHANISM = "ctypes.pythonapi.PyThreadState_SetAsyncExc"
else:
    MECHANISM = _no_mechanism

#: Whether this interpreter can interrupt a running task (``cancelpool.FORCE_AVAILABLE``).
#: Decided once, at import: a GIL that comes on later does not make it True.
AVAILABLE = _send_exc is not None


def unsafe_reason(tid: int, stop_code: CodeType) -> Optional[str]:
    """Why an exception must not be sent to thread *tid* now, or None if it may.

    Walks the thread's stack from its top frame down to the frame running *stop_code*
    (the worker's frame that called the task). Call while holding the GIL, that is, from
    Python code, with no blocking call between this and the send.
    """
    frame: Optional[FrameType] = sys._current_frames().get(tid)
    if frame is None:
        return "the thread has exited"
    while frame is not None:
        code = frame.f_code
        if code is stop_code:
            return None
        module = frame.f_globals.get("__name__", "")
        if (
            module in PROTECTED or module.startswith(_PROTECTED_PREFIXES)
        ) and module not in _NOT_PROTECTED:
            return f"inside {module}.{code.co_name}"
        if frame.f_lasti in cleanup_offsets(code):
            return f"leaving a with block in {module}.{code.co_name} (line {frame.f_lineno})"
        frame = frame.f_back
    return "not running the task's code"


@functools.lru_cache(maxsize=4096)
def cleanup_offsets(code: CodeType) -> frozenset[int]:
    """Offsets in *code* where an exception would skip a ``with`` block's ``__exit__``.

    (On 3.9 and 3.10, also the inlined normal-path copy of a ``finally`` body, which
    follows ``POP_BLOCK`` the same way, and the gap in ``lock.acquire(); try:`` between
    the call's return and the ``try``. On 3.11+ that gap, and a ``finally`` body that
    calls Python code, remain: the docs advise ``with`` or ``shield()`` there.)

    A ``with`` statement leaves its block by popping the block (3.9, 3.10:
    ``POP_BLOCK``) and then calling ``__exit__(None, None, None)``
    (``LOAD_CONST None`` x3, 3.15: ``LOAD_COMMON_CONSTANT None`` x3, or 3.9, 3.10:
    ``LOAD_CONST None; DUP_TOP; DUP_TOP``, then the call);
    between the two, and during the call, an exception is no longer handled by the
    block, so ``__exit__`` would never run: a lock taken by ``with lock:`` would stay
    held. On 3.9 and 3.10 a thread can pause right after ``POP_BLOCK`` (measured: 11 in
    1,500 trials of ``with cond:`` left the lock held before this check). A frame
    calling ``__exit__`` (or ``WITH_EXCEPT_START``) is in the same position.
    """
    instructions = list(dis.get_instructions(code))
    unsafe: set[int] = set()
    real = [(k, i) for k, i in enumerate(instructions) if i.opname not in _FILLER]
    for n, (k, ins) in enumerate(real):
        if ins.opname == "POP_BLOCK":
            # 3.9, 3.10: the block is gone; what follows up to the next unconditional
            # jump is the normal exit of a with, or the inlined copy of a finally body.
            for _, after in real[n:]:
                unsafe.add(after.offset)
                if after.opname in _REGION_END:
                    break
        elif ins.opname == "WITH_EXCEPT_START":
            unsafe.add(ins.offset)
        elif ins.opname == "SETUP_FINALLY" and n >= 2:
            # 3.9, 3.10: ``lock.acquire(); try:`` - between the call's return and the
            # try, the finally that would release is not set up yet.
            call, pop = real[n - 2][1], real[n - 1][1]
            if pop.opname == "POP_TOP" and call.opname.startswith("CALL"):
                unsafe.update((call.offset, pop.offset))
        elif ins.opname in ("CALL", "CALL_FUNCTION") and n >= 3:
            before = [
                (_CONSTANT_LOADS.get(i.opname, i.opname), i.argval) for _, i in real[n - 3 : n]
            ]
            if before in _EXIT_CALL_PREFIXES:
                first = real[n - 3][0]
                unsafe.update(i.offset for i in instructions[first : k + 1])
    return frozenset(unsafe)


_FILLER = frozenset({"CACHE", "PRECALL", "EXTENDED_ARG", "NOP"})
_REGION_END = frozenset(
    {"JUMP_FORWARD", "JUMP_ABSOLUTE", "RETURN_VALUE", "RERAISE", "RAISE_VARARGS"}
)
# Instructions that push a constant, by the name compared below: 3.15 loads None (and
# other common constants) with LOAD_COMMON_CONSTANT, and no longer with LOAD_CONST.
_CONSTANT_LOADS = {"LOAD_COMMON_CONSTANT": "LOAD_CONST"}
_EXIT_CALL_PREFIXES = (
    [("LOAD_CONST", None), ("LOAD_CONST", None), ("LOAD_CONST", None)],  # 3.11+
    [("LOAD_CONST", None), ("DUP_TOP", None), ("DUP_TOP", None)],  # 3.9, 3.10
)


def interrupt(tid: int, stop_code: CodeType, shielded: Callable[[], bool]) -> Optional[str]:
    """Send ``TaskInterrupted`` to thread *tid* if it is at a safe point.

    Returns:
        None if the exception is now pending in the thread, else why it was not sent
        (the caller tries again later).

    Raises:
        SystemError: the interpreter reported more than one thread state modified (the
            send was revoked).
    """
    assert _send_exc is not None, "interrupt() without a mechanism"
    with _gil_quiet():
        why = _why_not(tid, stop_code, shielded)
        if why is not None:
            return why
        sent = _send_exc(tid, TaskInterrupted)
        if sent == 0:
            return "the thread has exited"
        if sent > 1:
            revoke(tid)
            raise SystemError(f"PyThreadState_SetAsyncExc modified {sent} thread states; revoked")
        # Look again: if the GIL changed hands since the first look, the target may have
        # moved somewhere unsafe before the exception became pending.
        why = _why_not(tid, stop_code, shielded)
        if why is not None:
            revoke(tid)
            return why
        return None


def _why_not(tid: int, stop_code: CodeType, shielded: Callable[[], bool]) -> Optional[str]:
    if shielded():
        return "inside cancelpool.shield()"
    return unsafe_reason(tid, stop_code)


def revoke(tid: int) -> None:
    """Withdraw an exception sent to thread *tid* that has not landed yet."""
    if _send_null is not None:
        _send_null(tid, None)  # c_void_p(None) is a real NULL


#: The shortest switch interval the look-send-look sequence runs under (see below).
QUIET_FLOOR = 0.001
#: The switch interval while interrupts wait for a safe point (see ``quick_looks``).
LOOK_INTERVAL = 0.001


class _gil_quiet:  # noqa: N801 - used as a function-like context manager
    """Make the GIL stay with this thread for the next few hundred microseconds.

    CPython's GIL moves to a waiting thread only once that thread has waited a whole
    switch interval without a switch. A user (or a test) may have set a tiny interval;
    lift it to ``QUIET_FLOOR`` around the look-send-look sequence (which takes tens of
    microseconds), and yield the GIL once first (``time.sleep(0)``) so that every waiter
    restarts its wait under the new interval.
    """

    __slots__ = ("_old",)

    def __enter__(self) -> None:
        self._old = sys.getswitchinterval()
        if self._old < QUIET_FLOOR:
            sys.setswitchinterval(QUIET_FLOOR)
            time.sleep(0)

    def __exit__(self, *exc_info: object) -> None:
        if self._old < QUIET_FLOOR:
            sys.setswitchinterval(self._old)


class _QuickLooks:
    """Shorten the switch interval while some interrupt waits for a safe point.

    Each look at a busy target thread costs one GIL hand-over, which CPython makes only
    after a whole switch interval (5 ms by default): a task that spends 90% of its time
    in protected code needs about ten looks. While at least one interrupt is waiting,
    the interval is ``LOOK_INTERVAL`` (if it was longer); the last one to finish puts
    back the value it found, unless someone changed it meanwhile.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting = 0
        self._saved: Optional[float] = None

    def begin(self) -> None:
        with self._lock:
            self._waiting += 1
            if self._waiting == 1:
                current = sys.getswitchinterval()
                if current > LOOK_INTERVAL:
                    self._saved = current
                    sys.setswitchinterval(LOOK_INTERVAL)

    def end(self) -> None:
        with self._lock:
            self._waiting -= 1
            if self._waiting == 0 and self._saved is not None:
                if sys.getswitchinterval() == LOOK_INTERVAL:
                    sys.setswitchinterval(self._saved)
                self._saved = None


#: ``begin()`` when an interrupt is refused for the first time, ``end()`` when it is sent
#: or given up.
quick_looks = _QuickLooks()

"""Forced interruption: the task's own thread decides it is safe, and raises.

This is the one dangerous thing cancelpool does. The guarantee, in one sentence:
``TaskInterrupted`` is raised only by the task's own thread, at a loop back-edge or a
function entry of the task's own code, after that thread has checked, under the task's
lock, that the task is still the one being cancelled and that no frame on its stack is in
a protected module, in ``cancelpool.shield()``, in an ``__enter__``/``__exit__``, or
running cleanup (an ``except`` or ``finally`` body, a ``with`` block's exit).

The problem
-----------
A task that never looks at its token (a tight loop, third-party code, an
``except Exception: continue``) cannot be stopped cooperatively, and Python has no
thread kill. Every ``ctypes`` recipe calls ``PyThreadState_SetAsyncExc(id, exc)``, which
asks the interpreter to raise ``exc`` in thread ``id`` at its next check point, and so did
cancelpool until 0.1: it looked at the target's stack from another thread, sent the
exception if the target was at a safe point, and looked again. Measured on 3.9-3.15 with
forced cancels of tasks that never check their token (issue 10 and
``docs/forced-cancellation.md``), that design

* skipped a user context manager's ``__exit__`` (3.13.0: 79 of 300 trials; 3.14: 446 of
  4,000), left a lock taken in ``__enter__`` held (59-197 of 200 on every version), lost a
  ``Semaphore`` count, left a ``Condition``'s lock held;
* never interrupted a loop that spends most of its time in ``queue``/``threading``/
  ``logging`` (3.11: 45 of 100 not stopped within 3 s), which was then abandoned and
  kept consuming items put later;
* stopped loops over primitives 16-81 ms after the grace period (p50).

Why: the look and the landing are two steps in two threads. From 3.12 on the interpreter
reads its pending-event flags before it hands the GIL over, so an exception sent while the
target waits lands at its *next* check point, not the one looked at; and a thread that
pauses mostly inside protected frames is almost never seen at a safe one. Without a GIL,
another thread's stack says nothing at all. No tuning of switch intervals closes this.

The construction
----------------
The decision "is it safe to raise here?" and the raise are one step, taken by the task's
own thread:

1. **Arm** (``arm()``, any thread, under the task's future lock, in the ``INTERRUPT``
   transition): register the future under its thread's id, and make that thread call
   ``candidate()`` at its next candidate points in user code. 3.12+: ``sys.monitoring``
   (``cancelpool._monitor``): ``JUMP`` events local to the code objects of the user frames
   on the thread's stack, and, while some arm is open, ``PY_START``/``PY_RESUME`` events to
   arm user code entered later. 3.9-3.11: a trace function on that thread only
   (``cancelpool._trace``: ``_PyEval_SetTrace`` on the worker's thread state with
   CPython's own trace trampoline), ``f_trace`` on its user frames.
2. **Decide and raise** (``candidate()``, in the task's thread, at a loop back-edge or a
   function entry of user code): the thread walks *its own* stack, which cannot change
   while it does, down to the worker frame that called the task, and refuses if the task
   is in a shield, an exception is being handled anywhere on the stack
   (``sys.exc_info()``), or any frame is in a ``PROTECTED`` module, is an
   ``__enter__``/``__aenter__``/``__exit__``/``__aexit__``/``__del__``, or is at an offset
   where an exception would cut cleanup short (``cancelpool._cleanup``). If it may, it
   makes the ``LAND`` transition under the future's lock, which checks that this future
   is still cancelled, still armed, and still this thread's task, and disarms; then it
   raises ``TaskInterrupted`` from the callback, so the exception appears exactly at the
   point that was judged.
3. **Disarm**: on landing, and when the task's code ends (``COMPLETE``, in the task's
   thread, under the same lock). An arm is keyed by thread and checked against the
   thread's current task, so it can never fire in another task.

Nothing here depends on timing or on a GIL: the judged point and the raise are the same
point of the same thread, and every decision about the future is under its lock. Without
a GIL the registry is a ``dict`` read and written one operation at a time, and the
arming itself is ``sys.monitoring``'s, which stops the world to instrument code.

Candidate points are where an exception is no worse than one the code could raise itself
there: a loop's back-edge is between two iterations (the frame is judged at the back-edge's
destination, so a loop inside a ``finally`` is refused and a loop around one is not); a
function entry is before the function has done anything, as a ``RecursionError`` could be.
Code blocked in C is interrupted at its first candidate point after the call returns, so a
consumer ``seen.append(q.get())`` stops right after the ``get()`` that was pending: the item
it returned is appended, and no later item is taken. Code that never returns from C is
not interrupted; the ladder's last step abandons its worker (``cancelpool._escalate``).

Costs: nothing for a task that is never force-cancelled. While an arm is open (from the
interrupt until it lands, or the worker is abandoned), 3.12+ calls a short callback on
every call of user code in every thread, and on every loop iteration of the armed code
objects in any thread; 3.9-3.11 trace the armed thread only (3.9's interpreter-wide
"tracing possible" counter still slows every thread by 8-28%). ``docs/benchmarks.md`` has
the measured cost.

What it cannot do
-----------------
Interrupt code that stays in C; code that stays in a protected module, a shield, or
cleanup (refused until it leaves); code that swallows ``TaskInterrupted`` (a bare
``except:``: re-armed ``MAX_SENDS`` times by the ladder, then abandoned). A thread traced by
another tool on 3.9-3.11 (a debugger, coverage) is not armed: cancelpool does not replace
another tool's trace function. On 3.12+ two ``sys.monitoring`` tool ids (4, then 3) are
tried; if other tools hold both, forcing cannot interrupt. PyPy has neither route (its
``sys.settrace`` acts on the calling thread only, and ``__pypy__.thread._raise_in_thread``
lands at periodic checks, not where we decide): there a forced cancel is the cooperative
cancel plus abandoning the worker. 3.13.0 skips the handlers of the frame an exception
lands in at a loop back-edge (CPython #139622); the task is called from a frame of ours,
whose handlers run (``_worker.TASK_CALLER_CODE``).
"""

from __future__ import annotations

import platform
import sys
import threading
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Any, Optional, Protocol

from ._cleanup import unsafe_offsets
from ._current import _slot
from ._exceptions import TaskInterrupted

if TYPE_CHECKING:
    from ._future import CancellableFuture
    from ._stats import WorkerCounts

__all__ = (
    "AVAILABLE",
    "MECHANISM",
    "PROTECTED",
    "abandoned",
    "add_task_caller",
    "arm",
    "candidate",
    "disarm",
    "gil_disabled",
    "is_protected",
    "judge",
    "stop_codes",
    "thread_state",
    "unsafe_reason",
)

#: Modules (and their submodules) an exception must never be raised in: the stdlib's
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
    "subprocess",
    "multiprocessing",
    "selectors",
    "cancelpool",
)
_PROTECTED_PREFIXES = tuple(name + "." for name in PROTECTED)
_NOT_PROTECTED = frozenset({"cancelpool._demo"})
#: Frames never interrupted, by their function's name: a context manager's entry and exit
#: (an entry cut short may hold what it took; an exit, what it should release), and a
#: finalizer (its exceptions are printed and ignored).
GUARDED_NAMES = frozenset({"__enter__", "__aenter__", "__exit__", "__aexit__", "__del__"})


class Backend(Protocol):
    """What arms one thread: ``cancelpool._monitor`` (3.12+) or ``cancelpool._trace``."""

    MECHANISM: str

    def prepare(self) -> Optional[str]: ...
    def start(self, tid: int, tstate: int, top: Optional[FrameType]) -> Optional[str]: ...
    def stop(self, tid: int, own_thread: bool) -> None: ...
    def window(self, open_: bool) -> None: ...
    def thread_state(self) -> int: ...
    def forget_all(self) -> None: ...


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


def _choose_backend() -> tuple[Optional[Backend], str]:
    implementation = platform.python_implementation()
    if implementation != "CPython":
        return None, (
            f"none: {implementation} cannot arm another thread (its sys.settrace acts on the "
            "calling thread only; see cancelpool._inject)"
        )
    if sys.version_info >= (3, 12):
        # Free-threaded builds (3.13t+) too: sys.monitoring stops the world to instrument
        # there (CPython gh-116818), and nothing else here needs a GIL.
        from . import _monitor

        return _monitor, _monitor.MECHANISM
    from . import _trace

    why = _trace.unavailable()
    if why is not None:
        return None, why
    return _trace, _trace.MECHANISM


_backend, MECHANISM = _choose_backend()
#: Whether this interpreter can interrupt a running task (``cancelpool.FORCE_AVAILABLE``).
AVAILABLE = _backend is not None
if gil_disabled() and AVAILABLE:
    MECHANISM += " (free-threaded build: argued in cancelpool._inject, untested)"

# The armed futures, by the id of the thread running them. Written under _registry_lock
# (and the future's lock); read without a lock by the callbacks, one dict operation each.
_armed: dict[int, CancellableFuture[Any]] = {}
# Threads whose arm outlived its worker's abandonment: still armed (the thread may come
# back to a candidate point), but no longer worth the process-wide events.
_abandoned: set[int] = set()
_registry_lock = threading.Lock()
_STOP_CODE: Optional[CodeType] = None
#: The code of a wrapper that calls task functions in its turn (``add_task_caller``);
#: the worker's own code until one is registered.
_WRAPPER_CODE: Optional[CodeType] = None


def _after_fork_in_child() -> None:
    """A forked child has one thread, not the parent's armed ones: forget every arm.

    Called by ``cancelpool._fork``, which lists every lock the library resets there.
    """
    global _registry_lock
    _registry_lock = threading.Lock()
    _armed.clear()
    _abandoned.clear()
    if _backend is not None:
        _backend.forget_all()


def thread_state() -> int:
    """The calling thread's state address if the backend needs it (3.9-3.11), else 0.

    Called by each worker once, when it starts.
    """
    return _backend.thread_state() if _backend is not None else 0


def is_protected(module: str) -> bool:
    """Whether *module* (a ``__name__``) is one an interrupt is never raised in."""
    return (
        module in PROTECTED or module.startswith(_PROTECTED_PREFIXES)
    ) and module not in _NOT_PROTECTED


def arm(future: CancellableFuture[Any], tally: WorkerCounts) -> Optional[str]:
    """Make *future*'s thread raise ``TaskInterrupted`` at its next safe candidate point.

    Called under the future's lock, in the INTERRUPT transition, while the task's code runs
    (so its thread is alive). Returns None when armed, else why not.
    """
    if _backend is None:
        return MECHANISM
    tid = tally.tid
    with _registry_lock:
        why = _backend.prepare()
        if why is not None:
            return why
        current = _armed.get(tid)
        if current is future:
            return None
        if current is not None:
            return "its thread is armed for another task"  # cannot happen: one task a thread
        _armed[tid] = future
        _abandoned.discard(tid)
        if len(_armed) - len(_abandoned) == 1:
            _backend.window(True)
        why = _backend.start(tid, tally.tstate, sys._current_frames().get(tid))
        if why is not None:
            _forget(tid, own_thread=False)
        return why


def disarm(future: CancellableFuture[Any], own_thread: bool) -> None:
    """Undo ``arm()``: the interrupt landed, or the task's code ended (future's lock held)."""
    tally = future._tally
    if _backend is None or tally is None:
        return
    with _registry_lock:
        if _armed.get(tally.tid) is future:
            _forget(tally.tid, own_thread)


def abandoned(future: CancellableFuture[Any]) -> None:
    """The future's worker was abandoned: keep its thread armed, close the wide window."""
    tally = future._tally
    if _backend is None or tally is None:
        return
    with _registry_lock:
        if _armed.get(tally.tid) is future and tally.tid not in _abandoned:
            _abandoned.add(tally.tid)
            if len(_armed) == len(_abandoned):
                _backend.window(False)


def _forget(tid: int, own_thread: bool) -> None:
    assert _backend is not None
    del _armed[tid]
    was_abandoned = tid in _abandoned
    _abandoned.discard(tid)
    if not was_abandoned and len(_armed) == len(_abandoned):
        _backend.window(False)
    _backend.stop(tid, own_thread)


def candidate(frame: FrameType, offset: Optional[int]) -> Optional[TaskInterrupted]:
    """A candidate point of the calling thread: the exception to raise here, if it is safe.

    Called by the backend's callback in the task's own thread: at a loop back-edge of
    *frame* (*offset*: the back-edge's destination), or at the entry of *frame*'s function
    (*offset* None). Returns None if this thread is not armed or the point is not safe;
    else the arm is closed (``LAND``) and the callback raises what this returns at once,
    so that the traceback ends with the task's frame and that one callback.
    """
    future = judge(frame, offset)
    if future is None:
        return None
    from ._future import LAND

    if not future._transition(LAND):
        return None
    token = future._token
    return TaskInterrupted(token.reason if token is not None and token.reason else "cancel")


def judge(frame: FrameType, offset: Optional[int]) -> Optional[CancellableFuture[Any]]:
    """The armed future of the calling thread if an interrupt may be raised at this point.

    The first half of ``candidate()``, without landing: None if the thread is not armed,
    not in the armed task's code, or the point is not safe (``future._refusal`` says why).
    """
    future = _armed.get(threading.get_ident())
    if future is None or _slot.future is not future:
        return None  # not armed, or not inside the armed task's code (the worker's own)
    why = unsafe_reason(frame, offset, future)
    if why is not None:
        future._refusal = why
        return None
    return future


def unsafe_reason(
    frame: Optional[FrameType], offset: Optional[int], future: CancellableFuture[Any]
) -> Optional[str]:
    """Why an exception must not be raised now in the calling thread's *frame*, or None.

    *frame* is the calling thread's own frame at a candidate point (a back-edge whose
    destination is *offset*, or the entry of its function when *offset* is None); its
    callers are judged at the instruction that called. Only the calling thread's own
    stack is read, so the answer holds until it raises.
    """
    if future._shield_depth:
        return "inside cancelpool.shield()"
    if sys.exc_info()[1] is not None:
        return "handling an exception (in an except or finally block, or an __exit__)"
    stop, wrapper = stop_codes()
    frames = []
    while frame is not None and frame.f_code is not stop and frame.f_code is not wrapper:
        frames.append(frame)
        frame = frame.f_back
    if frame is None or not frames:
        # Not in the task's code, or in the frame that calls it (ours): never there.
        return "not running the task's code"
    at = offset
    for frame in frames:
        code = frame.f_code
        module = frame.f_globals.get("__name__", "")
        if is_protected(module):
            return f"inside {module}.{code.co_name}"
        if code.co_name in GUARDED_NAMES:
            return f"inside {code.co_name} ({module}, line {frame.f_lineno})"
        if at is not None and at in unsafe_offsets(code):
            return f"running cleanup in {module}.{code.co_name} (line {frame.f_lineno})"
        back = frame.f_back  # its caller is judged at the instruction that called
        at = back.f_lasti if back is not None else None
    return None


def _stop_code() -> CodeType:
    # The frame that calls the task's function: frames above it are the task's.
    global _STOP_CODE
    if _STOP_CODE is None:
        from ._worker import TASK_CALLER_CODE

        _STOP_CODE = TASK_CALLER_CODE
    return _STOP_CODE


def stop_codes() -> tuple[CodeType, CodeType]:
    """The codes of the frames a walk down a task's stack stops at, innermost wins.

    The worker's frame that calls the task (``_worker.TASK_CALLER_CODE``), and the frame
    of a wrapper registered with ``add_task_caller`` (the same code if none is): the
    task's frames are the ones above the innermost such frame.
    """
    stop = _stop_code()
    return stop, _WRAPPER_CODE or stop


def add_task_caller(code: CodeType) -> None:
    """Make *code*, cancelpool code that calls a task's function, a frame walks stop at.

    For an integration whose executor runs its own bookkeeping frame between the worker
    and the user's function (``cancelpool.dask``): that frame is in a protected module,
    so without this every frame above it would be judged as inside it, and a forced
    cancel could never land. Frames above it are the task's; it and the frames below are
    never interrupted (a walk that starts at it finds no task frame). One wrapper at most.
    """
    global _WRAPPER_CODE
    if _WRAPPER_CODE is not None and _WRAPPER_CODE is not code:
        raise RuntimeError(f"a task caller is registered already: {_WRAPPER_CODE!r}")
    _WRAPPER_CODE = code

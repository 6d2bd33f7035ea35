"""Arming a thread for a forced interrupt on CPython 3.12+: ``sys.monitoring``.

``cancelpool._inject`` says what arming is for and why it is safe; this module only makes
the armed thread call ``_inject.candidate()`` at its candidate points.

* A tool id of our own (4, else 3: ids 0-2 and 5 are named for debuggers, coverage,
  profilers and optimizers), taken at the first forced interrupt and kept.
* ``JUMP`` events local to the code objects of the user frames on the armed thread's stack
  when it is armed, and of every user function it enters or resumes while armed. A jump
  whose destination is before its source is a loop's back-edge: a candidate point. A
  forward jump is never one: its location is disabled for good (``DISABLE``).
* The raise at a back-edge is made at the destination, from an ``INSTRUCTION`` event
  switched on for that one code object once the back-edge is judged safe, where it is
  judged again. An exception raised from the ``JUMP`` callback itself skips the handlers
  of the frame it is raised in, for some loop shapes, on 3.12.1, 3.13.0 and 3.14.10
  (``try: while True: ...`` whose ``except``/``finally`` never runs; which shapes differs
  by version; measured here, the same class of bug as CPython #139622); raised from
  ``INSTRUCTION`` or ``PY_START`` it does not skip them, on every version
  (``tests/test_inject.py`` records each version's behaviour).
* While at least one arm is open (not yet landed, worker not abandoned): ``PY_START``
  (a candidate point, and the code is armed) and ``PY_RESUME`` (the code is armed)
  events, process-wide. Code of protected modules answers ``DISABLE`` once.

Events fire in every thread that runs the instrumented code; the callback's first step
is one dict lookup by thread id (``_inject._armed``), and threads that are not armed
return there. When the last arm closes, the events are switched off and every code object
instrumented is restored.
"""

from __future__ import annotations

import sys
import threading
from types import CodeType, FrameType
from typing import Any, Optional

__all__ = ("MECHANISM", "forget_all", "prepare", "start", "stop", "thread_state", "window")

MECHANISM = "sys.monitoring (JUMP and PY_START events, raised by the task's own thread)"
#: Tool ids tried, in order (``sys.monitoring`` reserves 0-2 and 5 by convention).
TOOL_IDS = (4, 3)
TOOL_NAME = "cancelpool"

_tool: Optional[int] = None
# Code objects given local JUMP events, restored when the last arm closes.
_instrumented: set[CodeType] = set()
# A back-edge judged safe, by thread: the frame and the destination where it will raise.
_pending: dict[int, tuple[FrameType, int]] = {}
# User code seen entered by threads that are not armed, while the window is open (the
# others answered DISABLE: protected code is never worth an event).
_user_code: set[CodeType] = set()


def prepare() -> Optional[str]:
    """Take a tool id and register the callbacks, once; None, or why not possible."""
    global _tool
    if _tool is not None:
        return None
    monitoring: Any = sys.monitoring  # type: ignore[attr-defined]
    for tool in TOOL_IDS:
        if monitoring.get_tool(tool) == TOOL_NAME:
            _tool = tool
            break
        if monitoring.get_tool(tool) is None:
            monitoring.use_tool_id(tool, TOOL_NAME)
            _tool = tool
            break
    else:
        held = ", ".join(f"{t}: {monitoring.get_tool(t)!r}" for t in TOOL_IDS)
        return f"sys.monitoring tool ids {held} are held by other tools"
    _bind()
    events = monitoring.events
    monitoring.register_callback(_tool, events.JUMP, _on_jump)
    monitoring.register_callback(_tool, events.INSTRUCTION, _on_instruction)
    monitoring.register_callback(_tool, events.PY_START, _on_start)
    monitoring.register_callback(_tool, events.PY_RESUME, _on_resume)
    return None


def thread_state() -> int:
    """Not needed here: arming goes by code objects and thread ids."""
    return 0


def window(open_: bool) -> None:
    """Switch the process-wide entry events on (an arm is open) or off (none is)."""
    assert _tool is not None
    monitoring: Any = sys.monitoring  # type: ignore[attr-defined]
    events = monitoring.events
    monitoring.set_events(_tool, events.PY_START | events.PY_RESUME if open_ else 0)
    if not open_:
        _user_code.clear()


def start(tid: int, tstate: int, top: Optional[FrameType]) -> Optional[str]:
    """Arm the user code on the stack of thread *tid* (top frame *top*).

    The entry events are on before this looks at the stack, so a frame entered after the
    look is armed by its own ``PY_START``/``PY_RESUME``; the look only has to find the
    frames already running. Called under ``_inject``'s registry lock.
    """
    stop, wrapper = _inject.stop_codes()
    frame = top
    while frame is not None and frame.f_code is not stop and frame.f_code is not wrapper:
        if not _inject.is_protected(frame.f_globals.get("__name__", "")):
            _instrument(frame.f_code)
        frame = frame.f_back
    return None


def stop(tid: int, own_thread: bool) -> None:
    """Thread *tid* is disarmed; when no thread is armed, restore the code objects."""
    _drop_pending(tid)
    if _inject._armed or _tool is None:
        return
    monitoring: Any = sys.monitoring  # type: ignore[attr-defined]
    for code in _instrumented:
        monitoring.set_local_events(_tool, code, 0)
    _instrumented.clear()


def forget_all() -> None:
    """After a fork, in the child: no thread is armed; switch every event off."""
    _pending.clear()
    if _tool is None:
        return
    window(False)
    for code in _instrumented:
        _set_events(code, 0)
    _instrumented.clear()


def _instrument(code: CodeType) -> None:
    if code not in _instrumented:
        _set_events(code, _JUMP)
        _instrumented.add(code)


def _set_events(code: CodeType, events: int) -> None:
    sys.monitoring.set_local_events(_tool, code, events)  # type: ignore[attr-defined]


def _drop_pending(tid: int) -> None:
    """Forget thread *tid*'s pending raise; its code stops reporting instructions."""
    pending = _pending.pop(tid, None)
    if pending is not None:
        code = pending[0].f_code
        if all(other[0].f_code is not code for other in _pending.values()):
            _set_events(code, _JUMP)


# The callbacks. Each runs in whichever thread ran the event; only the armed thread
# goes past the first lookup.

_get_ident = threading.get_ident
_inject: Any = None
_armed: dict[int, Any] = {}


def _bind() -> None:
    """Bind the callbacks' names to ``_inject``'s (a circular import at module load)."""
    global _inject, _armed
    from . import _inject as inject

    _inject = inject
    _armed = inject._armed


def _on_jump(code: CodeType, source: int, destination: int) -> Any:
    if destination > source:
        return _DISABLE  # a forward jump: never a candidate point
    tid = _get_ident()
    if _armed.get(tid) is None:
        return None
    frame = sys._getframe(1)
    if _inject.judge(frame, destination) is not None:
        # Safe at the destination: raise there, from its INSTRUCTION event (raised from a
        # JUMP event, 3.12-3.14 skip the handlers of the frame for some loops; see the
        # docstring).
        with _inject._registry_lock:
            if _armed.get(tid) is not None:
                _pending[tid] = (frame, destination)
                _set_events(code, _JUMP | _INSTRUCTION)
    return None


def _on_instruction(code: CodeType, offset: int) -> Any:
    tid = _get_ident()
    pending = _pending.get(tid)
    if pending is None:
        return None  # another thread running the same code
    frame = sys._getframe(1)
    if pending[0] is not frame:
        return None  # our thread, in another frame of the same code (a recursive call)
    with _inject._registry_lock:
        _drop_pending(tid)
    if offset != pending[1]:
        return None  # the frame did not go on at the destination (cannot happen)
    interrupt = _inject.candidate(frame, offset)  # judged again, landed, here
    if interrupt is not None:
        raise interrupt
    return None


def _on_start(code: CodeType, offset: int) -> Any:
    if _armed.get(_get_ident()) is None:
        return _elsewhere(code)
    frame = sys._getframe(1)
    if not _arm_entered(frame):
        return _DISABLE
    interrupt = _inject.candidate(frame, None)  # a function entry: a candidate point
    if interrupt is not None:
        raise interrupt
    return None


def _on_resume(code: CodeType, offset: int) -> Any:
    if _armed.get(_get_ident()) is None:
        return _elsewhere(code)
    return None if _arm_entered(sys._getframe(1)) else _DISABLE


def _elsewhere(code: CodeType) -> Any:
    """An entry in a thread that is not armed: nothing, but protected code never again."""
    if code in _user_code:
        return None
    if _inject.is_protected(sys._getframe(2).f_globals.get("__name__", "")):
        return _DISABLE
    _user_code.add(code)  # forgotten when the window closes
    return None


def _arm_entered(frame: FrameType) -> bool:
    """The armed thread entered or resumed *frame*: arm its code; False if protected."""
    if _inject.is_protected(frame.f_globals.get("__name__", "")):
        return False
    code = frame.f_code
    if code not in _instrumented:
        with _inject._registry_lock:
            if _armed:
                _instrument(code)
    return True


_EVENTS: Any = getattr(getattr(sys, "monitoring", None), "events", None)
_DISABLE: Any = getattr(getattr(sys, "monitoring", None), "DISABLE", None)
_JUMP: int = _EVENTS.JUMP if _EVENTS is not None else 0
_INSTRUCTION: int = _EVENTS.INSTRUCTION if _EVENTS is not None else 0

"""The escalation ladder: what happens to a running task that was cancelled.

Each rung is a state of the task (``cancelpool.TaskState``), reached by one transition
of its future, and every delay is scheduled on the process's one timer thread
(``cancelpool._timer``)::

    cancel()          token set, future cancelled                      -> STOPPING
    + grace           still running:
                        force=False: StillRunningWarning, nothing more
                        force=True:  the task's thread is armed: it raises
                                     TaskInterrupted itself at its next
                                     safe candidate point               -> INTERRUPTING
    + re-arm          raised but still running (swallowed):
                      InterruptSwallowedWarning, armed again (3 arms at most)
    grace + abandon_after
                      still running: the worker is detached from the pool,
                      a new one started, WorkerAbandonedWarning         -> ABANDONED

An armed thread decides and raises on its own (``cancelpool._inject``); the ladder does
not look at it again until the re-arm or abandon time. An arm that cannot be made (no
route on this interpreter, or the thread is traced by another tool) waits for the abandon
time; without a way to interrupt (``FORCE_AVAILABLE`` False) a forced cancel also warns
once per process. A worker abandoned while armed stays armed: if its thread comes back to
a safe point, it raises there and the thread exits.

Every rung is taken at most once per step; a task whose code ends at any point
(``COMPLETE``) makes every later rung a no-op, because each rung is a transition that
only applies to a task still running.

How warnings reach the user
---------------------------
The rungs warn from the timer thread, a daemon thread that the interpreter stops where
it stands at exit, and the warning comes after what it reports: the ABANDON transition
is the decision that the task is still running, so it cannot wait for the warning (the
task may end in between: that warning would be false), and the warning cannot be
issued under the future's lock (``showwarning``, filters and logging handlers are user
code). So a program that saw ABANDONED (or the replacement worker) and exited at once
could exit before the warning was out: 3 runs in 10 lost it. Instead, a warning is
*pending* (``_Delivery``) until it is out: the abandonment's from before its ABANDON
transition, the others from when they are issued; and the exit hook
(``cancelpool._worker._python_exit``), which runs before the interpreter stops daemon
threads, waits for every pending one (``deliver_pending``, bounded by
``DELIVERY_TIMEOUT``). This is an order, not a race: the warning was pending before the
transition that the program observed (through the future's lock, or the steps after
it), so the program's exit begins after that, and its exit hook finds it and waits.

A warning points at the task's code, not at cancelpool's: ``warnings.warn_explicit``
with the file and line of the innermost user frame of the task (``user_site``), and that
frame's module and ``__warningregistry__``, as ``warnings.warn`` would use in that code,
so filters by module, by category (``simplefilter("error", WorkerAbandonedWarning)``) and
``catch_warnings()`` apply as usual. A filter that turns one into an error is honoured
by logging, not raising: the warning is issued on the timer thread (or, with
``grace=0``, by chance in the thread that cancelled) where an exception would only cut
the ladder's step short and reach nobody, so it is logged at ERROR on the
``cancelpool`` logger (printed to stderr when logging is not configured), and the
ladder goes on.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import reprlib
import sys
import sysconfig
import threading
import time
import traceback
import warnings
import weakref
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Any, NamedTuple, Optional, Union

from . import _inject
from ._current import _slot
from ._exceptions import (
    ForceUnavailableWarning,
    InterruptSwallowedWarning,
    StillRunningWarning,
    WorkerAbandonedWarning,
)
from ._future import ABANDON, ABANDONED_, CODE_STOPPING, INTERRUPT, CancellableFuture
from ._timer import Scheduler
from ._validate import DEFAULT, _Default

if TYPE_CHECKING:
    from ._executor import CancellableThreadPoolExecutor
    from ._worker import WorkerThread

__all__ = ("Ladder", "Policy")

#: How many times one task is armed at most before its worker is abandoned.
MAX_SENDS = 3
#: How long cancel(force=True, grace=0) waits, after arming, for the task to stop.
HANDOVER = 0.002

_force_unavailable_warned = False
# Guards _force_unavailable_warned: the warning is issued once per process.
_warn_lock = threading.Lock()


def _after_fork_in_child() -> None:
    """In a forked child: a fresh ``_warn_lock`` (called by ``cancelpool._fork``).

    Whether the warning was issued is kept: the child shares the parent's output.
    """
    global _warn_lock
    _warn_lock = threading.Lock()


class Policy:
    """An executor's escalation settings, and the ladders they start.

    Shared by the executor and its futures; refers to the executor weakly.
    """

    __slots__ = (
        "__weakref__",
        "abandon_after",
        "executor_ref",
        "exit_timeout",
        "force",
        "grace",
        "scheduler",
    )

    def __init__(
        self,
        executor: CancellableThreadPoolExecutor,
        *,
        force: bool,
        grace: float,
        abandon_after: float,
        exit_timeout: Optional[float],
        scheduler: Scheduler,
    ) -> None:
        self.executor_ref = weakref.ref(executor)
        self.force = force
        self.grace = grace
        self.abandon_after = abandon_after
        self.exit_timeout = exit_timeout
        self.scheduler = scheduler

    def escalate(
        self,
        future: CancellableFuture[Any],
        force: Union[bool, _Default],
        grace: Union[float, _Default],
        abandon_after: Optional[float] = None,
    ) -> None:
        """Start (or harden) the ladder of a running task that was just cancelled."""
        use_force = self.force if force is DEFAULT else bool(force)
        use_grace = self.grace if grace is DEFAULT else float(grace)
        wait = self.abandon_after if abandon_after is None else abandon_after
        now = self.scheduler.clock()
        with future._condition:
            ladder: Optional[Ladder] = future._ladder
            if ladder is None:
                ladder = future._ladder = Ladder(self, future, use_force, now, use_grace, wait)
            elif use_force and (not ladder.force or now + use_grace < ladder.first_at):
                ladder.harden(now + use_grace, wait)  # a later cancel(force=True)
            else:
                return
        if use_force and use_grace == 0:
            # No grace: take the first step here, in the cancelling thread; the timer
            # thread would first have to win the GIL from a busy task (a whole switch
            # interval).
            sent = future._interrupts_sent
            ladder.step()
            if future._interrupts_sent > sent and _slot.future is not future:
                # Let the task run to its next candidate point now, instead of after a
                # switch interval if our caller stays busy: wait (at most HANDOVER
                # seconds) for its code to stop.
                with future._condition:
                    future._condition.wait_for(future._code_stopped, HANDOVER)
        else:
            ladder.schedule(ladder.first_at, ladder.step)


class Ladder:
    """The escalation of one cancelled task; its steps run on the timer thread."""

    __slots__ = (
        "abandon_at",
        "cancelled_at",
        "first_at",
        "force",
        "future",
        "handle",
        "policy",
        "warned",
    )

    def __init__(
        self,
        policy: Policy,
        future: CancellableFuture[Any],
        force: bool,
        now: float,
        grace: float,
        abandon_after: float,
    ) -> None:
        self.policy = policy
        self.future = future
        self.force = force
        self.cancelled_at = now
        self.first_at = now + grace
        self.abandon_at = self.first_at + abandon_after
        self.handle: Any = None
        self.warned: set[type[Warning]] = set()

    def harden(self, first_at: float, abandon_after: float) -> None:
        """Make the ladder forced, or bring its steps forward (future's lock held)."""
        self.force = True
        self.first_at = min(self.first_at, first_at)
        self.abandon_at = min(self.abandon_at, first_at + abandon_after)
        if self.handle is not None:
            self.handle.cancel()

    def schedule(self, when: float, action: Any) -> None:
        """Run *action* on the timer thread at *when*, unless the task's code has ended.

        Decided under the future's lock, where COMPLETE withdraws the step scheduled
        (``_transition``): either the step is scheduled first and COMPLETE withdraws it,
        or COMPLETE comes first and nothing is scheduled. So no step of a task whose code
        has ended stays on the timer, keeping its thread alive until due (issue 13: a
        conformance run saw the thread outlive ``shutdown(wait=True)``).
        """
        future = self.future
        with future._condition:
            state = future._task
            if state not in CODE_STOPPING or state == ABANDONED_:
                return  # nothing left to do: step() would return at once
            self.handle = self.policy.scheduler.call_at(when, action)

    def step(self) -> None:
        """The next rung: decide from where the task is now (on the timer thread)."""
        future = self.future
        with future._condition:
            state = future._task
            armed = future._arm_open
        if state not in CODE_STOPPING or state == ABANDONED_:
            return  # the code has ended, or the worker is gone already
        now = self.policy.scheduler.clock()
        if not self.force:
            self._warn_once(
                StillRunningWarning,
                f"{describe(future)} is still running {now - self.cancelled_at:.3g} s "
                "after it was cancelled without force; it is not checking its token. "
                "Make it call token.raise_if_cancelled() (or use token.sleep/wait/register) "
                "where it can stop, or cancel it with force=True.",
            )
            return
        if now >= self.abandon_at:
            self.abandon()
            return
        if not _inject.AVAILABLE:
            _warn_force_unavailable(future)
            self.schedule(self.abandon_at, self.step)
            return
        if armed:
            # Armed, not raised yet: the thread is in C code, a shield, protected code
            # or cleanup. It raises on its own when it reaches a safe point.
            self.schedule(self.abandon_at, self.step)
            return
        sent = future._interrupts_sent
        if sent:
            self._warn_once(
                InterruptSwallowedWarning,
                f"{describe(future)} caught the TaskInterrupted raised in it and kept "
                "running (a bare except: or except BaseException:?). Let TaskCancelled "
                "propagate. It will be interrupted again, and abandoned in "
                f"{self._abandon_in():.3g} s.",
            )
            if sent >= MAX_SENDS:
                self.schedule(self.abandon_at, self.step)
                return
        if future._transition(INTERRUPT):
            gap = max(0.005, min(1.0, (self.abandon_at - now) / (MAX_SENDS + 1)))
            self.schedule(min(now + gap, self.abandon_at), self.step)
            return
        # The thread cannot be armed (future._refusal says why): wait for the abandon time.
        self.schedule(self.abandon_at, self.step)

    def abandon(self) -> None:
        """Detach the worker running this task, start a replacement, and warn.

        The warning is pending (``_Delivery``) from before the ABANDON transition, which
        is what makes the abandonment observable: a program that saw it and exits at
        once has its exit hook wait for the warning (module docstring, "How warnings
        reach the user").
        """
        with _Delivery():
            if self.future._transition(ABANDON):
                self._detach_and_warn()

    def _detach_and_warn(self) -> None:
        """After ABANDON: detach the task's worker (replaced if it can be), and warn."""
        future = self.future
        worker = find_worker(future)
        from ._worker import is_global_shutdown

        executor = self.policy.executor_ref()
        replaced = False
        if executor is not None and worker is not None:
            replaced = executor._abandon_worker(worker)
        elif worker is not None:
            worker.abandoned = True
        if replaced:
            fate = "its worker was abandoned and replaced"
        elif is_global_shutdown():
            fate = "its worker was abandoned: the interpreter exits without waiting for it"
        else:
            fate = "its worker was abandoned (not replaced: the pool takes no more work)"
        why = future._refusal
        self._warn_once(
            WorkerAbandonedWarning,
            f"{describe(future)} did not stop after its cancel"
            + (" and interrupt" if future._interrupts_sent else "")
            + (f" (last refused: {why})" if why else "")
            + f"; {fate}. The thread goes on running the task's code until it returns, "
            "then exits. Blocking calls that no exception can interrupt end this way: use "
            "token-aware waits or token.register().",
        )

    def _abandon_in(self) -> float:
        return max(0.0, self.abandon_at - self.policy.scheduler.clock())

    def _warn_once(self, category: type[Warning], message: str) -> None:
        if category in self.warned:
            return
        self.warned.add(category)
        emit(category, message, self.future)


def find_worker(future: CancellableFuture[Any]) -> Optional[WorkerThread]:
    """The worker thread whose current task is *future*, if any."""
    from ._worker import all_workers

    for worker in all_workers():
        item = worker.current_item
        if item is not None and item.future is future:
            return worker
    return None


_repr = reprlib.Repr()
_repr.maxstring = 40
_repr.maxother = 40


def describe(future: CancellableFuture[Any]) -> str:
    """``task fn(args...) [reason='...']`` for messages; never raises."""
    worker = find_worker(future)
    item = worker.current_item if worker is not None else None
    # What an integration knows the task as (cancelpool.dask: the task's key), if set.
    label = future.__dict__.get("_label")
    if isinstance(label, str):
        call = label
    elif item is None:
        call = repr(future)
    else:
        name = getattr(item.fn, "__qualname__", None) or repr(item.fn)
        try:
            args = ", ".join(
                [_repr.repr(a) for a in item.args[:4]]
                + [f"{k}={_repr.repr(v)}" for k, v in list(item.kwargs.items())[:4]]
            )
        except Exception:  # noqa: BLE001 - a failing user __repr__ must not break the warning
            args = "..."
        call = f"{name}({args})"
    token = future._token
    reason = token.reason if token is not None else None
    thread = f" in thread {worker.name!r}" if worker is not None else ""
    return f"task {call}{thread} (cancel reason {reason!r})"


def task_frames(future: CancellableFuture[Any]) -> Optional[list[FrameType]]:
    """The frames of the task's code now running on its thread, innermost first.

    Returns:
        The task's frames (empty: its thread is in C code called by the task), or None
        if the task's thread is not running the task's code (it returned, or never ran).
    """
    tally = future._tally
    frame = sys._current_frames().get(tally.tid) if tally is not None else None
    stop, wrapper = _inject.stop_codes()
    frames = []
    while frame is not None and frame.f_code is not stop and frame.f_code is not wrapper:
        frames.append(frame)
        frame = frame.f_back
    return None if frame is None else frames


def stack_of(future: CancellableFuture[Any]) -> str:
    """Where the task's thread is now, the task's frames only; never raises."""
    return _format_stack(task_frames(future))


def _format_stack(frames: Optional[list[FrameType]]) -> str:
    if frames is None:
        return ""
    if not frames:
        return "\nIts thread is not running Python code of the task (blocked in C)."
    lines = traceback.format_list(traceback.extract_stack(frames[0], limit=len(frames)))
    return "\nIts thread is at (most recent call last):\n" + "".join(lines).rstrip()


class _Site(NamedTuple):
    """Where a warning points: what ``warnings.warn`` finds in the caller's frame."""

    filename: str
    lineno: int
    module: str
    module_globals: Optional[dict[str, Any]]  # where its __warningregistry__ is


_LIBRARY_PREFIXES: Optional[tuple[str, ...]] = None


def _library_prefixes() -> tuple[str, ...]:
    """Directories whose code is not the user's: the stdlib, installed packages, ours."""
    global _LIBRARY_PREFIXES
    if _LIBRARY_PREFIXES is None:
        paths = sysconfig.get_paths()
        dirs = {paths.get(key) for key in ("stdlib", "platstdlib", "purelib", "platlib")}
        dirs.add(os.path.dirname(threading.__file__))  # the stdlib, whatever sysconfig says
        dirs.add(os.path.dirname(__file__))  # cancelpool
        _LIBRARY_PREFIXES = ("<frozen ", *(os.path.join(d, "") for d in dirs if d))
    return _LIBRARY_PREFIXES


def user_site(frames: Optional[list[FrameType]], fn: Any) -> _Site:
    """The line of user code a warning about a task points at.

    The innermost of the task's frames that is not library code (the stdlib, installed
    packages, cancelpool): where the user's code is now (``stuck()`` calling
    ``event.wait()``, not ``threading.py``). Else the outermost task frame (the function
    submitted, if it is a library's), else the first line of *fn*'s code (the task is
    in C code it called directly), else a ``<module>`` placeholder (a builtin submitted
    directly: there is no Python line to point at).
    """
    if frames:
        prefixes = _library_prefixes()
        frame = next((f for f in frames if not f.f_code.co_filename.startswith(prefixes)), None)
        if frame is None:
            frame = frames[-1]
        module = frame.f_globals.get("__name__", "<string>")
        return _Site(frame.f_code.co_filename, frame.f_lineno, module, frame.f_globals)
    while isinstance(fn, functools.partial):
        fn = fn.func
    fn = getattr(fn, "__func__", fn)  # a bound method
    code = getattr(fn, "__code__", None)
    fn_globals = getattr(fn, "__globals__", None)
    if isinstance(code, CodeType) and isinstance(fn_globals, dict):
        module = fn_globals.get("__name__", "<string>")
        return _Site(code.co_filename, code.co_firstlineno, module, fn_globals)
    module = getattr(fn, "__module__", None) or "cancelpool"
    return _Site(f"<{module}>", 0, module, None)


def emit(
    category: type[Warning],
    message: str,
    future: Optional[CancellableFuture[Any]] = None,
    *,
    stack: bool = True,
) -> None:
    """Issue a warning about *future*'s task, pointing at the task's code; never raises.

    The message gets the task's stack appended (if *stack*), and the warning the
    location of its user code (``user_site``), through ``warnings.warn_explicit`` with
    that frame's module and registry, so that filters by module and "once per location"
    apply as they would to a ``warnings.warn`` in that code. A filter that turns the
    warning into an error is honoured by logging it, not raising it (module docstring,
    "How warnings reach the user").
    """
    with _Delivery():
        frames = task_frames(future) if future is not None else None
        worker = find_worker(future) if future is not None else None
        item = worker.current_item if worker is not None else None
        try:
            site = user_site(frames, item.fn if item is not None else None)
        except Exception:  # noqa: BLE001 - a task callable whose attributes raise
            site = _Site("<unknown>", 0, "cancelpool", None)
        text = (message + _format_stack(frames)) if stack else message
        registry: Optional[dict[Any, Any]] = None
        if site.module_globals is not None:
            registry = site.module_globals.setdefault("__warningregistry__", {})
        try:
            warnings.warn_explicit(
                text,
                category,
                site.filename,
                site.lineno,
                site.module,
                registry,
                # Not module_globals: like warnings.warn (the C one), leave the source
                # line to linecache; a loader's get_source may raise (python -c's does).
            )
        except Exception as exc:  # noqa: BLE001 - an "error" filter, or a failing showwarning
            _log_unissued(category, text, site, exc)


def _log_unissued(category: type[Warning], text: str, site: _Site, exc: Exception) -> None:
    """Log a warning that issuing raised *exc* for (see "How warnings reach the user")."""
    if isinstance(exc, Warning):
        why = (
            f"A warnings filter turned this {category.__name__} into an error. It is logged, "
            "not raised: cancelpool issues it from its own escalation, in thread "
            f"{threading.current_thread().name!r}, where an exception would stop nothing."
        )
        info = None
    else:
        why = f"Issuing this {category.__name__} raised {exc!r} (warnings.showwarning?)."
        info = exc
    logging.getLogger("cancelpool").error(
        "%s:%s: %s: %s\n(%s)",
        site.filename,
        site.lineno,
        category.__name__,
        text,
        why,
        exc_info=info,
    )


class _Delivery:
    """A warning being issued: ``deliver_pending()`` (the exit hook) waits for it.

    ``with _Delivery():`` around the code that decides on a warning and issues it. Each
    is a fresh ``Event`` in ``_undelivered``, keyed to the thread issuing it, set and
    removed when the block ends however it ends. Costs nothing on a task's path: only
    the escalation's rare steps make one.
    """

    __slots__ = ("done",)

    def __enter__(self) -> None:
        self.done = threading.Event()
        _undelivered[self.done] = threading.current_thread()

    def __exit__(self, *exc_info: object) -> None:
        _undelivered.pop(self.done, None)
        self.done.set()


# Warnings being issued (see _Delivery), with the thread issuing each. Plain dict
# operations, atomic with or without a GIL.
_undelivered: dict[threading.Event, threading.Thread] = {}
#: The longest the exit hook waits for warnings being issued (a ``showwarning`` that
#: blocks must not hang the exit); issuing one takes well under a millisecond.
DELIVERY_TIMEOUT = 5.0


def deliver_pending(timeout: float = DELIVERY_TIMEOUT) -> bool:
    """Wait until every warning being issued by another thread is out (the exit hook).

    Called by the exit hook, before the interpreter stops daemon threads (the timer
    thread among them) where they stand. Warnings whose thread is gone are not waited
    for: a thread that died issuing one, or, in a forked child, the parent's threads.

    Returns:
        Whether none is left after at most *timeout* seconds.
    """
    deadline = time.monotonic() + timeout
    me = threading.current_thread()
    while True:
        pending = [(d, t) for d, t in list(_undelivered.items()) if t is not me and t.is_alive()]
        if not pending:
            return True
        done, _ = pending[0]
        if not done.wait(max(0.0, deadline - time.monotonic())):
            return False


def _warn_force_unavailable(future: CancellableFuture[Any]) -> None:
    """Warn, once per process, that forced cancels cannot interrupt (at *future*'s task)."""
    global _force_unavailable_warned
    with _warn_lock:
        if _force_unavailable_warned:
            return
        _force_unavailable_warned = True
    emit(
        ForceUnavailableWarning,
        f"forced cancellation cannot interrupt tasks on {platform.python_implementation()} "
        "(cancelpool.FORCE_AVAILABLE is False; why: docs/forced-cancellation.md, PyPy): a "
        "forced cancel sets the task's token, then abandons its worker after grace + "
        "abandon_after. Make long tasks check their token to stop them for real.",
        future,
        stack=False,
    )

"""The escalation ladder: what happens to a running task that was cancelled.

Each rung is a state of the task (``cancelpool.TaskState``), reached by one transition
of its future, and every delay is scheduled on the process's one timer thread
(``cancelpool._timer``)::

    cancel()          token set, future cancelled                      -> STOPPING
    + grace           still running:
                        force=False: StillRunningWarning, nothing more
                        force=True:  the task's thread is armed: it raises
                                     TaskInterrupted itself at its next
                                     safe candidate point               -> INTERRUPTED
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
"""

from __future__ import annotations

import platform
import reprlib
import sys
import threading
import traceback
import warnings
import weakref
from typing import TYPE_CHECKING, Any, Optional, Union

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
        """Run *action* on the timer thread at *when*."""
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
            _warn_force_unavailable()
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
        """Detach the worker running this task and start a replacement."""
        future = self.future
        if not future._transition(ABANDON):
            return
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
        emit(category, message + stack_of(self.future))


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
    if item is None:
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


def stack_of(future: CancellableFuture[Any]) -> str:
    """Where the task's thread is now, the task's frames only; never raises."""
    tally = future._tally
    frame = sys._current_frames().get(tally.tid) if tally is not None else None
    if frame is None:
        return ""
    stop = _inject._stop_code()
    frames = []
    while frame is not None and frame.f_code is not stop:
        frames.append(frame)
        frame = frame.f_back
    if not frames:
        return "\nIts thread is not running Python code of the task (blocked in C)."
    lines = traceback.format_list(traceback.extract_stack(frames[0], limit=len(frames)))
    return "\nIts thread is at (most recent call last):\n" + "".join(lines).rstrip()


def emit(category: type[Warning], message: str) -> None:
    """Issue a warning from the timer thread without ever raising there."""
    try:
        warnings.warn(message, category, stacklevel=2)
    except Exception:  # noqa: BLE001 - any filter action that raises
        # A filter turned the warning into an error: in the timer thread nobody would
        # see it raised, so log it instead.
        import logging

        logging.getLogger("cancelpool").warning("%s: %s", category.__name__, message)


def _warn_force_unavailable() -> None:
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
    )

"""The future of a cancellable task, and the task's state machine.

A task's life::

                 cancel()                       the future is cancelled at once;
    PENDING ───────────────────────────────▶ CANCELLED   the code never runs
       │ a worker takes it
       ▼             cancel()                     code ends
    RUNNING ─────────────────▶ STOPPING ─────────────────────────────▶ STOPPED
       │   future cancelled at once,   │  ▲ (forced, after grace)          ▲ ▲
       │   token set                   ▼  │ interrupt again                 │ │
       │                           INTERRUPTING ─────────────────────────────┘ │
       │ code returns or raises        │ (still running abandon_after later)   │
       ▼                               ▼                                      │
    FINISHED   outcome on the future  ABANDONED ── the detached thread returns ┘

``TaskState`` names these states (internally they are small ints, ``PENDING_`` ...,
for speed); ``CancellableFuture._transition`` is the one function that moves a task
between them, on the events ``TAKE``, ``CANCEL``, ``COMPLETE``, ``DROP``, and, for
forced cancellation, ``INTERRUPT`` (send ``TaskInterrupted`` into the task's thread, see
``cancelpool._inject``) and ``ABANDON`` (the worker is detached; see
``cancelpool._escalate``), and ``EXPIRE`` (the task's deadline passed).

A deadline is a cancel whose future *fails* instead of being cancelled: ``EXPIRE`` moves
RUNNING to STOPPING (and, with ``timeout_from="submit"``, PENDING to CANCELLED) like
``CANCEL``, with token reason ``"deadline"``, but sets ``DeadlineExceeded`` as the
future's exception, so its ``_state`` is ``FINISHED``. The rest of the ladder is the
same. The base ``Future`` keeps its own ``_state`` string
(``PENDING``, ``RUNNING``, ``CANCELLED``, ``CANCELLED_AND_NOTIFIED``, ``FINISHED``)
because every inherited method, ``wait()`` and ``as_completed()`` read it; each
transition updates both, so they can never disagree. The mapping is fixed:

=============  ==========================
TaskState      Future._state
=============  ==========================
PENDING        PENDING
CANCELLED      CANCELLED, then CANCELLED_AND_NOTIFIED once taken off the queue
RUNNING        RUNNING
STOPPING       CANCELLED_AND_NOTIFIED
INTERRUPTING    CANCELLED_AND_NOTIFIED
ABANDONED      CANCELLED_AND_NOTIFIED
STOPPED        CANCELLED_AND_NOTIFIED
FINISHED       FINISHED
=============  ==========================

(after ``EXPIRE``, every state but PENDING/RUNNING maps to ``FINISHED``.)

Locking protocol
----------------
A task has exactly one lock: its future's ``_condition`` (an ``RLock`` underneath),
the same one every inherited ``Future`` method takes. ``_transition`` holds it while it
reads and writes both states, the result, the waiters list, and while it sets the
token's flag and counts a cancel or a drop; those two take leaf locks of their own
(``_token._lock``, ``SharedCounts.lock``) and call nothing. A forced interrupt is three
transitions under this lock: ``INTERRUPT`` arms the task's thread (any thread makes it),
``LAND`` is made by the task's own thread at the point where it then raises, and closes
the arm, and ``COMPLETE`` closes an arm still open; both take ``_inject``'s registry lock
inside this one, never the other way round. So an arm can only fire while this task is
cancelled and running on that thread, and never in the next task. User code never runs under the
future's lock: done-callbacks, token callbacks, and the event that wakes ``token.wait()``
all run after it is released, in the thread that made the transition (the event, the
token callbacks, the escalation's start, then the done-callbacks); all of them run even
if a token callback raises ``KeyboardInterrupt``, ``SystemExit`` or ``TaskCancelled``,
which reaches the caller last (``_finish_cancel``). Since cancel and completion both
transition under the same lock, exactly one of them wins: either the result is set and
``cancel()`` returns False, or the future is cancelled and the result is dropped; never
both, and done-callbacks run exactly once.

A task that follows other tokens (a group's ``CancelSource``, the task that submitted it)
holds their callback handles in ``_links``, set under the lock by ``_follow`` and
taken out under the lock by the first transition out of PENDING/RUNNING, which
unregisters them after releasing it; so a link is dropped exactly once, and a token's
callback (``cancel()``) never runs under the future's lock.

``wait_stopped()`` waits on the same condition; every transition into a state whose code
has stopped (``FINISHED``, ``STOPPED``, ``CANCELLED``) notifies it.

Some fields are read or written outside the lock on purpose; each argument below holds
without a GIL too (``docs/design.md``, "Without the GIL"): a plain attribute store or
load is atomic there, but two threads may see two different attributes change in either
order. ``_deadline_at`` (when a deadline counted from the start passes) is written once
by the task's worker before the task's code runs and read by the executor's deadline
check, ordered by the watch's one-slot deque (``cancelpool._deadline``); what the check
decides from it goes through ``_transition`` (EXPIRE) like any event, so a stale read can
only make it try to expire a task that has ended, which does nothing. ``_token`` is made
under the lock and read without it first: a reader sees None (and looks again under the
lock) or a token built before it was stored. ``_shield_depth`` is written and read only
by the task's thread (a shield's entry and exit, and ``_inject``'s decision, which runs in
that thread). ``_arm_open`` and the interrupt counts are read and written under the lock.
``cancel()`` looks at ``_done_callbacks`` for an asyncio
cancel message (``cancelpool._asyncio``): a callback added meanwhile is missed, and the
reason is then the default.
The lock itself is a ``FutureCondition`` (``cancelpool._condition``) for the futures the
executor makes, a plain ``threading.Condition`` for ones user code makes.
"""

from __future__ import annotations

import enum
import functools
import logging
import math
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Optional, TypeVar, Union

from . import _asyncio, _inject
from ._compat import CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED, PENDING, RUNNING
from ._condition import FutureCondition
from ._current import _slot
from ._exceptions import DeadlineExceeded
from ._token import CallbackHandle, CancelToken, _Wakeup
from ._validate import DEFAULT, _Default, check_bool, check_reason, check_timeout

if TYPE_CHECKING:
    from ._escalate import Ladder, Policy
    from ._options import TaskOptions
    from ._stats import SharedCounts, WorkerCounts
    from ._timer import TimerHandle

__all__ = ("CancellableFuture", "TaskState")

LOGGER = logging.getLogger("cancelpool")

T = TypeVar("T")


class TaskState(enum.Enum):
    """Where a task is in its life; see ``CancellableFuture.task_state``.

    A task's code has stopped (or never ran) in ``FINISHED``, ``CANCELLED`` and
    ``STOPPED``; it may still be running in ``RUNNING``, ``STOPPING``, ``INTERRUPTING`` and
    ``ABANDONED``. The last three are the steps of the escalation ladder: the future
    is cancelled in all of them.
    """

    #: Queued; no worker has taken it yet.
    PENDING = "pending"
    #: Its code is running and nobody has asked it to stop.
    RUNNING = "running"
    #: Asked to stop while running: the future is cancelled, the code is still running.
    STOPPING = "stopping"
    #: Its code returned or raised; the outcome is on the future.
    FINISHED = "finished"
    #: Cancelled before it started; its code never ran.
    CANCELLED = "cancelled"
    #: Its code ended after a stop request; whatever it returned or raised was dropped.
    STOPPED = "stopped"
    #: Forced: its thread is armed to raise ``TaskInterrupted`` at its next safe point in
    #: the task's code (or has raised it, and the code has not ended yet); the code is
    #: still running. Named for what is under way, not done: until then ``INTERRUPTED``.
    INTERRUPTING = "interrupting"
    #: Forced, and still running ``abandon_after`` later: its worker was detached and
    #: replaced. The code may go on running in that thread; its outcome will be dropped.
    ABANDONED = "abandoned"


# The state codes the machine runs on: ints, because the transition runs twice per task
# and an Enum costs Python-level __hash__/__eq__ calls there. ``TaskState`` is the
# public face of the same states, ``_PUBLIC[code]``.
PENDING_, RUNNING_, STOPPING_, FINISHED_, CANCELLED_, STOPPED_, INTERRUPTING_, ABANDONED_ = range(8)
_PUBLIC = (
    TaskState.PENDING,
    TaskState.RUNNING,
    TaskState.STOPPING,
    TaskState.FINISHED,
    TaskState.CANCELLED,
    TaskState.STOPPED,
    TaskState.INTERRUPTING,
    TaskState.ABANDONED,
)
_CODE_STOPPED = (FINISHED_, CANCELLED_, STOPPED_)
#: Cancelled while running, code not yet ended: the steps of the escalation ladder.
CODE_STOPPING = (STOPPING_, INTERRUPTING_, ABANDONED_)

# The events: what can happen to a task, the inputs of ``_transition``.
TAKE = 0  # a worker takes the task off the queue to run it
CANCEL = 1  # someone asks the task to stop
COMPLETE = 2  # the task's code returned or raised
DROP = 3  # the task is taken off the queue and will never run
INTERRUPT = 4  # forced: arm the task's thread to raise TaskInterrupted (cancelpool._inject)
ABANDON = 5  # forced: the task's worker is detached from the pool
EXPIRE = 6  # the task's deadline passed
LAND = 7  # forced: the task's own thread raises TaskInterrupted now (cancelpool._inject)


class CancellableFuture(Future[T]):
    """A ``concurrent.futures.Future`` whose ``cancel()`` also stops a running task.

    ``CancellableThreadPoolExecutor.submit()`` returns these. Everything the stdlib
    future does, this one does the same way, except:

    * ``cancel()`` on a *running* task returns True: it sets the task's stop token and
      cancels the future at once (``cancelled()`` and ``done()`` become True,
      ``result()`` raises ``CancelledError``, done-callbacks run, ``wait()`` and
      ``as_completed()`` wake up). The task's code keeps running until it notices; what
      it then returns or raises is dropped (logged at DEBUG on the ``cancelpool``
      logger). ``wait_stopped()`` tells when the code has really stopped.
    * ``running()`` is False once a running task is cancelled (its future is done), while
      its code may still run; ``task_state`` is ``TaskState.STOPPING`` until it ends.

    A future made directly with ``CancellableFuture()``, not by the executor, behaves
    exactly like the stdlib's: it has no task to stop, so ``cancel()`` of a running one
    returns False.
    """

    # Class-level defaults instead of an __init__ and __slots__: an instance stores only
    # what differs (measured: an __init__ override calling the base's costs 0.5 us a
    # task; __slots__ beside the base's __dict__ costs 300 bytes on 3.13). Futures made by
    # the executor skip the base __init__: _for_task sets its attributes itself.

    # The base class's callbacks list (see _compat), declared for the type checker.
    _done_callbacks: list[Callable[[Future[Any]], object]]

    #: The task's state code; None: not bound to a task (made by user code).
    _task: Optional[int] = None
    #: Made on first use (the token property, or a cancel), under the lock.
    _token: Optional[CancelToken] = None
    #: Where cancels and drops of this task are counted; None when unbound.
    _counts: Optional[SharedCounts] = None
    #: The executor's escalation settings, consulted when the running task is cancelled.
    _policy: Optional[Policy] = None
    #: The counts (and thread id) of the worker that took the task.
    _tally: Optional[WorkerCounts] = None
    #: How deep the task's code is in ``cancelpool.shield()`` blocks (its thread writes).
    _shield_depth = 0
    #: Arms of the task's thread for TaskInterrupted (INTERRUPT), and raises (LAND).
    _interrupts_sent = 0
    _interrupts_landed = 0
    #: An arm is open: the task's thread raises at its next safe candidate point.
    _arm_open = False
    #: Why the last arm was not made, or the last candidate point refused (for warnings).
    _refusal: Optional[str] = None
    #: The escalation of this task once cancelled while running (``cancelpool._escalate``).
    _ladder: Optional[Ladder] = None
    #: Per-task options (deadline, escalation) from ``with_options()``/``task_timeout``.
    _options: Optional[TaskOptions] = None
    #: The scheduled expiry of a deadline counted from submission, cancelled when the
    #: task ends.
    _deadline: Optional[TimerHandle] = None
    #: When the deadline of the running task passes, if counted from its start (written
    #: by its worker, read by the executor's ``DeadlineWatch``); infinity: none.
    _deadline_at: float = math.inf
    #: Registrations on the tokens this task follows (a group's, its parent task's);
    #: dropped when the task leaves PENDING/RUNNING.
    _links: Optional[tuple[CallbackHandle, ...]] = None
    #: A task failed by its deadline while queued has since been taken off the queue.
    _dequeued = False
    #: ABANDON happened (under the lock): the worker that completes the task must
    #: leave the pool. Read by that worker after its COMPLETE, under the same lock's
    #: order, so the decision is never missed (``_worker.WorkerThread.run_task``).
    _was_abandoned = False

    @classmethod
    def _for_task(
        cls,
        counts: SharedCounts,
        policy: Optional[Policy],
        options: Optional[TaskOptions] = None,
    ) -> CancellableFuture[Any]:
        """Make the future of a newly submitted task, counted in *counts*.

        Every bound future gets the same attributes in the same order, deadline or not:
        instances whose attributes differ in order or number lose the interpreter's
        shared-key dicts and attribute caches, which cost a task with a deadline 2-3 µs
        (measured, 3.11).
        """
        # Future.__init__'s attributes in its order, but a cheaper condition
        # (cancelpool._condition); tests/test_compat.py checks the list against the
        # stdlib's on every version.
        future: CancellableFuture[Any] = cls.__new__(cls)
        future._condition = FutureCondition()
        future._state = PENDING
        future._result = None
        future._exception = None
        future._waiters = []
        future._done_callbacks = []
        future._task = PENDING_
        future._counts = counts
        future._policy = policy
        future._options = options
        future._deadline = None
        future._deadline_at = math.inf
        return future

    # ------------------------------------------------------------------ public API

    @property
    def token(self) -> CancelToken:
        """The task's stop token (the one ``current_token()`` returns inside the task)."""
        token = self._token
        if token is None:
            with self._condition:
                token = self._token
                if token is None:
                    token = self._token = CancelToken()
        return token

    @property
    def task_state(self) -> TaskState:
        """Where the task is now; requested and actual stops are told apart here.

        For a future not made by the executor, the state follows the future's own.
        """
        with self._condition:
            code = self._task
            if code is not None:
                return _PUBLIC[code]
            return _UNBOUND_STATES[self._state]

    def cancel(
        self,
        *,
        reason: Union[str, _Default] = DEFAULT,
        force: Union[bool, _Default] = DEFAULT,
        grace: Union[float, _Default] = DEFAULT,
    ) -> bool:
        """Cancel the future and, if its task is running, ask the task to stop.

        Args:
            reason: Why, as the task will see it in ``token.reason`` and in the
                ``TaskCancelled`` it raises. Built-in callers use ``"cancel"``,
                ``"shutdown"``, ``"map"`` and ``"exit"``. Default: ``"cancel"``, or,
                when an asyncio task awaiting this future (``loop.run_in_executor``,
                ``asyncio.to_thread``) was cancelled with a message, that message.
            force: Whether to escalate if the running task has not stopped *grace*
                seconds later: interrupt it (``TaskInterrupted``), and if it still runs
                ``abandon_after`` seconds after that, abandon its worker. Default: the
                task's ``force`` option (``with_options``), else the executor's. Passing
                True on a task already stopping (cancelled, or past its deadline)
                escalates it.
            grace: Seconds a running task has to stop on its own before escalation (or,
                without force, before a ``StillRunningWarning``); ``math.inf``: never.
                Default: the task's ``grace`` option, else the executor's.

        Returns:
            True if the future is cancelled now (it was pending, running, or already
            cancelled); False if it had already finished, or failed with
            ``DeadlineExceeded``. The stdlib returns False for a running future; this is
            the one difference.

        Raises:
            TypeError: an argument has the wrong type.
            ValueError: *reason* is empty, or *grace* negative or NaN.
        """
        if reason is DEFAULT:
            reason = (self._done_callbacks and _asyncio.cancel_message(self)) or "cancel"
        else:
            check_reason(reason)
        if force is not DEFAULT:
            check_bool("force", force)
        if grace is not DEFAULT:
            checked = check_timeout("grace", grace, allow_none=False)  # math.inf at most
            assert checked is not None
            grace = checked
        if self._task is None:
            return self._cancel_unbound(reason)
        options = self._options
        if options is not None:  # the task's own defaults (with_options) come first
            if force is DEFAULT:
                force = options.force
            if grace is DEFAULT:
                grace = options.grace
        return self._transition(CANCEL, reason, None, None, None, force, grace)

    def wait_stopped(self, timeout: Optional[float] = None) -> bool:
        """Wait until the task's code is no longer running.

        True at once for a task that never started (cancelled while pending) or that
        already finished. For a running task that was cancelled, this is how to know that
        it has noticed and returned.

        Args:
            timeout: Seconds to wait, ``>= 0``; None (or ``math.inf``) waits without limit.

        Returns:
            True if the code has stopped, False if *timeout* passed first.

        Raises:
            TypeError: *timeout* is not a number or None.
            ValueError: *timeout* is negative or NaN.
            RuntimeError: called from the task's own code (it would wait for itself).
        """
        seconds = check_timeout("timeout", timeout)
        if _slot.future is self:
            raise RuntimeError(
                f"wait_stopped() was called by the code of the task it waits for ({self!r}); "
                "it would wait for itself"
            )
        with self._condition:
            return self._condition.wait_for(self._code_stopped, seconds)

    # The executor-only methods of the base class: a future bound to a task is driven by
    # its worker through _transition; a second driver would desynchronise the two states
    # (with the stdlib's executor, it kills the worker when it sets the real result).

    def set_running_or_notify_cancel(self) -> bool:
        """As ``Future.set_running_or_notify_cancel``, for futures made by user code.

        Raises:
            RuntimeError: the future belongs to a task of a cancelpool executor, which
                alone may start it.
        """
        self._refuse_if_bound("set_running_or_notify_cancel")
        return super().set_running_or_notify_cancel()

    def set_result(self, result: T) -> None:
        """As ``Future.set_result``, for futures made by user code.

        Raises:
            RuntimeError: the future belongs to a task of a cancelpool executor, whose
                outcome only its worker sets.
        """
        self._refuse_if_bound("set_result")
        super().set_result(result)

    def set_exception(self, exception: Optional[BaseException]) -> None:
        """As ``Future.set_exception``, for futures made by user code.

        Raises:
            RuntimeError: the future belongs to a task of a cancelpool executor, whose
                outcome only its worker sets.
        """
        self._refuse_if_bound("set_exception")
        super().set_exception(exception)

    def _refuse_if_bound(self, method: str) -> None:
        if self._task is not None:
            raise RuntimeError(
                f"{method}() on {self!r}: this future belongs to a task of a "
                "CancellableThreadPoolExecutor, and only its worker sets its state; "
                "use cancel() to stop the task"
            )

    def __repr__(self) -> str:
        with self._condition:
            state = self.task_state
            expired = isinstance(self._exception, DeadlineExceeded)
            if expired and state is not TaskState.FINISHED:
                text = "deadline passed" + (
                    "" if state in (TaskState.STOPPED, TaskState.CANCELLED) else ", still stopping"
                )
            elif state is TaskState.STOPPING:
                text = "cancelled, still stopping"
            elif state is TaskState.INTERRUPTING:
                text = "cancelled, interrupting, still stopping"
            elif state is TaskState.ABANDONED:
                text = "cancelled, worker abandoned"
            elif state is TaskState.FINISHED:
                if self._exception is not None:
                    text = f"finished raised {type(self._exception).__name__}"
                else:
                    text = f"finished returned {type(self._result).__name__}"
            else:
                text = "cancelled" if state is TaskState.STOPPED else state.value
            token = self._token
            if token is not None and token.cancelled and state is not TaskState.FINISHED:
                text += f" reason={token.reason!r}"
        return f"<{type(self).__name__} at {id(self):#x} state={text}>"

    # ------------------------------------------------------------- the state machine

    def _stopped_now(self) -> bool:
        """Whether the task's code has stopped; ``wait_stopped(0)`` without its checks."""
        with self._condition:
            return self._code_stopped()

    def _code_stopped(self) -> bool:
        """Whether the task's code has stopped (or never ran). Call under the lock."""
        code = self._task
        if code is None:
            return self._state in (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED)
        return code in _CODE_STOPPED

    def _transition(
        self,
        event: int,
        reason: str = "cancel",
        result: Any = None,
        exception: Optional[BaseException] = None,
        tally: Optional[WorkerCounts] = None,
        force: Union[bool, _Default] = DEFAULT,
        grace: Union[float, _Default] = DEFAULT,
    ) -> bool:
        """Apply *event* (TAKE, CANCEL, COMPLETE, DROP, INTERRUPT, LAND, ABANDON, EXPIRE).

        The only place a bound future changes state; see the module docstring. A worker
        passes its *tally* with TAKE and COMPLETE, counted under this future's lock
        (before any callback runs, so a failing callback cannot skew the counts). CANCEL
        and EXPIRE take the escalation overrides *force* and *grace*, EXPIRE its
        ``DeadlineExceeded`` as *exception*. LAND is made by the task's own thread only
        (``cancelpool._inject.candidate``).

        Returns:
            For TAKE, whether the worker should run the task; for CANCEL, what
            ``cancel()`` returns; for COMPLETE, whether the outcome was kept (False: the
            future was cancelled, the outcome dropped); for DROP, True; for INTERRUPT,
            whether the task's thread is armed (else ``_refusal`` says why not); for
            LAND, whether to raise ``TaskInterrupted`` now (the arm is closed); for
            ABANDON, whether the task was still running; for EXPIRE, whether the
            deadline applied (the task had not ended nor been cancelled).
        """
        wakeup: Optional[_Wakeup] = None
        links: Optional[tuple[CallbackHandle, ...]] = None
        callbacks = False
        escalate = False
        answer = True
        with self._condition:
            old = self._task
            if event == TAKE:
                if old == PENDING_:  # the hot path: one per task, kept short
                    self._state = RUNNING
                    self._task = RUNNING_
                    if tally is not None:
                        tally.started += 1
                        self._tally = tally
                    return True
                if old == CANCELLED_ and self._state == CANCELLED:
                    self._notify_cancelled()
                    return False
                if old == CANCELLED_ and self._state == FINISHED and not self._dequeued:
                    self._dequeued = True
                    return False  # its deadline passed while it was queued
                raise RuntimeError(f"cannot start {self!r}: it was already taken")
            if event == COMPLETE:
                if old == RUNNING_:
                    new = FINISHED_
                    self._set_outcome(result, exception)
                    callbacks = True
                    if tally is not None:
                        if exception is None:
                            tally.completed += 1
                        else:
                            tally.failed += 1
                elif old in CODE_STOPPING:
                    new = STOPPED_
                    if tally is not None:
                        tally.stopped += 1
                    ladder = self._ladder
                    if ladder is not None and ladder.handle is not None:
                        # Its next step has nothing left to do: withdraw it (lock-free),
                        # so that it keeps no timer thread alive (Ladder.schedule).
                        ladder.handle.cancel()
                    if self._arm_open:
                        # We are the task's thread: close the arm, so that it can never
                        # fire in this worker's next task.
                        self._arm_open = False
                        _inject.disarm(self, own_thread=True)
                else:
                    raise RuntimeError(f"cannot complete {self!r}: it is not running")
                self._condition.notify_all()
            elif event == CANCEL:
                if old == PENDING_:
                    new = CANCELLED_
                    self._state = CANCELLED
                    # Waiters are told when the item leaves the queue (TAKE or DROP),
                    # exactly as the stdlib does for a pending future.
                elif old == RUNNING_:
                    new = STOPPING_
                    self._notify_cancelled()
                    escalate = True
                else:
                    # Already cancelled, stopping, or finished. cancel(force=True) of a
                    # task already stopping starts (or hardens) its escalation.
                    done = self._state == FINISHED  # finished, or failed by its deadline
                    escalate = old in CODE_STOPPING and force is True
                    if not escalate or old is None:
                        return not done
                    # Harden the escalation (below); cancel() still reports whether the
                    # future is cancelled: not if its deadline failed it.
                    answer = not done
                    new = old
                if new != old:
                    wakeup = self.token._cancel(reason)
                    callbacks = True
                    self._condition.notify_all()
                    self._count(new)
            elif event == LAND:
                # In the task's own thread, at a candidate point judged safe: raise only
                # if this task is still cancelled and armed (its thread's arm is this
                # future's: ``_inject.candidate`` checked), and close the arm first.
                if old not in CODE_STOPPING or not self._arm_open:
                    return False
                self._arm_open = False
                self._interrupts_landed += 1
                _inject.disarm(self, own_thread=True)
                return True
            elif event == INTERRUPT:
                if old != STOPPING_ and old != INTERRUPTING_:
                    self._refusal = "the task's code is no longer running"
                    return False
                if self._arm_open:
                    return True
                tally = self._tally
                why = "the task has no worker" if tally is None else _inject.arm(self, tally)
                if why is not None:
                    self._refusal = why
                    return False
                self._arm_open = True
                self._interrupts_sent += 1
                new = INTERRUPTING_
                self._count(new)
            elif event == ABANDON:
                if old != STOPPING_ and old != INTERRUPTING_:
                    return False
                new = ABANDONED_
                self._was_abandoned = True
                if self._arm_open:
                    _inject.abandoned(self)  # still armed, without the process-wide events
                self._count(new)
                self._condition.notify_all()
            elif event == EXPIRE:
                if old == RUNNING_:
                    new = STOPPING_
                    escalate = True
                elif old == PENDING_:  # timeout_from="submit": it will never run
                    new = CANCELLED_
                else:
                    return False
                self._set_outcome(None, exception)
                wakeup = self.token._cancel("deadline")
                callbacks = True
                self._condition.notify_all()
                self._count(new, expired=True)
            else:  # DROP
                if old == CANCELLED_ and self._state == CANCELLED:
                    self._notify_cancelled()
                    return True
                if old == CANCELLED_ and self._state == FINISHED and not self._dequeued:
                    self._dequeued = True
                    return True  # its deadline passed while it was queued
                if old != PENDING_:
                    raise RuntimeError(f"cannot drop {self!r}: it was already taken")
                if exception is not None:
                    new = FINISHED_
                    self._set_outcome(None, exception)
                else:
                    new = CANCELLED_
                    wakeup = self.token._cancel(reason)
                    self._notify_cancelled()
                callbacks = True
                self._condition.notify_all()
                self._count(new)
            self._task = new
            if self._links is not None and new != RUNNING_:
                # No longer pending or running: it follows no other token (_follow).
                links, self._links = self._links, None
        if links is not None:
            for handle in links:
                handle.unregister()
        if wakeup is not None:
            # A token callback's KeyboardInterrupt, SystemExit or TaskCancelled reaches
            # our caller only once the cancel is complete (``_finish_cancel``).
            stop = wakeup.run()
            if stop is not None:
                self._finish_cancel(stop, escalate, force, grace)
        if escalate and self._policy is not None:
            self._policy.escalate(self, force, grace)
        if callbacks:
            self._invoke_callbacks()  # type: ignore[attr-defined]
        elif new == STOPPED_:
            if LOGGER.isEnabledFor(logging.DEBUG):
                what = f"raised {exception!r}" if exception is not None else f"returned {result!r}"
                LOGGER.debug("task of %r stopped after its cancel and %s; dropped", self, what)
            return False
        return answer

    def _arm_deadline(self, options: TaskOptions) -> None:
        """Schedule this task's expiry ``options.timeout`` seconds from now.

        For a deadline counted from submission: called by ``submit()`` before it queues
        the task, on the executor's scheduler, the one its escalations use. (A deadline
        counted from the start is watched by the executor's ``DeadlineWatch``.)
        """
        assert options.timeout is not None and self._policy is not None
        if options.timeout == 0:
            # Passed already: the task never runs. Expired here, not on the timer
            # thread, so that no worker can take it first.
            self._expire()
            return
        self._deadline = self._policy.scheduler.call_later(options.timeout, self._expire)

    def _expire(self) -> None:
        """The deadline's timer action (on the timer thread)."""
        options = self._options
        assert options is not None and options.timeout is not None
        self._transition(
            EXPIRE,
            "deadline",
            None,
            DeadlineExceeded(options.timeout, options.timeout_from),
            None,
            options.force,
            options.grace,
        )

    def _follow(self, tokens: tuple[CancelToken, ...]) -> None:
        """Cancel this task when any of *tokens* is cancelled, with that token's reason.

        Called by ``submit()`` before the task is queued; a token already cancelled
        cancels the task at once. The registrations are dropped when the task leaves
        PENDING/RUNNING (``_transition``), or here if it already has.
        """
        handles = tuple(
            token.register(functools.partial(self._cancel_with_reason_of, token))
            for token in tokens
        )
        with self._condition:
            if self._task == PENDING_ or self._task == RUNNING_:
                self._links = handles
                return
        for handle in handles:
            handle.unregister()

    def _cancel_with_reason_of(self, token: CancelToken) -> None:
        self.cancel(reason=token.reason or "cancel")

    def _count(self, new: int, expired: bool = False) -> None:
        """Under the lock: count a transition made outside the worker.

        *expired*: the transition is a deadline's (to STOPPING, or to CANCELLED while
        still queued), counted apart from cancels.
        """
        counts = self._counts
        if counts is not None:
            with counts.lock:
                if expired:
                    if new == STOPPING_:
                        counts.expired_running += 1
                    else:
                        counts.expired_pending += 1
                elif new == CANCELLED_:
                    counts.cancelled_pending += 1
                elif new == STOPPING_:
                    counts.cancelled_running += 1
                elif new == INTERRUPTING_:
                    counts.interrupts += 1
                elif new == ABANDONED_:
                    counts.abandoned += 1
                else:
                    counts.broken += 1

    def _notify_cancelled(self) -> None:
        """Under the lock: mark cancelled and tell wait()/as_completed() waiters."""
        self._state = CANCELLED_AND_NOTIFIED
        for waiter in self._waiters:
            waiter.add_cancelled(self)

    def _set_outcome(self, result: Any, exception: Optional[BaseException]) -> None:
        """Under the lock: what set_result()/set_exception() do, minus the callbacks."""
        self._state = FINISHED
        if exception is None:
            self._result = result
            for waiter in self._waiters:
                waiter.add_result(self)
        else:
            self._exception = exception
            for waiter in self._waiters:
                waiter.add_exception(self)

    def _cancel_unbound(self, reason: str) -> bool:
        """cancel() of a future with no task: the stdlib's steps, plus the token."""
        with self._condition:
            if self._state in (RUNNING, FINISHED):
                return False
            if self._state in (CANCELLED, CANCELLED_AND_NOTIFIED):
                return True
            self._state = CANCELLED
            wakeup = self.token._cancel(reason)
            self._condition.notify_all()
        if wakeup is not None:
            stop = wakeup.run()
            if stop is not None:
                self._finish_cancel(stop)
        self._invoke_callbacks()  # type: ignore[attr-defined]
        return True

    def _finish_cancel(
        self,
        stop: BaseException,
        escalate: bool = False,
        force: Union[bool, _Default] = DEFAULT,
        grace: Union[float, _Default] = DEFAULT,
    ) -> NoReturn:
        """Complete a cancel whose token callback raised *stop*, then raise it.

        *stop* is the first ``KeyboardInterrupt``, ``SystemExit``, ``TaskCancelled`` (any
        ``BaseException`` but an ``Exception``) that a token callback raised; every
        other callback has run (``cancelpool._token``). The escalation is started and the
        done-callbacks run as after any cancel, with no exception being handled. (A
        ``BaseException`` from a done-callback skips the later ones, as the stdlib's
        does; *stop*, the earlier, still wins, with it as its ``__context__``.)

        Raises:
            BaseException: *stop*.
        """
        try:
            if escalate and self._policy is not None:
                self._policy.escalate(self, force, grace)
            self._invoke_callbacks()  # type: ignore[attr-defined]
        finally:
            try:
                raise stop
            finally:
                del stop  # no cycle through this frame's traceback


_UNBOUND_STATES = {
    PENDING: TaskState.PENDING,
    RUNNING: TaskState.RUNNING,
    CANCELLED: TaskState.CANCELLED,
    CANCELLED_AND_NOTIFIED: TaskState.CANCELLED,
    FINISHED: TaskState.FINISHED,
}

"""The future of a cancellable task, and the task's state machine.

A task's life::

                 cancel()                       the future is cancelled at once;
    PENDING ───────────────────────────────▶ CANCELLED   the code never runs
       │ a worker takes it
       ▼             cancel()
    RUNNING ─────────────────▶ STOPPING ──────────────▶ STOPPED
       │   future cancelled at once,   code still        code ended; whatever it
       │   token set                   running           returned or raised is dropped
       │ code returns or raises
       ▼
    FINISHED   result or exception set on the future

``TaskState`` names these states; ``CancellableFuture._transition`` is the one function
that moves a task between them. The base ``Future`` keeps its own ``_state`` string
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
STOPPED        CANCELLED_AND_NOTIFIED
FINISHED       FINISHED
=============  ==========================

Locking protocol
----------------
A task has exactly one lock: its future's ``_condition`` (an ``RLock`` underneath),
the same one every inherited ``Future`` method takes. ``_transition`` holds it while it
reads and writes both states, the result, the waiters list, and while it sets the
token's flag and moves the executor's counts; those two take leaf locks of their own
(``_token._lock``, ``TaskCounts.lock``) and call nothing. User code never runs under the
future's lock: done-callbacks, token callbacks, and the event that wakes ``token.wait()``
all run after it is released, in the thread that made the transition. Since cancel and
completion both transition under the same lock, exactly one of them wins: either the
result is set and ``cancel()`` returns False, or the future is cancelled and the result
is dropped; never both, and done-callbacks run exactly once.

``wait_stopped()`` waits on the same condition; every transition into a state whose code
has stopped (``FINISHED``, ``STOPPED``, ``CANCELLED``) notifies it.
"""

from __future__ import annotations

import enum
import logging
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Optional, TypeVar

from ._compat import CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED, PENDING, RUNNING
from ._token import CancelToken, _Wakeup
from ._validate import check_reason, check_timeout

if TYPE_CHECKING:
    from ._stats import TaskCounts

__all__ = ("CancellableFuture", "TaskState")

LOGGER = logging.getLogger("cancelpool")

T = TypeVar("T")


class TaskState(enum.Enum):
    """Where a task is in its life; see ``CancellableFuture.task_state``.

    A task's code has stopped (or never ran) in ``FINISHED``, ``CANCELLED`` and
    ``STOPPED``; it may still be running in ``RUNNING`` and ``STOPPING``.
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


_CODE_STOPPED = frozenset({TaskState.FINISHED, TaskState.CANCELLED, TaskState.STOPPED})


class _Event(enum.Enum):
    """What can happen to a task; the inputs of ``_transition``."""

    TAKE = "a worker takes the task off the queue to run it"
    CANCEL = "someone asks the task to stop"
    COMPLETE = "the task's code returned or raised"
    DROP = "the task is taken off the queue and will never run"


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

    __slots__ = ("_counts", "_task_state", "_token")

    def __init__(self) -> None:
        super().__init__()
        self._token = CancelToken()
        # None: not bound to a task (made by user code, not by our executor).
        self._task_state: Optional[TaskState] = None
        self._counts: Optional[TaskCounts] = None

    @classmethod
    def _for_task(cls, counts: TaskCounts) -> CancellableFuture[Any]:
        """Make the future of a newly submitted task, counted as PENDING in *counts*."""
        future: CancellableFuture[Any] = cls()
        future._task_state = TaskState.PENDING
        future._counts = counts
        counts.added(TaskState.PENDING)
        return future

    # ------------------------------------------------------------------ public API

    @property
    def token(self) -> CancelToken:
        """The task's stop token (the one ``current_token()`` returns inside the task)."""
        return self._token

    @property
    def task_state(self) -> TaskState:
        """Where the task is now: requested and actual stops are told apart here.

        For a future not made by the executor, the state follows the future's own.
        """
        with self._condition:
            state = self._task_state
            if state is not None:
                return state
            return _UNBOUND_STATES[self._state]

    def cancel(self, *, reason: str = "cancel") -> bool:
        """Cancel the future and, if its task is running, ask the task to stop.

        Args:
            reason: Why, as the task will see it in ``token.reason`` and in the
                ``TaskCancelled`` it raises. Built-in callers use ``"cancel"``,
                ``"shutdown"`` and ``"map"``.

        Returns:
            True if the future is cancelled now (it was pending, running, or already
            cancelled); False if it had already finished. The stdlib returns False for a
            running future; this is the one difference.

        Raises:
            TypeError: *reason* is not a str.
            ValueError: *reason* is empty.
        """
        check_reason(reason)
        if self._task_state is None:
            return self._cancel_unbound(reason)
        return self._transition(_Event.CANCEL, reason=reason)

    def wait_stopped(self, timeout: Optional[float] = None) -> bool:
        """Wait until the task's code is no longer running.

        True at once for a task that never started (cancelled while pending) or that
        already finished. For a running task that was cancelled, this is how to know that
        it has noticed and returned.

        Args:
            timeout: Seconds to wait, ``>= 0``; None waits without limit.

        Returns:
            True if the code has stopped, False if *timeout* passed first.

        Raises:
            TypeError: *timeout* is not a number or None.
            ValueError: *timeout* is negative or NaN.
        """
        seconds = check_timeout("timeout", timeout)
        with self._condition:
            return self._condition.wait_for(self._code_stopped, seconds)

    def __repr__(self) -> str:
        with self._condition:
            state = self.task_state
            if state is TaskState.STOPPING:
                text = "cancelled, still stopping"
            elif state is TaskState.FINISHED:
                if self._exception is not None:
                    text = f"finished raised {type(self._exception).__name__}"
                else:
                    text = f"finished returned {type(self._result).__name__}"
            else:
                text = "cancelled" if state is TaskState.STOPPED else state.value
            if self._token.cancelled and state is not TaskState.FINISHED:
                text += f" reason={self._token.reason!r}"
        return f"<{type(self).__name__} at {id(self):#x} state={text}>"

    # ------------------------------------------------------------- the state machine

    def _code_stopped(self) -> bool:
        """Whether the task's code has stopped (or never ran). Call under the lock."""
        state = self._task_state
        if state is None:
            return self._state in (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED)
        return state in _CODE_STOPPED

    def _transition(
        self,
        event: _Event,
        *,
        reason: str = "cancel",
        result: Any = None,
        exception: Optional[BaseException] = None,
    ) -> bool:
        """Apply *event* to the task: the only place a bound future changes state.

        Returns:
            For TAKE, whether the worker should run the task; for CANCEL, what
            ``cancel()`` returns; for COMPLETE and DROP, True.
        """
        wakeup: Optional[_Wakeup] = None
        callbacks = False
        dropped = False
        with self._condition:
            old = self._task_state
            assert old is not None, "_transition on a future without a task"
            if event is _Event.TAKE:
                if old is TaskState.PENDING:
                    new, answer = TaskState.RUNNING, True
                    self._state = RUNNING
                elif old is TaskState.CANCELLED and self._state == CANCELLED:
                    self._notify_cancelled()
                    return False
                else:
                    raise RuntimeError(f"cannot start {self!r}: it was already taken")
            elif event is _Event.CANCEL:
                if old is TaskState.PENDING:
                    new, answer = TaskState.CANCELLED, True
                    self._state = CANCELLED
                    # Waiters are told when the item leaves the queue (TAKE or DROP),
                    # exactly as the stdlib does for a pending future.
                elif old is TaskState.RUNNING:
                    new, answer = TaskState.STOPPING, True
                    self._notify_cancelled()
                else:
                    return old is not TaskState.FINISHED
                wakeup = self._token._cancel(reason)
                callbacks = True
                self._condition.notify_all()
            elif event is _Event.COMPLETE:
                if old is TaskState.RUNNING:
                    new, answer = TaskState.FINISHED, True
                    self._set_outcome(result, exception)
                    callbacks = True
                elif old is TaskState.STOPPING:
                    new, answer = TaskState.STOPPED, True
                    dropped = True
                else:
                    raise RuntimeError(f"cannot complete {self!r}: it is not running")
                self._condition.notify_all()
            else:  # _Event.DROP
                answer = True
                if old is TaskState.CANCELLED and self._state == CANCELLED:
                    self._notify_cancelled()
                    return True
                if old is not TaskState.PENDING:
                    raise RuntimeError(f"cannot drop {self!r}: it was already taken")
                if exception is not None:
                    new = TaskState.FINISHED
                    self._set_outcome(None, exception)
                else:
                    new = TaskState.CANCELLED
                    wakeup = self._token._cancel(reason)
                    self._notify_cancelled()
                callbacks = True
                self._condition.notify_all()
            self._task_state = new
            if self._counts is not None:
                failed = new is TaskState.FINISHED and exception is not None
                self._counts.moved(old, new, failed=failed)
        if wakeup is not None:
            wakeup.fire()
        if callbacks:
            self._invoke_callbacks()  # type: ignore[attr-defined]
        if dropped and LOGGER.isEnabledFor(logging.DEBUG):
            what = f"raised {exception!r}" if exception is not None else f"returned {result!r}"
            LOGGER.debug("task of %r stopped after its cancel and %s; dropped", self, what)
        return answer

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
            wakeup = self._token._cancel(reason)
            self._condition.notify_all()
        if wakeup is not None:
            wakeup.fire()
        self._invoke_callbacks()  # type: ignore[attr-defined]
        return True


_UNBOUND_STATES = {
    PENDING: TaskState.PENDING,
    RUNNING: TaskState.RUNNING,
    CANCELLED: TaskState.CANCELLED,
    CANCELLED_AND_NOTIFIED: TaskState.CANCELLED,
    FINISHED: TaskState.FINISHED,
}

"""The exceptions and warnings cancelpool raises.

The tree, with the builtin each one behaves like::

    BaseException
     └── TaskCancelled               a task's code was asked to stop (reason attached)
          └── TaskInterrupted        ... and, not stopping, was interrupted: raised by
                                     its own thread, armed by a forced cancel

    Exception
     ├── RuntimeError                current_token() outside a task, submit() after shutdown
     ├── concurrent.futures.TimeoutError
     │    └── DeadlineExceeded       on the future of a task whose deadline passed
     └── Warning
          └── RuntimeWarning
               └── CancelPoolWarning            base: filter them all with this
                    ├── StillRunningWarning     running `grace` after a cancel that does
                    │                           not escalate
                    ├── InterruptSwallowedWarning  a forced TaskInterrupted was caught
                    │                           and the task ran on
                    ├── WorkerAbandonedWarning  a worker stuck in a cancelled task was
                    │                           detached and replaced
                    └── ForceUnavailableWarning this interpreter cannot interrupt a task;
                                                forced cancel is cooperative + abandon

cancelpool raises the stdlib's own exceptions wherever the stdlib would:
``concurrent.futures.CancelledError`` from ``result()`` of a cancelled future,
``concurrent.futures.TimeoutError`` from a wait that timed out (on 3.9 and 3.10 that is
a class of its own, not the builtin ``TimeoutError``), and
``concurrent.futures.thread.BrokenThreadPool`` when an initializer failed.
"""

from __future__ import annotations

from ._compat import FuturesTimeoutError

__all__ = (
    "CancelPoolWarning",
    "DeadlineExceeded",
    "ForceUnavailableWarning",
    "InterruptSwallowedWarning",
    "StillRunningWarning",
    "TaskCancelled",
    "TaskInterrupted",
    "WorkerAbandonedWarning",
)


class TaskCancelled(BaseException):
    """Raised inside a task whose stop was requested.

    ``token.raise_if_cancelled()``, ``token.sleep()`` and ``cancelpool.checkpoint()`` raise
    it once the task's token is cancelled. Let it propagate out of the task: the worker
    catches it, the future is already cancelled, and the worker goes on to the next task.

    Why ``BaseException`` and not ``Exception``: a stop request must not be mistaken for an
    error. Task code routinely says ``except Exception:`` to log and carry on, or to retry;
    if cancellation were an ``Exception`` such code would swallow the stop and keep
    running. ``KeyboardInterrupt``, ``SystemExit``, ``GeneratorExit``, trio's
    ``Cancelled`` and asyncio's ``CancelledError`` (since 3.8) derive from
    ``BaseException`` for the same reason. Code that must clean up uses ``finally:`` or
    ``with``, which run for it as for any exception.

    Attributes:
        reason: Why the stop was requested, e.g. ``"cancel"`` (``future.cancel()``),
            ``"shutdown"`` (``executor.shutdown(...)`` cancelled running tasks) or
            ``"map"`` (a ``map()`` result iterator was closed or raised), or the text
            passed as ``future.cancel(reason=...)``.
    """

    reason: str

    def __init__(self, reason: str = "cancel") -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return f"task cancelled (reason: {self.reason})"


class TaskInterrupted(TaskCancelled):
    """Injected into a task that did not stop after a forced cancel's grace period.

    A ``TaskCancelled``, so ``except Exception:`` in task code does not catch it and the
    worker treats it as any stop. The task's own thread raises it, at a loop back-edge or
    a function entry of the task's code (the traceback shows where), never inside a
    ``cancelpool.shield()`` block, an ``except``/``finally`` body, a context manager's
    ``__enter__``/``__exit__``, or the stdlib's threading, queue or logging code (see
    :doc:`/forced-cancellation`).

    Task code that catches it anyway (a bare ``except:``) keeps running; cancelpool then
    warns (``InterruptSwallowedWarning``), arms it again, and finally abandons the worker.
    """

    def __init__(self, reason: str = "cancel") -> None:
        super().__init__(reason)

    def __str__(self) -> str:
        return f"task interrupted by forced cancellation (reason: {self.reason})"

    def __reduce__(self) -> tuple[type[TaskInterrupted], tuple[str]]:
        return (type(self), (self.reason,))


class DeadlineExceeded(FuturesTimeoutError):  # noqa: N818 - says what happened, as TaskCancelled
    """The exception on the future of a task whose deadline passed.

    ``future.result()`` raises it and ``future.exception()`` returns it. It is a
    ``concurrent.futures.TimeoutError`` (on 3.11+ that is the builtin ``TimeoutError``),
    so code that catches timeouts catches it, and not a ``CancelledError``: a caller can
    tell "it took too long" from "someone cancelled it". Inside the task, the deadline
    shows as a cancel of its token with reason ``"deadline"`` (``TaskCancelled``).

    Attributes:
        timeout: The task's time limit, in seconds.
        counted_from: ``"start"`` (the limit counted from when a worker started the task)
            or ``"submit"`` (from when it was submitted).
    """

    timeout: float
    counted_from: str

    def __init__(self, timeout: float, counted_from: str = "start") -> None:
        since = "it started" if counted_from == "start" else "it was submitted"
        super().__init__(
            f"the task's deadline passed: it did not finish within {timeout:g} s of when "
            f"{since}; its token was cancelled with reason 'deadline'"
        )
        self.timeout = timeout
        self.counted_from = counted_from

    def __reduce__(self) -> tuple[type[DeadlineExceeded], tuple[float, str]]:
        return (type(self), (self.timeout, self.counted_from))


class CancelPoolWarning(RuntimeWarning):
    """Base class of cancelpool's warnings.

    ``warnings.filterwarnings("ignore", category=cancelpool.CancelPoolWarning)`` silences
    all of them; each subclass is documented with what to do about it.
    """


class StillRunningWarning(CancelPoolWarning):
    """A task was still running ``grace`` seconds after a cancel that does not escalate.

    The message names the task and shows where its thread is. Fix: make the task check
    its token there, or cancel with ``force=True``.
    """


class InterruptSwallowedWarning(CancelPoolWarning):
    """A task caught the ``TaskInterrupted`` raised in it and kept running.

    Usually a bare ``except:`` or ``except BaseException:``; let ``TaskCancelled``
    propagate. cancelpool arms it again, then abandons the worker.
    """


class WorkerAbandonedWarning(CancelPoolWarning):
    """A worker whose cancelled task did not stop was detached and replaced.

    Its thread keeps running the task's code (typically stuck in a C call that no
    exception can interrupt) until that returns; it then exits without taking another
    task. The pool started a new worker in its place.
    """


class ForceUnavailableWarning(CancelPoolWarning):
    """This interpreter cannot raise an exception in another thread.

    Forced cancellation degrades to the cooperative cancel plus abandoning the worker;
    ``cancelpool.FORCE_AVAILABLE`` says which applies. Warned once per process.
    """

"""The exceptions cancelpool raises.

The tree, with the builtin each one behaves like::

    BaseException
     └── TaskCancelled              a task's code was asked to stop (reason attached)

    Exception
     └── RuntimeError
          └── (plain RuntimeError)  current_token() outside a task, submit() after shutdown

cancelpool raises the stdlib's own exceptions wherever the stdlib would:
``concurrent.futures.CancelledError`` from ``result()`` of a cancelled future,
``concurrent.futures.TimeoutError`` from a wait that timed out (on 3.9 and 3.10 that is
a class of its own, not the builtin ``TimeoutError``), and
``concurrent.futures.thread.BrokenThreadPool`` when an initializer failed.
"""

from __future__ import annotations

__all__ = ("TaskCancelled",)


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

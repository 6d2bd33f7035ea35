"""Which task is running on this thread: ``current_token()`` and friends.

A worker puts the task's future in a thread-local slot right before it calls the task's
function and clears it right after, before it touches the future again, so
done-callbacks that run in the worker never see the finished task. The token itself is
made on first use (``future.token``), so a task that never asks for one costs none.

Why a thread-local and not a ``contextvars.ContextVar``: a context is copied into other
threads (``asyncio.to_thread``, ``contextvars.copy_context().run`` in user thread pools),
and a copied token would make work that the task hands to another executor stop when the
task is cancelled. Cancellation of such work is opt-in and explicit, never leaked.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from ._future import CancellableFuture
    from ._token import CancelToken

__all__ = ("checkpoint", "current_token", "current_token_or_none", "shielded")


class _Slot(threading.local):
    future: Optional[CancellableFuture[Any]] = None


_slot = _Slot()


def current_token() -> CancelToken:
    """Return the stop token of the task running on this thread.

    Returns:
        The token of the cancelpool task whose code is calling.

    Raises:
        RuntimeError: not called from inside a task run by a
            ``CancellableThreadPoolExecutor``. Code that runs both inside and outside
            tasks should call :func:`current_token_or_none` or :func:`checkpoint`.
    """
    future = _slot.future
    if future is None:
        raise RuntimeError(
            "current_token() was called outside a cancelpool task (thread "
            f"{threading.current_thread().name!r}); call it from a function submitted to "
            "a CancellableThreadPoolExecutor, or use current_token_or_none() in code that "
            "also runs elsewhere"
        )
    return future.token


def current_token_or_none() -> Optional[CancelToken]:
    """Return the running task's stop token, or None outside a cancelpool task."""
    future = _slot.future
    return None if future is None else future.token


def checkpoint() -> None:
    """Raise :class:`TaskCancelled` if the running task was asked to stop.

    Outside a cancelpool task it does nothing, so library code can call it freely; inside
    a ``shield()`` block it does nothing either (the shield's exit raises instead).

    Raises:
        TaskCancelled: the running task's token is cancelled.
    """
    future = _slot.future
    if future is not None:
        token = future._token  # None: never made, so never cancelled
        if token is not None:
            token.raise_if_cancelled()


def shielded(token: CancelToken) -> bool:
    """Whether *token* belongs to the task running here and it is inside a shield."""
    future = _slot.future
    return future is not None and future._token is token and future._shield_depth > 0

"""``cancelpool.shield()``: a block that cancellation waits for.

Inside a shield, the running task's cooperative checks (``token.raise_if_cancelled()``,
``token.sleep()``, ``checkpoint()``) do not raise, and a forced interrupt is not raised.
When the outermost shield exits, a cancel that was deferred is delivered once, as
``TaskCancelled``; a forced interrupt still armed is raised at the task's next safe
candidate point after the shield. Shields nest; outside a cancelpool task they do nothing,
so library code may use them freely.

The depth lives on the task's future and is written and read only by the task's own
thread: by the shield, and by the forced interrupt's decision, which that thread makes
itself (``cancelpool._inject``).
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any, Optional

from ._current import _slot
from ._exceptions import TaskCancelled

if TYPE_CHECKING:
    from ._future import CancellableFuture

__all__ = ("shield",)


class shield:  # noqa: N801 - a context manager named like a function, as contextlib's
    """Defer the running task's cancellation until the block exits.

    Use it around code that must not be cut short: a lock taken and released, a file
    written and renamed, a protocol exchange::

        with cancelpool.shield():
            with lock:
                update_shared_state()

    A shield is not a way to ignore cancellation: the block should be short. A forced
    cancel waits for it (the escalation keeps checking), and abandons the worker if the
    block outlasts ``abandon_after``.
    """

    __slots__ = ("_future",)

    def __init__(self) -> None:
        self._future: Optional[CancellableFuture[Any]] = None

    def __enter__(self) -> shield:
        future = _slot.future
        if future is not None:
            future._shield_depth += 1
            self._future = future
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        future = self._future
        if future is None:
            return
        self._future = None
        future._shield_depth -= 1
        if future._shield_depth or exc_type is not None:
            return  # still shielded, or already leaving with an exception
        token = future._token
        if token is not None and token.cancelled:
            raise TaskCancelled(token.reason or "cancel")

    @staticmethod
    def active() -> bool:
        """Whether the calling code is inside a shield of a running task."""
        future = _slot.future
        return future is not None and future._shield_depth > 0

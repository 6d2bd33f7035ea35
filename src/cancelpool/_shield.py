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

A shield instance keeps no state (issue 11): ``__enter__`` and ``__exit__`` both find the
task in the calling thread's slot (``cancelpool._current``), so one instance may be used
nested, again, and by many tasks at once (a module-level ``SHIELD = shield()``). An
instance that remembered the task it was entered in would be overwritten by the second
use, and one task would stay shielded for ever.

The slot names the same task at exit as at entry, because a worker changes it only
between two tasks, when every ``with`` block of the first has ended. The one exception is
a ``with`` block that is suspended: a generator (or coroutine) that yields inside a shield
and is resumed, closed or collected after its task ended, or in another task or thread.
Its exit then belongs to whatever task runs it, and nothing tells which task entered it.
We do not try: that task stays shielded until it ends (its forced cancel can only abandon
it), and the exit leaves the running task's depth alone if it has no shield open (a
``RuntimeWarning`` says so) instead of making it negative. Do not yield inside a shield
(trio forbids the same for its cancel scopes, for the same reason).
"""

from __future__ import annotations

import warnings
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

    An instance holds no state: it may be kept (``SHIELD = cancelpool.shield()`` at
    module level) and used nested, and by several tasks at once; each use shields the
    task running the ``with`` statement. Enter and leave it in the same task: a
    generator that yields inside a shield and is resumed elsewhere leaves the task that
    entered it shielded.
    """

    __slots__ = ()

    def __enter__(self) -> shield:
        future = _slot.future
        if future is not None:
            future._shield_depth += 1
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        # The task that entered: the calling thread's, as in __enter__ (module docstring).
        future = _slot.future
        if future is None:
            return
        depth = future._shield_depth
        if not depth:
            _warn_unentered(future)
            return
        future._shield_depth = depth = depth - 1
        if depth or exc_type is not None:
            return  # still shielded, or already leaving with an exception
        token = future._token
        if token is not None and token.cancelled:
            raise TaskCancelled(token.reason or "cancel")

    @staticmethod
    def active() -> bool:
        """Whether the calling code is inside a shield of a running task."""
        future = _slot.future
        return future is not None and future._shield_depth > 0


def _warn_unentered(future: CancellableFuture[Any]) -> None:
    warnings.warn(
        f"cancelpool.shield() exited in the task of {future!r}, which never entered it: "
        "the with block was entered in another task or thread, or outside any task (a "
        "generator that yields inside a shield and is resumed elsewhere?). The task "
        "that entered it stays shielded until it ends; do not yield inside a shield",
        RuntimeWarning,
        stacklevel=3,
    )

"""Every process-wide lock cancelpool owns, and how a forked child gets each one back unheld.

``os.fork()`` copies the process with one thread, the one that called it. A lock that
another thread held at that moment stays held in the child for ever, and the first call
there that takes it hangs: before this module, ``CancelSource().cancel()`` hung in 34 of
200 children on 3.13 (13 of 40 on 3.11, 69 of 200 on 3.9) while another parent thread
was cancelling tokens, because ``_token._lock`` was the one lock not reset (issue 11).
The resets were one ``os.register_at_fork`` hook per module; now ``LOCKS`` below lists
every lock of the library that no single object owns, and this module registers the one
set of hooks that handles them all, in the list's order. ``tests/test_fork.py`` finds the
package's module-level locks by scanning its modules and checks that the list is exactly
those, and forks with each one held by another thread.

The locks, in the order a forked child resets them
--------------------------------------------------
``cancelpool._token._lock``
    The fields of every token (``_reason``, ``_event``, ``_callbacks``). Replaced.
``cancelpool._escalate._warn_lock``
    Whether ``ForceUnavailableWarning`` was issued (once a process). Replaced; whether
    it was issued is kept.
``cancelpool._inject._registry_lock``
    The threads armed for a forced interrupt (``_armed``, ``_abandoned``). Replaced, the
    registry emptied (the armed threads are the parent's) and the interrupt backend's
    events switched off.
``cancelpool._timer._scheduler._cond``
    The process-wide timer's heap and thread. Replaced, with an empty heap and no thread:
    the actions scheduled belong to the parent's executors and tokens, and the child's
    first action starts a timer thread of its own.
``cancelpool._deadline.DeadlineWatch._lock``, of every live watch (one per executor)
    The executor's scheduled deadline check, which was in the parent's timer heap.
    Replaced, with no check scheduled, so that a task with a deadline started in the
    child schedules one on the child's timer. The one per-object lock reset here: the
    state it guards refers to the timer's heap, which the child replaces.
``cancelpool._worker.global_shutdown_lock``
    ``_global_shutdown``, the workers the exit hook waits for, and the threads still
    cancelling a shut-down executor's queue (``cancelpool._drain``). Held across the fork
    (taken before it, released in the parent), as ``concurrent.futures.thread`` holds its
    own ``_global_shutdown_lock`` (bpo-45021), so no submit is half-way through it at the
    fork (CPython's ``test_hang_global_shutdown_lock`` forks while one is). Replaced in
    the child, and the parent's workers and queue-cancelling threads forgotten: they do
    not exist there.

The child has one thread, so resetting in any order cannot deadlock, provided no reset
takes a lock not yet reset. The list runs from the leaf locks, which code under any other
lock may take, to the outermost one, and no reset takes a lock listed after its own.

Each lock is replaced by rebinding the module global (or attribute) that holds it, not
reset in place (``Lock._at_fork_reinit`` is a private CPython method): every function
looks its lock up at each call, and no module imports one by name (``from ._token import
_lock`` would keep the old, held lock). The scan in ``tests/test_fork.py`` would find such
a second name.

What is not reset
-----------------
The lock of each object: each future's ``_condition``, each executor's
``_shutdown_lock`` and statistics lock (``SharedCounts.lock``), the ``threading.Event``
a token's waiters block on, a ``Scheduler`` made by a test. ``concurrent.futures`` does
the same: its fork hook handles only its module lock, not a future's condition nor an
executor's ``_shutdown_lock``. Such an object belongs to the parent's threads that were
using it, and they do not exist in the child: a lock one of them held at the fork was in
the middle of changing what it guards, so a fresh lock would hand over a half-changed
object, and its waiters and callbacks are the parent's. So in a forked child, do not use
an executor, future or token that another parent thread was using at the fork (a task
running, a ``submit()`` or ``cancel()`` under way): create new executors there (the child
starts with none of the parent's workers), fork before starting threads, or start
processes with ``multiprocessing``'s ``"spawn"`` or ``"forkserver"`` method. Tokens and
sources are safe to use in the child when no parent thread was using them: their lock is
the module's, reset above.
"""

from __future__ import annotations

import os
from typing import Callable, NamedTuple, Optional

from . import _deadline, _drain, _escalate, _inject, _timer, _token, _worker

__all__ = ("LOCKS", "ForkReset")


class ForkReset(NamedTuple):
    """One lock of the library, and how a forked child gets it back unheld."""

    #: Where it lives: ``module.name`` (a module global) or ``module.name.attribute`` (an
    #: attribute of a module-level object); ``module.Class._attr`` for the per-object one.
    lock: str
    #: Called in the child, in ``LOCKS`` order, with no other thread running.
    reset: Callable[[], None]
    #: Called before the fork, to hold the lock across it (and its state unchanged), or None.
    before: Optional[Callable[[], None]] = None
    #: Called in the parent after the fork, to release what ``before`` took, or None.
    after_in_parent: Optional[Callable[[], None]] = None


def _reset_global_shutdown() -> None:
    """``global_shutdown_lock`` and what it guards, in ``_worker`` and ``_drain``."""
    _worker._after_fork_in_child()
    _drain._forget_drops()


#: Every lock that no single object owns, in reset order (the module docstring says why
#: each is here, and why this order).
LOCKS: tuple[ForkReset, ...] = (
    ForkReset("cancelpool._token._lock", _token._after_fork_in_child),
    ForkReset("cancelpool._escalate._warn_lock", _escalate._after_fork_in_child),
    ForkReset("cancelpool._inject._registry_lock", _inject._after_fork_in_child),
    ForkReset("cancelpool._timer._scheduler._cond", _timer._after_fork_in_child),
    ForkReset("cancelpool._deadline.DeadlineWatch._lock", _deadline._after_fork_in_child),
    ForkReset(
        "cancelpool._worker.global_shutdown_lock",
        _reset_global_shutdown,
        before=_worker._before_fork,
        after_in_parent=_worker._after_fork_in_parent,
    ),
)


def _before() -> None:
    """Take the locks held across the fork, outermost first (the reverse of ``LOCKS``)."""
    for entry in reversed(LOCKS):
        if entry.before is not None:
            entry.before()


def _after_in_parent() -> None:
    """Release the locks ``_before`` took, innermost first."""
    for entry in LOCKS:
        if entry.after_in_parent is not None:
            entry.after_in_parent()


def _after_in_child() -> None:
    """Reset every lock in ``LOCKS``, in order; one that fails does not stop the others.

    Raises:
        Exception: the first a reset raised, after all of them ran (CPython reports an
            exception from a fork hook as unraisable and goes on).
    """
    errors: list[Exception] = []
    for entry in LOCKS:
        try:
            entry.reset()
        except Exception as exc:  # noqa: BLE001, PERF203 - each reset on its own
            errors.append(exc)
    if errors:
        raise errors[0]


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before, after_in_parent=_after_in_parent, after_in_child=_after_in_child
    )

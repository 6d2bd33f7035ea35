"""``CancelSource``: a cancellation that user code owns, to cancel a group of tasks at once.

A task's own token is cancelled only by its future. A ``CancelSource`` makes a token that
*you* cancel, and that you hand to as many tasks as you like::

    group = CancelSource()
    view = executor.with_options(token=group.token)
    futures = [view.submit(fetch, url) for url in urls]
    ...
    group.cancel("user pressed stop")      # cancels every one of them

Each task still has its own token, linked to the group's: cancelling the group cancels the
task's future (a queued one never starts; a running one is asked to stop and escalates as
its options say), and the task's token carries the group's reason. Sources link too:
``CancelSource(parent_a, parent_b)`` is cancelled when either parent is, with that
parent's reason: the first reason wins, and it never changes afterwards.

A callback that raises cannot cut a group cancel short: every linked task and source
is cancelled, then the first ``KeyboardInterrupt``, ``SystemExit`` or ``TaskCancelled``
raised on the way reaches the caller of ``cancel()`` (``cancelpool._token``).

Locking protocol: a source has no lock of its own. Its token's state is guarded by the
token module's leaf lock (``cancelpool._token``); linking registers token callbacks, which
run after the canceller has released its locks; the ``cancel_after`` timer handle is
replaced with one attribute write (the last call wins).
"""

from __future__ import annotations

import functools
from typing import Optional

from . import _timer
from ._token import CallbackHandle, CancelToken
from ._validate import check_reason, check_timeout

__all__ = ("CancelSource",)


class CancelSource:
    """A token that you cancel: for groups of tasks, scopes, and linked cancellation.

    Args:
        *parents: Tokens this source follows: when any of them is cancelled, so is this
            source, with that token's reason. A parent already cancelled cancels the
            source at once.

    Raises:
        TypeError: a parent is not a ``CancelToken``.
    """

    __slots__ = ("__weakref__", "_links", "_timer", "_token")

    def __init__(self, *parents: CancelToken) -> None:
        for parent in parents:
            if not isinstance(parent, CancelToken):
                raise TypeError(f"parents must be CancelTokens, got {parent!r}")
        self._token = CancelToken()
        self._timer: Optional[_timer.TimerHandle] = None
        self._links: list[CallbackHandle] = []
        for parent in parents:
            self._links.append(parent.register(functools.partial(self._follow, parent)))

    @property
    def token(self) -> CancelToken:
        """The token to give to tasks (``with_options(token=...)``) or to check."""
        return self._token

    @property
    def cancelled(self) -> bool:
        """Whether this source is cancelled (by ``cancel()``, a timer, or a parent)."""
        return self._token.cancelled

    @property
    def reason(self) -> Optional[str]:
        """The reason of the first cancel, or None."""
        return self._token.reason

    def cancel(self, reason: str = "cancel") -> bool:
        """Cancel the token, and so every task and source linked to it.

        Callbacks registered on the token (the linked tasks' cancels among them) run in
        this thread before the call returns, the last registered first, so that queued
        tasks are cancelled before a worker freed by a stopping one could start them.
        Every one of them runs, whatever the others raise: an ``Exception`` is logged on
        the ``cancelpool`` logger; a ``KeyboardInterrupt``, ``SystemExit`` or
        ``TaskCancelled`` (from a callback, or from a linked task's or source's own
        callbacks) is raised here once every linked task and source is cancelled.

        Args:
            reason: Why; the linked tasks see it as their token's ``reason``.

        Returns:
            True if this call cancelled it; False if it was already cancelled (the first
            reason stays).

        Raises:
            TypeError, ValueError: *reason* is not a non-empty str.
            BaseException: the first non-``Exception`` a callback raised, after the rest
                of the cancel.
        """
        check_reason(reason)
        wakeup = self._token._cancel(reason)
        if wakeup is None:
            return False
        self._detach()
        wakeup.fire()
        return True

    def cancel_after(self, seconds: float, reason: str = "cancel_after") -> None:
        """Cancel this source *seconds* from now, unless it is cancelled before.

        A later call replaces the earlier timer (the last call wins, whether it moves the
        time earlier or later). The timer runs on cancelpool's timer thread.

        This is a cancel, not a deadline: tasks linked to the source
        (``with_options(token=source.token)``) are cancelled, and their futures raise
        ``CancelledError``. The default reason is ``"cancel_after"``, not ``"deadline"``:
        ``"deadline"`` is what a task's own deadline (``with_options(timeout=...)``)
        cancels with, and its future fails with ``DeadlineExceeded`` instead. To have
        every task of a group fail with ``DeadlineExceeded``, give them a deadline each.

        Args:
            seconds: Delay, ``>= 0``; ``math.inf`` never cancels (as if not called).
            reason: The reason to cancel with.

        Raises:
            TypeError, ValueError: *seconds* is not a number ``>= 0``, or *reason* is not a
                non-empty str.
        """
        delay = check_timeout("seconds", seconds, allow_none=False)
        assert delay is not None
        check_reason(reason)
        old = self._timer
        self._timer = _timer.get_scheduler().call_later(
            delay, functools.partial(self.cancel, reason)
        )
        if old is not None:
            old.cancel()

    def close(self) -> None:
        """Stop following the parents and drop the ``cancel_after`` timer; no cancel.

        Call it when the source is no longer needed and its parents live on, so that
        they do not keep it alive.
        """
        self._detach()

    def _detach(self) -> None:
        links, self._links = self._links, []
        for handle in links:
            handle.unregister()
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _follow(self, parent: CancelToken) -> None:
        # A token callback: runs in the thread that cancelled *parent*, outside its locks.
        self.cancel(parent.reason or "cancel")

    def __repr__(self) -> str:
        state = "active" if not self.cancelled else f"cancelled reason={self.reason!r}"
        return f"<{type(self).__qualname__} at {id(self):#x} {state}>"

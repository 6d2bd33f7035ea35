"""The stop token: how a running task learns that it was asked to stop.

Every task that a ``CancellableThreadPoolExecutor`` runs has its own ``CancelToken``. The
task reads it (``cancelpool.current_token()``) and either polls it (``cancelled``,
``raise_if_cancelled()``), blocks on it (``wait()``, ``sleep()``), or registers a callback
that unblocks whatever the task is blocked in (``register(sock.close)``).

A token is a *request*: ``token.cancelled`` says a stop was asked for, and ``reason``
why. It does not say whether the task has stopped; the future says that
(``future.task_state``, ``future.wait_stopped()``).

Only the owner of a token cancels it (the task's future, through ``_cancel``); task code
gets a read-only view.

Locking protocol
----------------
One module-wide lock, ``_lock``, guards the three fields of every token
(``_reason``, ``_event``, ``_callbacks``) against concurrent writers. It is a leaf lock:
nothing else is acquired while it is held, and no user code runs under it. A per-token
lock would cost a lock object per task, for critical sections that are a few attribute
writes long and almost never contended.

``_reason`` is written once (``None`` to a str) and read without the lock: a reader that
sees ``None`` may be racing a cancel, and the methods that must not miss the cancel
(``wait``, ``register``) re-check under the lock.

Cancelling is two-phase so that an owner can flip the flag while holding its own lock and
run user code only after releasing it: ``_cancel(reason)`` sets the flag and returns a
``_Wakeup``; ``_Wakeup.fire()`` sets the event that waiters block on and runs the
registered callbacks, each exactly once, in the cancelling thread.

What a callback raises
----------------------
Every callback runs, whatever the others raise (``_run_callbacks``, the one place any
callback runs). An ``Exception`` is the callback's bug: it is logged, naming the callback
and the token's reason, as ``Future`` does for done-callbacks. Any other
``BaseException`` (``KeyboardInterrupt``, ``SystemExit``, a ``TaskCancelled`` of the
cancelling task) is not swallowed: the first one is re-raised once every callback has
run (the others are logged), so that the thread that cancelled learns it must stop, yet
no other waiter, task or group member misses the cancel. The token's state is already
recorded by then (``_cancel``). An owner with more to do after the callbacks calls
``_Wakeup.run()``, which returns that exception instead of raising it, does the rest,
then raises it (``CancellableFuture._transition``: the escalation and the done-callbacks,
which so run as after any cancel, with no exception being handled).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Callable, Optional

from ._current import shielded
from ._exceptions import TaskCancelled
from ._validate import check_callable, check_timeout, sleep_for

__all__ = ("CallbackHandle", "CancelToken", "check_token")

LOGGER = logging.getLogger("cancelpool")

# Guards every token's fields; a leaf lock (see the module docstring).
_lock = threading.Lock()


def _after_fork_in_child() -> None:
    """In a forked child: a fresh ``_lock``, which a parent thread may have held at the fork.

    Called by ``cancelpool._fork``, which lists every lock the library resets there. The
    functions here look ``_lock`` up at each call, and no module imports it by name.
    """
    global _lock
    _lock = threading.Lock()


class CancelToken:
    """A per-task stop request that the task's code can poll, wait on, or subscribe to.

    Get the running task's token with :func:`cancelpool.current_token`. The task's future
    cancels it (``future.cancel()``, ``executor.shutdown(..., cancel_running=True)``, a
    ``map()`` iterator that is closed early); task code cannot cancel its own token, only
    observe it.
    """

    __slots__ = ("__weakref__", "_callbacks", "_event", "_reason")

    def __init__(self) -> None:
        self._reason: Optional[str] = None
        # Created on first use: most tasks never wait on their token or register a
        # callback, and an Event costs a Condition and a deque.
        self._event: Optional[threading.Event] = None
        self._callbacks: Optional[dict[CallbackHandle, None]] = None

    @property
    def cancelled(self) -> bool:
        """True once a stop was requested. It never goes back to False."""
        return self._reason is not None

    @property
    def reason(self) -> Optional[str]:
        """Why the stop was requested (``"cancel"``, ``"shutdown"``, ...), or None."""
        return self._reason

    def raise_if_cancelled(self) -> None:
        """Raise :class:`TaskCancelled` if a stop was requested; otherwise return at once.

        Inside a ``cancelpool.shield()`` block of the token's task it does not raise (the
        shield's exit does).

        Raises:
            TaskCancelled: carrying :attr:`reason`.
        """
        reason = self._reason
        if reason is not None and not shielded(self):
            raise TaskCancelled(reason)

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until a stop is requested or *timeout* seconds pass.

        Args:
            timeout: Seconds to wait, ``>= 0``; None (or ``math.inf``) waits without limit.

        Returns:
            True if the token is cancelled, False if the timeout passed first (the same
            convention as ``threading.Event.wait``).

        Raises:
            TypeError: *timeout* is not a number or None.
            ValueError: *timeout* is negative or NaN.
        """
        seconds = check_timeout("timeout", timeout)
        with _lock:
            if self._reason is not None:
                return True
            event = self._event
            if event is None:
                event = self._event = threading.Event()
        return event.wait(seconds)

    def sleep(self, seconds: float) -> None:
        """Sleep for *seconds*, returning early by raising if a stop is requested.

        Inside a ``cancelpool.shield()`` block of the token's task it sleeps the whole
        time and does not raise: the shield's exit does.

        Args:
            seconds: How long to sleep, ``>= 0``; ``math.inf`` sleeps until cancelled.

        Raises:
            TaskCancelled: the token is (or becomes) cancelled before *seconds* pass.
            TypeError: *seconds* is not a number.
            ValueError: *seconds* is negative or NaN.
        """
        checked = check_timeout("seconds", seconds, allow_none=False)
        assert checked is not None
        if shielded(self):
            sleep_for(checked)
        elif self.wait(checked):
            raise TaskCancelled(self._reason or "cancel")

    def register(self, callback: Callable[[], object]) -> CallbackHandle:
        """Arrange for ``callback()`` to run once, when the token is cancelled.

        If the token is already cancelled the callback runs at once, in this thread;
        otherwise it runs in the thread that cancels the token, after that thread has
        released the future's lock; callbacks run the last registered first. This is
        how a task unblocks its own blocking call::

            with current_token().register(sock.close):
                data = sock.recv(4096)   # returns (or raises OSError) once cancelled

        An ``Exception`` from the callback is logged on the ``cancelpool`` logger and
        does not stop other callbacks. Any other ``BaseException`` (``KeyboardInterrupt``,
        ``SystemExit``, ``TaskCancelled``) reaches the caller of the cancel (here, of
        ``register()`` if the token is already cancelled), but only after every other
        callback has run and the cancel is complete (a future's done-callbacks included).

        Args:
            callback: A callable taking no arguments.

        Returns:
            A handle whose ``unregister()`` removes the callback; it is also a context
            manager that unregisters on exit.

        Raises:
            TypeError: *callback* is not callable.
            BaseException: what *callback*, run at once, raised if not an ``Exception``.
        """
        check_callable("callback", callback)
        handle = CallbackHandle(self, callback)
        with _lock:
            if self._reason is None:
                if self._callbacks is None:
                    self._callbacks = {}
                self._callbacks[handle] = None
                return handle
        stop = _run_callbacks((handle,))
        if stop is not None:
            raise stop
        return handle

    def _cancel(self, reason: str) -> Optional[_Wakeup]:
        """Request a stop. Returns the wake-up to fire after releasing the caller's locks.

        Returns None if the token was already cancelled (the first reason stays).
        May be called while holding other locks: it takes only the leaf ``_lock``.
        """
        with _lock:
            if self._reason is not None:
                return None
            self._reason = reason
            event, callbacks = self._event, self._callbacks
            self._callbacks = None
        return _Wakeup(event, callbacks)

    def __repr__(self) -> str:
        state = "active" if self._reason is None else f"cancelled reason={self._reason!r}"
        return f"<{type(self).__qualname__} at {id(self):#x} {state}>"


class CallbackHandle:
    """What :meth:`CancelToken.register` returns: undoes the registration.

    Use it as a context manager to keep the callback registered for the duration of a
    blocking call only.
    """

    __slots__ = ("_callback", "_token")

    def __init__(self, token: CancelToken, callback: Callable[[], object]) -> None:
        self._token = token
        self._callback = callback

    @property
    def callback(self) -> Callable[[], object]:
        """The registered callable."""
        return self._callback

    def unregister(self) -> bool:
        """Remove the callback if it has not run.

        Returns:
            True if it was removed before it ran; False if it has already run, is running
            in the cancelling thread now, or was already unregistered.
        """
        token = self._token
        with _lock:
            callbacks = token._callbacks
            if callbacks is None or self not in callbacks:
                return False
            del callbacks[self]
            return True

    def __enter__(self) -> CallbackHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.unregister()

    def __repr__(self) -> str:
        return f"<{type(self).__qualname__} callback={self._callback!r}>"


class _Wakeup:
    """The half of a cancel that runs outside every lock: wake waiters, run callbacks."""

    __slots__ = ("_callbacks", "_event")

    def __init__(
        self,
        event: Optional[threading.Event],
        callbacks: Optional[dict[CallbackHandle, None]],
    ) -> None:
        self._event = event
        self._callbacks = callbacks

    def fire(self) -> None:
        """Wake the waiters and run every callback.

        Raises:
            BaseException: the first non-``Exception`` a callback raised, once every
                callback has run (see the module docstring).
        """
        stop = self.run()
        if stop is not None:
            try:
                raise stop
            finally:
                stop = None  # no cycle through this frame's traceback

    def run(self) -> Optional[BaseException]:
        """``fire()``, returning what it would raise, for an owner with more to do first.

        Returns:
            The first non-``Exception`` a callback raised, or None. The caller raises it.
        """
        if self._event is not None:
            self._event.set()
        if not self._callbacks:
            return None
        # Last registered first: a group's newest (queued) tasks are cancelled before its
        # oldest (running) ones, whose workers would otherwise take the queued ones in
        # between.
        return _run_callbacks(reversed(list(self._callbacks)))


def _run_callbacks(handles: Iterable[CallbackHandle]) -> Optional[BaseException]:
    """Run every callback in *handles*, whatever any of them raises.

    Returns:
        The first non-``Exception`` a callback raised (later ones are logged), or None.
    """
    first: Optional[BaseException] = None
    for handle in handles:
        try:
            handle._callback()
        except Exception:  # noqa: BLE001, PERF203 - each callback on its own; logged
            # Same policy as Future._invoke_callbacks: a failing callback is the
            # callback's bug; log it where the user will see it and keep the cancel going.
            _log_failure(handle, "exception")
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller, after the rest
            # A request to stop (KeyboardInterrupt, SystemExit, TaskCancelled): for the
            # thread that cancels, but only once the rest of the cancel has happened.
            if first is None:
                first = exc
            else:
                _log_failure(
                    handle,
                    f"{type(exc).__name__} (not re-raised: an earlier callback's "
                    f"{type(first).__name__} is)",
                )
    return first


def _log_failure(handle: CallbackHandle, what: str) -> None:
    """Log the exception being handled, naming the callback and its token's reason."""
    LOGGER.exception(
        "%s in cancellation callback %r of a token cancelled with reason %r; "
        "the other callbacks still run",
        what,
        handle._callback,
        handle._token._reason,
    )


def check_token(name: str, value: object) -> Optional[CancelToken]:
    """Return *value* if it is a ``CancelToken`` or None, else raise ``TypeError`` naming it."""
    if value is None or isinstance(value, CancelToken):
        return value
    raise TypeError(
        f"{name} must be a cancelpool.CancelToken or None, got {value!r}; pass CancelSource().token"
    )

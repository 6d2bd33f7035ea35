"""asyncio integration: the cancel message of an awaiting asyncio task becomes the reason.

The problem
-----------
``loop.run_in_executor(executor, fn)`` (and ``asyncio.to_thread(fn)``, which calls it
with the loop's default executor) submits ``fn`` and wraps the ``concurrent.futures``
future in an asyncio future (``asyncio.wrap_future``, which calls the private
``asyncio.futures._chain_future(source, destination)``). When the asyncio task awaiting
it is cancelled (``task.cancel()``, ``asyncio.wait_for``, ``asyncio.timeout``, a
``TaskGroup`` whose sibling failed), the asyncio future is cancelled, and its done-callback
``_call_check_cancel`` calls ``source.cancel()``: with no arguments, from the loop's
thread. With the stdlib executor that does nothing to a running task; with ours it is
``CancellableFuture.cancel()``, which sets the task's token (and escalates if the
executor forces). So the cancel itself needs nothing from this module.

What is lost on the way is *why*: ``task.cancel(msg)`` passes ``msg`` on to the future the
task awaits (``Future.cancel(msg=msg)``, on every Python we support), but
``_call_check_cancel`` calls ``source.cancel()`` without it. ``cancel_message(future)``
recovers it, so the thread task sees it as its ``token.reason``.

How
---
There is no public link from the ``concurrent.futures`` future back to the asyncio future
chained to it. The one place it exists is the other done-callback ``_chain_future`` adds,
to the *source* (our future): the closure ``_chain_future.<locals>._call_set_state``,
whose free variable ``destination`` is the asyncio future. We find that closure among
``future._done_callbacks`` (by ``__module__ == "asyncio.futures"`` and its
``__qualname__``), read its ``destination`` cell (``__code__.co_freevars`` and
``__closure__``), and if that asyncio future is cancelled, ask it, publicly, for its
cancel message: ``destination.exception()`` raises the ``CancelledError(msg)`` its
``cancel(msg)`` recorded. The destination is always a plain future from
``loop.create_future()``, whose ``exception()`` builds a new ``CancelledError`` on each
call, so asking has no side effect. This module does not import asyncio (a closure of
``asyncio.futures`` can only exist once asyncio is imported, and ``cancel()`` should not
pay for the import).

The private details relied on, and what happens if they change
--------------------------------------------------------------
The name and module of ``_call_set_state``, and its free variable ``destination``. The
shape is the same in CPython 3.9.18, 3.10.13, 3.11.7, 3.12.1, 3.13.0 and PyPy 7.3.11
(3.9.16), all of which the tests run on; asyncio's C accelerator does not replace
``_chain_future``, and uvloop calls ``asyncio.wrap_future`` too (not tested here). If a
future Python changes the shape, ``cancel_message`` returns None and the reason is
``"cancel"``: the cancel itself still happens, nothing raises, only the message is lost.
``tests/test_asyncio.py`` fails loudly on any supported interpreter where the shape
changed (``TestChainShape``), so we learn of it from CI, not from users.

What each version does with ``task.cancel(msg)`` (measured, 3.9 to 3.13 and PyPy 3.9):
the message always reaches the awaited future, so the thread task's reason is the message
everywhere; on 3.9, 3.10 and PyPy 3.9 the ``CancelledError`` the *awaiting task* then
raises has lost it (``args == ()``), from 3.11 it carries it. ``asyncio.wait_for``,
``asyncio.timeout`` and ``TaskGroup`` cancel without a message: the reason is
``"cancel"``.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any, Optional

__all__ = ("cancel_message", "chained_destinations")

# Where and how asyncio's ``_chain_future`` names the done-callback it adds to the source
# future, and the closure variable holding the asyncio future (``Lib/asyncio/futures.py``).
_MODULE = "asyncio.futures"
_QUALNAME = "_chain_future.<locals>._call_set_state"
_CELL = "destination"


def cancel_message(future: Future[Any]) -> Optional[str]:
    """The message of the asyncio cancel that is cancelling *future*, if any.

    Called by ``CancellableFuture.cancel()`` without a reason, in the thread that cancels
    (the loop's, when asyncio does it).

    Returns:
        The non-empty str that a cancelled asyncio future chained to *future*
        (``loop.run_in_executor``, ``asyncio.wrap_future``) was cancelled with; None if
        there is none, the message is not a non-empty str, or asyncio's internals do not
        look as expected: it raises nothing of its own (a ``KeyboardInterrupt`` or
        ``SystemExit`` arriving meanwhile still propagates).
    """
    try:
        for destination in chained_destinations(future):
            message = _message_of(destination)
            if message is not None:
                return message
    except Exception:  # noqa: BLE001 - asyncio's internals changed: no message, no error
        return None
    return None


def chained_destinations(future: Future[Any]) -> list[Any]:
    """The asyncio futures that ``asyncio.wrap_future`` chained to *future*, oldest first.

    Raises:
        ValueError: a callback has asyncio's name but not the ``destination`` variable
            (the shape changed; ``cancel_message`` turns this into None).
    """
    found = []
    for callback in list(future._done_callbacks):  # type: ignore[attr-defined]
        if (
            getattr(callback, "__module__", None) == _MODULE
            and getattr(callback, "__qualname__", None) == _QUALNAME
        ):
            index = callback.__code__.co_freevars.index(_CELL)
            found.append(callback.__closure__[index].cell_contents)
    return found


def _message_of(destination: Any) -> Optional[str]:
    """The message *destination* was cancelled with; None if not cancelled or none."""
    if not destination.cancelled():
        return None
    try:
        destination.exception()
    except BaseException as error:  # asyncio's CancelledError is a BaseException
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise  # not asyncio's answer: meant for the program
        if type(error).__name__ == "CancelledError" and error.args:
            message = error.args[0]
            if isinstance(message, str) and message:
                return message
    return None

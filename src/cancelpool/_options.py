"""Per-task options, and the view of an executor that submits with them.

``submit(fn, /, *args, **kwargs)`` stays the stdlib's: every argument after ``fn`` belongs
to ``fn``. Options for the task itself (a deadline, how a cancel escalates, a group token)
are set on a view instead::

    fast = executor.with_options(timeout=2.0, force=True, grace=0.5)
    future = fast.submit(fetch, url)

A view is two references (the executor and a frozen ``TaskOptions``); making one costs
about as much as a small tuple, so a view per call is fine.

``TaskOptions`` is the merged result: the executor's defaults (``task_timeout``,
``inherit_token``) overridden by each ``with_options()`` in turn. ``DEFAULT`` in it means
"the executor's setting, looked up when it is used" (``force`` and ``grace`` of a cancel).

How a view's options get through hooks on ``submit``
----------------------------------------------------
Code that wraps ``submit`` expects to see every task, as it does with the stdlib, whose
``map()`` calls ``self.submit(fn, *args)``: tqdm's ``thread_map`` patches the instance
(``executor.submit = counting_wrapper``) to count progress, dask's
``ContextAwareThreadPoolExecutor`` overrides ``submit`` to run each task in a copy of the
caller's context. So every task cancelpool queues goes through ``executor.submit``: plain
``map()``, a view's ``submit()`` and ``map()``, and the refills of ``map(buffersize=...)``.

A view's options must still reach its task, through a hook that may wrap ``fn`` (dask
submits ``ctx.run`` with ``fn`` as an argument) and that passes on nothing else. What does
not work: an option among ``submit``'s keyword arguments (they are ``fn``'s, and a hook
that folds them into a closure hands the option to ``fn``); marking ``fn`` (a hook that
wraps it hides the mark); applying the options to the returned future afterwards (a
worker may already have started the task, so a deadline counted from the start or a
group's cancel would be missed, and a hook may return another future); an attribute on
the executor (shared by every thread).

The construction: ``submit_with()`` puts the pair (executor, options) in a thread-local,
calls ``executor.submit(...)``, and in a ``finally`` puts back what was there before. The
executor's own ``submit``, first thing, reads the thread-local; if the pair names that
executor it clears it (taken: read and cleared in one place, before anything can raise)
and submits with those options, otherwise it submits with the executor's defaults and
leaves the pair alone. Hence:

* **Taken at most once**, by the first call of that executor's own ``submit`` in this
  thread during the view's call: the one a hook makes when it calls the original (or
  ``super().submit``) for the view's task, however it wrapped ``fn``.
* **Never leaks.** A hook that raises, or never calls the original, leaves the pair
  untaken: the ``finally`` removes it, so a later unrelated ``submit()`` finds nothing.
  Other threads never see it.
* **Nesting.** A view call made inside a hook, before the hook calls the original, sets
  its own pair and puts the outer one back when it returns, so each view's task gets its
  own options. cancelpool's own ``map()`` and refills go through ``submit_with()`` too
  when a pair is waiting (``submits_plainly()``), so a ``map()`` inside a hook does not
  take an outer view's options. A hook that submits to another cancelpool executor does
  not take them either: the pair names its executor.
* **Done-callbacks.** The executor's ``submit`` runs no user code before it takes the
  pair (nor after: the new future has no callbacks yet). A done-callback that a hook
  sets off after calling the original finds the pair taken; one set off before is the
  next case.
* **What remains.** A hook that, *before* calling the original for the view's task,
  calls this executor's ``submit`` directly (itself, or from a done-callback it sets
  off) for another task in the same thread gives that task the view's options, and the
  view's task the executor's defaults; a hook that calls the original from another
  thread gives the view's task the defaults. Nothing but the call stack tells those
  calls apart, and no hook we know of makes them.

The cost on the fast path: a plain ``submit()`` reads one thread-local attribute, and so
does a plain ``map()`` once per call and once per refill.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional, TypeVar, Union

from ._token import CancelToken, check_token
from ._validate import DEFAULT, _Default, check_bool, check_timeout

if TYPE_CHECKING:
    from typing_extensions import ParamSpec

    from ._executor import CancellableThreadPoolExecutor
    from ._future import CancellableFuture

    P = ParamSpec("P")

__all__ = ("ExecutorView", "TaskOptions")

T = TypeVar("T")

#: The values ``timeout_from`` accepts.
COUNTED_FROM = ("start", "submit")


class TaskOptions(NamedTuple):
    """The options a task is submitted with (read them from ``ExecutorView.options``).

    Attributes:
        timeout: Seconds the task may take, or None for no deadline.
        timeout_from: ``"start"`` (the deadline counts from when a worker starts the
            task) or ``"submit"`` (from ``submit()``; a task still queued when it
            passes never runs).
        force: Whether a cancel or a deadline escalates; ``DEFAULT``: the executor's.
        grace: Seconds before escalating; ``DEFAULT``: the executor's.
        token: A token (``CancelSource().token``) whose cancel cancels the task, or None.
        inherit: Whether a task submitted from inside another cancelpool task is
            cancelled when that task is.
    """

    timeout: Optional[float] = None
    timeout_from: str = "start"
    force: Union[bool, _Default] = DEFAULT
    grace: Union[float, _Default] = DEFAULT
    token: Optional[CancelToken] = None
    inherit: bool = True

    @property
    def per_task(self) -> bool:
        """Whether the future must carry these options (a deadline or escalation)."""
        return self.timeout is not None or self.force is not DEFAULT or self.grace is not DEFAULT

    def merged(
        self,
        timeout: Union[float, _Default, None],
        timeout_from: Union[str, _Default],
        force: Union[bool, _Default],
        grace: Union[float, _Default],
        token: Union[CancelToken, _Default, None],
        inherit: Union[bool, _Default],
    ) -> TaskOptions:
        """These options with every argument that is not ``DEFAULT`` replaced, checked."""
        changes: dict[str, Any] = {}
        if timeout is not DEFAULT:
            changes["timeout"] = check_timeout("timeout", timeout)
        if timeout_from is not DEFAULT:
            if not isinstance(timeout_from, str):
                raise TypeError(f"timeout_from must be 'start' or 'submit', got {timeout_from!r}")
            if timeout_from not in COUNTED_FROM:
                raise ValueError(f"timeout_from must be 'start' or 'submit', got {timeout_from!r}")
            changes["timeout_from"] = timeout_from
        if force is not DEFAULT:
            changes["force"] = check_bool("force", force)
        if grace is not DEFAULT:
            changes["grace"] = check_timeout("grace", grace, allow_none=False)
        if token is not DEFAULT:
            changes["token"] = check_token("token", token)
        if inherit is not DEFAULT:
            changes["inherit"] = check_bool("inherit", inherit)
        return self._replace(**changes) if changes else self


class _Handoff(threading.local):
    """The options of the ``submit_with()`` call in progress on this thread, if any."""

    #: (executor, options): set by submit_with(), taken by that executor's submit().
    pending: Optional[tuple[CancellableThreadPoolExecutor, TaskOptions]] = None


_handoff = _Handoff()


def submit_with(
    executor: CancellableThreadPoolExecutor,
    options: TaskOptions,
    fn: Callable[..., T],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> CancellableFuture[T]:
    """Call ``executor.submit(fn, *args, **kwargs)``, the task getting *options*.

    The public ``submit``, so that hooks on it (an instance patch, a subclass override)
    see the task; *options* reach the executor's own ``submit`` through a thread-local
    (see the module's docstring for why this is safe).

    Returns:
        What ``executor.submit`` returns.
    """
    saved = _handoff.pending
    _handoff.pending = (executor, options)
    try:
        return executor.submit(fn, *args, **kwargs)
    finally:
        # Untaken if a hook raised or did not call the original: never left behind.
        _handoff.pending = saved


def submits_plainly(executor: CancellableThreadPoolExecutor, options: TaskOptions) -> bool:
    """Whether ``executor.submit()`` alone submits with *options*, nothing handed over.

    True when they are the executor's own and no view's options are waiting on this
    thread to be taken: the case of a plain ``map()``, which then submits as the
    stdlib's does. Checking once per ``map()`` call is enough: only ``submit_with()``
    sets a pair, and it puts back what it found before it returns, so none can be left
    waiting by the hooks that run in between.
    """
    return options is executor._options and _handoff.pending is None


class ExecutorView:
    """An executor seen through per-task options: what ``with_options()`` returns.

    ``submit()`` and ``map()`` are the executor's, with the options applied to every task
    they submit; ``with_options()`` makes a view with more options changed. The view
    does not own the executor: it has no ``shutdown()``, and shutting the executor down
    shuts every view of it down.
    """

    __slots__ = ("_executor", "_options")

    def __init__(self, executor: CancellableThreadPoolExecutor, options: TaskOptions) -> None:
        self._executor = executor
        self._options = options

    @property
    def executor(self) -> CancellableThreadPoolExecutor:
        """The executor this view submits to."""
        return self._executor

    @property
    def options(self) -> TaskOptions:
        """The options every task submitted through this view gets."""
        return self._options

    def submit(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> CancellableFuture[T]:
        """As ``CancellableThreadPoolExecutor.submit``, with this view's options.

        The task goes through the executor's ``submit()``, so hooks on it see the task
        (an instance patch, a subclass override); the options still apply when the hook
        wraps ``fn`` and calls the original ``submit``.
        """
        return submit_with(self._executor, self._options, fn, args, kwargs)

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: Optional[float] = None,
        chunksize: int = 1,
        buffersize: Optional[int] = None,
    ) -> Iterator[T]:
        """As ``CancellableThreadPoolExecutor.map``, with this view's options per item.

        *timeout* bounds the whole iteration, as in the stdlib; the view's ``timeout``
        option is each item's own deadline.
        """
        return self._executor._map(self._options, fn, iterables, timeout, buffersize)

    def with_options(
        self,
        *,
        timeout: Union[float, _Default, None] = DEFAULT,
        timeout_from: Union[str, _Default] = DEFAULT,
        force: Union[bool, _Default] = DEFAULT,
        grace: Union[float, _Default] = DEFAULT,
        token: Union[CancelToken, _Default, None] = DEFAULT,
        inherit: Union[bool, _Default] = DEFAULT,
    ) -> ExecutorView:
        """A view of the same executor with these options changed (see the executor's)."""
        merged = self._options.merged(timeout, timeout_from, force, grace, token, inherit)
        return ExecutorView(self._executor, merged)

    def __repr__(self) -> str:
        changed = ", ".join(
            f"{name}={value!r}"
            for name, value in self._options._asdict().items()
            if value != TaskOptions._field_defaults[name]
        )
        return f"<ExecutorView of {self._executor!r} ({changed or 'no options'})>"

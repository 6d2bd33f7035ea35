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
"""

from __future__ import annotations

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
        """As ``CancellableThreadPoolExecutor.submit``, with this view's options."""
        return self._executor._submit(fn, args, kwargs, self._options)

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

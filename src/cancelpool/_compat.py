"""Every private stdlib internal cancelpool depends on, in one place.

``tests/test_compat.py`` checks each of these on every supported interpreter, so a
change in a new Python fails there, by name, and not somewhere deep in a race.

What we use and why:

``concurrent.futures._base`` future states and ``Future`` fields
    ``Future`` keeps its state in ``_state`` (one of five strings), guarded by the
    ``_condition`` it owns, with the waiters that ``wait()``/``as_completed()`` install
    in ``_waiters`` and the done-callbacks in ``_done_callbacks``; ``_invoke_callbacks``
    runs them. Cancelling a *running* future has no public API, so our subclass performs
    the same steps that ``cancel()`` and ``set_running_or_notify_cancel()`` perform for
    a pending one. These names have been stable from 3.2 to 3.15 (and in PyPy 3.9).

``ThreadPoolExecutor`` attributes set by ``__init__``
    ``_max_workers``, ``_work_queue`` (a ``SimpleQueue``), ``_idle_semaphore``,
    ``_threads``, ``_broken``, ``_shutdown``, ``_shutdown_lock``, ``_thread_name_prefix``:
    we let the stdlib's ``__init__`` set them (third-party code reads some of them) and
    use them as its own methods do. Stable from 3.9 to 3.15.

Worker start-up: ``_initializer``/``_initargs`` (3.9-3.13), the worker context (3.14+)
    Up to 3.13 ``__init__`` stores ``_initializer`` and ``_initargs``, and each worker
    calls ``initializer(*initargs)`` before taking tasks. 3.14 (gh-124694, which added
    ``InterpreterPoolExecutor``) replaced them with a protocol: the classmethod
    ``ThreadPoolExecutor.prepare_context(initializer, initargs, **ctxkwargs)`` (it checks
    the initializer: ``TypeError("initializer must be a callable")``) returns
    ``(create_context, resolve_task)``, which ``__init__`` stores as
    ``_create_worker_context`` and ``_resolve_work_item_task``; ``submit()`` turns each
    call into ``task = _resolve_work_item_task(fn, args, kwargs)``; each new worker gets
    ``ctx = _create_worker_context()``, calls ``ctx.initialize()`` (if it raises: the
    pool is broken), runs every task as ``ctx.run(task)``, and calls ``ctx.finalize()``
    when it exits; a broken pool raises the class attribute ``BROKEN``
    (``BrokenThreadPool``). ``InterpreterPoolExecutor`` is a subclass that overrides
    ``prepare_context``. 3.15 keeps it unchanged. The adapter below gives a worker the
    same three steps on every version (``new_worker_context``, ``context_runner``,
    ``task_resolver``); on 3.9-3.13 the task is called directly, at no extra cost.
    ``CONTEXT_RUN_CODE``, the code of the stdlib's ``WorkerContext.run``, is the frame
    that calls a task's function there: ``cancelpool._inject`` judges the frames above
    it (the task's) and never raises in it.

``threading._register_atexit``
    Runs a function at interpreter exit *before* non-daemon threads are joined. The
    stdlib thread pool uses it (bpo-39812) to let workers finish queued work at exit; we
    use it to do the same for our workers. 3.9+ (and PyPy 3.9+).

``_thread._daemon_threads_allowed``
    3.12+: False in a subinterpreter created without daemon-thread support, where
    starting a daemon thread raises. Our workers are daemon threads that our exit hook
    joins (see ``_worker``); where daemons are not allowed they are ordinary threads.

``threading.Condition``: ``_waiters``, ``_is_owned``, ``_release_save``, ``_acquire_restore``
    ``Condition.wait`` appends a fresh locked lock (the "waiter") to ``_waiters``, fully
    releases the condition's lock (``_release_save``, which also undoes an ``RLock``'s
    recursion), blocks acquiring the waiter, and takes the lock back
    (``_acquire_restore``); ``notify()`` removes waiters from the deque and releases
    them. ``cancelpool._wait`` waits the same way on a waiter of its own, so that a
    cancel can wake exactly that one thread: a ``notify_all()`` would also wake every
    other waiter, and ``Event.wait`` and ``Future.result`` wait once and trust the
    wake-up (``Future.result(None)`` would raise ``TimeoutError``). The same code in
    CPython 3.9 to 3.15 and in PyPy's ``threading.py``.

``threading.Thread``'s own attribute names
    Our ``WorkerThread`` subclasses ``Thread``, so an attribute of ours named like one of
    ``Thread``'s private ones replaces it: 3.14 added ``Thread._context`` (the
    ``contextvars`` context the thread runs in), and a worker with a ``_context`` of its
    own could not start. ``tests/test_compat.py`` checks that none of ours is Thread's.

``threading.Event._cond``
    The condition that ``Event.wait`` waits on and ``set()`` notifies.

``concurrent.futures.Future._condition``
    Listed above; ``cancelpool._wait.future_result`` waits on it as ``result()`` does.

``queue.Queue`` internals: ``not_empty``, ``not_full``, ``_qsize``, ``_get``, ``is_shutdown``
    ``Queue.get`` waits on ``not_empty`` (a condition over ``mutex``) until ``_qsize()``,
    takes an item with ``_get()`` and notifies ``not_full``; ``_qsize``/``_get`` are the
    hooks that the module's source invites subclasses (``LifoQueue``,
    ``PriorityQueue``, users') to override. 3.13 added ``is_shutdown`` and
    ``queue.ShutDown``; before that neither exists and a queue is never shut down.

Relied on elsewhere, and checked where they are used
    The bytecode of cleanup (``cancelpool._cleanup``: exception-table handler bodies on
    3.11+ and ``SETUP_*`` targets on 3.9/3.10, ``co_positions``, the ``with`` enter call
    (``LOAD_SPECIAL __enter__`` on 3.14+) and exit call, whose three ``None`` arguments are
    ``LOAD_CONST`` up to 3.14 and ``LOAD_COMMON_CONSTANT`` on 3.15;
    ``tests/test_cleanup.py``); ``sys.monitoring`` on 3.12+ and ``_PyEval_SetTrace`` with
    the trace fields of ``PyThreadState`` on 3.9-3.11 (``cancelpool._monitor``,
    ``cancelpool._trace``; ``tests/test_inject.py``); and the closure
    ``asyncio.futures._chain_future.<locals>._call_set_state`` (``cancelpool._asyncio``;
    ``tests/test_asyncio.py``).

The public ``concurrent.futures.thread.BrokenThreadPool`` and
``concurrent.futures.TimeoutError`` are imported from here too, so that the module that
needs them names one place.
"""

from __future__ import annotations

import _thread
import queue
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, _base
from concurrent.futures import TimeoutError as FuturesTimeoutError
from concurrent.futures import thread as _futures_thread
from concurrent.futures.thread import BrokenThreadPool
from types import CodeType
from typing import Any, Callable, Optional, Protocol, TypeVar

__all__ = (
    "CANCELLED",
    "CANCELLED_AND_NOTIFIED",
    "CONTEXT_RUN_CODE",
    "FINISHED",
    "PENDING",
    "RUNNING",
    "WORKER_CONTEXT",
    "BrokenThreadPool",
    "FuturesTimeoutError",
    "InitializerContext",
    "QueueShutDown",
    "TaskResolver",
    "TaskRunner",
    "WorkerContext",
    "condition_acquire_restore",
    "condition_is_owned",
    "condition_release_save",
    "condition_waiters",
    "context_runner",
    "daemon_threads_allowed",
    "event_condition",
    "future_condition",
    "new_worker_context",
    "queue_is_shutdown",
    "queue_not_empty",
    "queue_size",
    "queue_take",
    "register_atexit",
    "reject_context_kwargs",
    "task_resolver",
)

T = TypeVar("T")

PENDING: str = _base.PENDING
RUNNING: str = _base.RUNNING
CANCELLED: str = _base.CANCELLED
CANCELLED_AND_NOTIFIED: str = _base.CANCELLED_AND_NOTIFIED
FINISHED: str = _base.FINISHED

register_atexit: Callable[[Callable[[], object]], None] = threading._register_atexit  # type: ignore[attr-defined]


def daemon_threads_allowed() -> bool:
    """Whether this interpreter may start daemon threads (False in some subinterpreters)."""
    probe = getattr(_thread, "_daemon_threads_allowed", None)
    return True if probe is None else bool(probe())


# ---------------------------------------------------------------- threading.Condition


def condition_waiters(cond: threading.Condition) -> deque[_thread.LockType]:
    """The deque of waiter locks that ``notify()`` releases, oldest first."""
    waiters: deque[_thread.LockType] = cond._waiters  # type: ignore[attr-defined]
    return waiters


def condition_is_owned(cond: threading.Condition) -> bool:
    """Whether the calling thread holds *cond*'s lock (what ``wait()`` checks first)."""
    return bool(cond._is_owned())  # type: ignore[attr-defined]


def condition_release_save(cond: threading.Condition) -> object:
    """Release *cond*'s lock completely (all ``RLock`` levels); returns what restores it."""
    return cond._release_save()  # type: ignore[attr-defined]


def condition_acquire_restore(cond: threading.Condition, state: object) -> None:
    """Take *cond*'s lock back as ``condition_release_save`` left it (blocks)."""
    cond._acquire_restore(state)  # type: ignore[attr-defined]


def event_condition(event: threading.Event) -> threading.Condition:
    """The condition ``event.wait()`` waits on and ``event.set()`` notifies."""
    cond: threading.Condition = event._cond  # type: ignore[attr-defined]
    return cond


def future_condition(future: Future[Any]) -> threading.Condition:
    """The condition that guards *future*'s state and that ``result()`` waits on."""
    return future._condition


# ---------------------------------------------------------------- queue.Queue

#: ``queue.ShutDown`` (3.13+), None before.
QueueShutDown: Optional[type[Exception]] = getattr(queue, "ShutDown", None)


def queue_not_empty(q: queue.Queue[Any]) -> threading.Condition:
    """The condition (over ``q.mutex``) that ``get()`` waits on and ``put()`` notifies."""
    return q.not_empty


def queue_size(q: queue.Queue[Any]) -> int:
    """``q._qsize()``: the subclass hook; call with ``q.mutex`` held."""
    return q._qsize()


def queue_is_shutdown(q: queue.Queue[Any]) -> bool:
    """Whether ``q.shutdown()`` was called (3.13+; always False before)."""
    return bool(getattr(q, "is_shutdown", False))


def queue_take(q: queue.Queue[T]) -> T:
    """What ``get()`` does once an item is there: ``_get()``, then wake one putter.

    Call with ``q.mutex`` held and ``queue_size(q) > 0``.
    """
    item = q._get()
    q.not_full.notify()
    return item


# ---------------------------------------------------------------- worker start-up

#: Whether workers start through the worker-context protocol (3.14+; see the docstring).
WORKER_CONTEXT: bool = hasattr(ThreadPoolExecutor, "prepare_context")

#: Calls a task as ``ctx.run(task)`` does (3.14+).
TaskRunner = Callable[[Any], Any]
#: Turns ``(fn, args, kwargs)`` into a task at submit, as ``_resolve_work_item_task``.
TaskResolver = Callable[[Callable[..., Any], tuple[Any, ...], dict[str, Any]], Any]


class WorkerContext(Protocol):
    """What a worker calls on its context at start and exit (3.14's protocol)."""

    def initialize(self) -> None:
        """Prepare the worker's thread; if it raises, the pool is broken."""

    def finalize(self) -> None:
        """Release what ``initialize()`` set up; called when the worker exits."""


class InitializerContext:
    """3.9-3.13: the worker-context protocol over ``_initializer`` and ``_initargs``.

    There, as in the stdlib, the initializer is all there is to a worker's start, and
    nothing is done at its exit.
    """

    __slots__ = ("initargs", "initializer")

    def __init__(
        self, initializer: Optional[Callable[..., object]], initargs: tuple[Any, ...]
    ) -> None:
        self.initializer = initializer
        self.initargs = initargs

    def initialize(self) -> None:
        """Call ``initializer(*initargs)``, if there is an initializer."""
        if self.initializer is not None:
            self.initializer(*self.initargs)

    def finalize(self) -> None:
        """Nothing to release."""


if WORKER_CONTEXT:
    CONTEXT_RUN_CODE: Optional[CodeType] = _futures_thread.WorkerContext.run.__code__  # type: ignore[attr-defined]

    def new_worker_context(executor: ThreadPoolExecutor) -> WorkerContext:
        """The context for a worker about to start: ``executor._create_worker_context()``."""
        ctx: WorkerContext = executor._create_worker_context()  # type: ignore[attr-defined]
        return ctx

    def context_runner(ctx: WorkerContext) -> Optional[TaskRunner]:
        """What runs a task in *ctx*: its ``run`` method."""
        run: TaskRunner = ctx.run  # type: ignore[attr-defined]
        return run

    def task_resolver(executor: ThreadPoolExecutor) -> Optional[TaskResolver]:
        """What makes a task at submit: ``executor._resolve_work_item_task``."""
        resolve: TaskResolver = executor._resolve_work_item_task  # type: ignore[attr-defined]
        return resolve

    def reject_context_kwargs(cls: type, ctxkwargs: dict[str, Any]) -> None:
        """Nothing to reject: ``__init__`` passes *ctxkwargs* on to ``prepare_context``."""

else:
    CONTEXT_RUN_CODE = None

    def new_worker_context(executor: ThreadPoolExecutor) -> WorkerContext:
        """The context for a worker about to start, over the executor's initializer."""
        return InitializerContext(executor._initializer, executor._initargs)

    def context_runner(ctx: WorkerContext) -> Optional[TaskRunner]:
        """None: the worker calls ``fn(*args, **kwargs)`` itself."""
        return None

    def task_resolver(executor: ThreadPoolExecutor) -> Optional[TaskResolver]:
        """None: a work item keeps ``fn``, ``args`` and ``kwargs``, nothing else."""
        return None

    def reject_context_kwargs(cls: type, ctxkwargs: dict[str, Any]) -> None:
        """Raise the ``TypeError`` of an unknown keyword: ``**ctxkwargs`` is 3.14+."""
        if ctxkwargs:
            name = next(iter(ctxkwargs))
            raise TypeError(
                f"{cls.__name__}.__init__() got an unexpected keyword argument {name!r}"
            )

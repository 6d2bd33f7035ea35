"""Worker threads: the loop that runs tasks, and what happens to workers at exit.

We own the worker loop instead of reusing ``concurrent.futures.thread._worker``: the
stdlib's loop calls ``_WorkItem.run()``, which sets the result on the future without
asking whether a stop was requested, and its exit hook joins every worker without
limit. The loop below has the shape of the 3.13 one on every version (it marks itself
idle only when the queue is empty, gh-115634), and differs in four things:

* it records on the thread which future it is running (``current``), so that
  ``shutdown()`` can find running tasks and cancel them;
* it puts the task's future in the thread-local slot that ``current_token()`` reads,
  around the call to the task's function only (cleared before the future is touched);
* it reports the outcome through the future's state machine, which drops the outcome of
  a task whose future was cancelled while it ran;
* it starts the task's deadline, if one counts from the start, on the executor's
  ``DeadlineWatch`` (``cancelpool._deadline``).

Start-up and the task call
--------------------------
A worker starts, runs tasks and exits as the stdlib's worker of the same Python does,
through a context from ``cancelpool._compat``: on 3.14+ the executor's worker context
(``ctx.initialize()`` first, each task as ``ctx.run(item.task)``, with ``task`` resolved
at submit, and ``ctx.finalize()`` when the worker exits), so that a subclass overriding
``prepare_context`` gets what it asked for; on 3.9-3.13 ``initializer(*initargs)`` first,
and each task called directly as ``item.fn(*item.args, **item.kwargs)``. If the start-up
raises, the pool is broken (``executor._initializer_failed()``) and the worker exits
without calling ``finalize()``, as in the stdlib. ``TASK_CALLER_CODE`` is the code of the
frame that calls a task's function: ``run_task`` on 3.9-3.13, the stdlib's
``WorkerContext.run`` on 3.14+ (``cancelpool._inject`` walks a stack down to it).

Exit
----
The stdlib registers ``_python_exit`` with ``threading._register_atexit`` to wake its
workers and join them before the interpreter finalizes, so queued work still completes
at exit. We do the same for our workers with our own hook and flag, and keep our workers
out of the stdlib's registry. Our workers are daemon threads (where the interpreter
allows them) so that a worker our hook gives up on (``exit_timeout``) never blocks exit.
A forked child forgets the parent's workers at the fork: they do not exist there.

Locking protocol
----------------
``global_shutdown_lock`` guards ``_global_shutdown`` and ``_live_workers``; ``submit``
holds it (inside the executor's ``_shutdown_lock``) so that no task is queued after the
exit hook has run. A worker's ``current_item`` is written only by that worker and read
without a lock by ``shutdown()``; see ``WorkerThread.run_task`` for the ordering that
makes a racing ``shutdown(cancel_running=True)`` never miss a task, with or without a
GIL (the flag is a one-slot deque; ``docs/design.md``, "Without the GIL"). A worker
learns that it was abandoned from its task's ABANDON transition, under the future's
lock (``WorkerThread._leave_abandoned``).
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
import weakref
from types import CodeType
from typing import TYPE_CHECKING, Any, Callable, Optional

from ._compat import (
    CONTEXT_RUN_CODE,
    TaskResolver,
    WorkerContext,
    context_runner,
    daemon_threads_allowed,
    register_atexit,
)
from ._current import _slot
from ._escalate import deliver_pending
from ._future import CODE_STOPPING, COMPLETE, RUNNING_, TAKE, CancellableFuture
from ._inject import thread_state
from ._stats import WorkerCounts
from ._timer import get_scheduler

if TYPE_CHECKING:
    from ._deadline import DeadlineWatch
    from ._executor import CancellableThreadPoolExecutor

__all__ = (
    "TASK_CALLER_CODE",
    "ContextWorkItem",
    "WorkItem",
    "WorkerThread",
    "all_workers",
    "forget_worker",
    "global_shutdown_lock",
    "is_global_shutdown",
    "work_item_factory",
)

# The stdlib's logger, for the events the stdlib logs (initializer and worker failures):
# logging configured for concurrent.futures keeps working with the drop-in.
FUTURES_LOGGER = logging.getLogger("concurrent.futures")

# Workers of every executor, with their executor's queue, for the exit hook. Weak keys:
# a worker that has exited and been dropped by its executor leaves on its own.
_live_workers: weakref.WeakKeyDictionary[WorkerThread, queue.SimpleQueue[Any]] = (
    weakref.WeakKeyDictionary()
)
# Every worker started, live or abandoned (for finding a task's thread in warnings).
_all_workers: weakref.WeakSet[WorkerThread] = weakref.WeakSet()
#: Cancelled or running: the code of the task may still be executing.
CODE_RUNNING = (RUNNING_, *CODE_STOPPING)
_global_shutdown = False
# How often the exit hook looks for due timer actions while it waits (seconds).
EXIT_POLL = 0.005
# Guards _global_shutdown and _live_workers (see the module docstring).
global_shutdown_lock = threading.Lock()


def forget_worker(worker: WorkerThread) -> None:
    """Stop the exit hook from waiting for *worker* (abandoned). Call under the lock."""
    _live_workers.pop(worker, None)


def is_global_shutdown() -> bool:
    """Whether the interpreter is exiting (our exit hook has run)."""
    return _global_shutdown


def _python_exit() -> None:
    """At interpreter exit: let queued and running work finish, within bounds.

    As the stdlib's hook, wake every worker and join it, so work queued before the exit
    still runs. Unlike it, never wait for ever: a worker whose task was already cancelled
    is not waited for (its outcome is dropped anyway), and the others get their
    executor's ``exit_timeout``; tasks still running after it are cancelled with reason
    ``"exit"`` (forced if the executor forces), given a short last chance, and their
    workers abandoned. Workers are daemon threads, so an abandoned one cannot hold the
    interpreter open. Last, wait (bounded) for the warnings that cancelpool's threads are
    issuing, so that a warning about an abandonment the program saw reaches the user
    before the interpreter stops those threads (``cancelpool._escalate``, "How warnings
    reach the user").
    """
    global _global_shutdown
    with global_shutdown_lock:
        _global_shutdown = True
        items = list(_live_workers.items())
    for _, work_queue in items:
        work_queue.put(None)
    start = time.monotonic()
    stuck = []
    for worker, _ in items:
        if not worker.is_alive() or worker.task_is_stopping():
            continue
        timeout = worker.exit_timeout()
        worker.join(None if timeout is None else max(0.0, start + timeout - time.monotonic()))
        if worker.is_alive():
            stuck.append(worker)
    for worker in stuck:
        worker.cancel_for_exit()
    last_chance = time.monotonic() + 1.0
    for worker in stuck:
        _join_running_timer(worker, last_chance)
        if worker.is_alive():
            worker.abandon_at_exit()
    deliver_pending()


def _join_running_timer(worker: WorkerThread, deadline: float) -> None:
    """Join *worker* until *deadline*, running due escalation steps in this thread.

    The cancellations of the exit hook schedule their steps on the timer thread; at exit,
    3.12+ refuses to start that thread if it is not running yet, so the hook runs them.
    """
    scheduler = get_scheduler()
    while worker.is_alive():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        delay = scheduler.run_due_without_thread()  # None, or > 0: to the next due step
        worker.join(min(remaining, EXIT_POLL if delay is None else min(delay, EXIT_POLL)))


register_atexit(_python_exit)


def _before_fork() -> None:
    """Before a fork: hold ``global_shutdown_lock`` across it (called by ``cancelpool._fork``).

    So that no other thread holds it at the fork (bpo-45021), and no submit or exit hook
    is half-way through what it guards; the stdlib does the same with its own lock. The
    parent releases it (``_after_fork_in_parent``), the child replaces it.
    """
    global_shutdown_lock.acquire()


def _after_fork_in_parent() -> None:
    global_shutdown_lock.release()


def _after_fork_in_child() -> None:
    """In a forked child: a fresh lock, and none of the parent's workers.

    Only the forking thread survives a fork. The parent's workers do not exist in the
    child, and the locks they held at the fork (a future's condition, say) stay held
    for ever there: the child's exit hook must not wait for those workers nor touch
    their tasks, or the child hangs at exit (found by CPython's
    ``test_hang_global_shutdown_lock``, which forks while a task is submitting).
    """
    global global_shutdown_lock
    global_shutdown_lock = threading.Lock()
    _live_workers.clear()


class WorkItem:
    """A queued call. The attribute names are the 3.9-3.13 stdlib ``_WorkItem``'s."""

    __slots__ = ("args", "fn", "future", "kwargs")

    #: 3.14+ only (``ContextWorkItem``): what the worker passes to ``ctx.run``.
    task: Any

    def __init__(
        self,
        future: CancellableFuture[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs


class ContextWorkItem(WorkItem):
    """3.14+: a queued call with its ``task``, resolved at submit as the stdlib does.

    It keeps ``fn``, ``args`` and ``kwargs`` too, for the messages that name the task.
    """

    __slots__ = ("task",)

    def __init__(
        self,
        resolve: TaskResolver,
        future: CancellableFuture[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        # The resolver first: if it raises (a subclass's may refuse a task), submit()
        # raises, as the stdlib's does.
        self.task = resolve(fn, args, kwargs)
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs


#: What makes a work item at submit: ``(future, fn, args, kwargs) -> WorkItem``.
WorkItemFactory = Callable[
    [CancellableFuture[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]], WorkItem
]


def work_item_factory(resolve: Optional[TaskResolver]) -> WorkItemFactory:
    """``WorkItem`` itself, or with a resolver (3.14+), one that resolves the task.

    Args:
        resolve: The executor's ``_resolve_work_item_task`` (``_compat.task_resolver``),
            or None before 3.14.
    """
    if resolve is None:
        return WorkItem
    # A partial, not a closure: no Python frame more per submit than the stdlib's.
    return functools.partial(ContextWorkItem, resolve)


class WorkerThread(threading.Thread):
    """One worker of a ``CancellableThreadPoolExecutor``.

    It holds only a weak reference to its executor, so an executor that is dropped
    without ``shutdown()`` is collected, and its weakref callback wakes the workers to
    exit, as in the stdlib.
    """

    def __init__(
        self,
        name: str,
        executor_ref: weakref.ref[CancellableThreadPoolExecutor],
        work_queue: queue.SimpleQueue[Optional[WorkItem]],
        context: WorkerContext,
        deadlines: DeadlineWatch,
    ) -> None:
        super().__init__(name=name, daemon=daemon_threads_allowed())
        self._executor_ref = executor_ref
        self._work_queue = work_queue
        #: The executor's watch over the deadlines of running tasks.
        self._deadlines = deadlines
        #: How this worker starts and exits (``cancelpool._compat``), and, on 3.14+,
        #: what runs each task (``ctx.run``); None: call the task's ``fn`` directly.
        self._worker_context = context
        self._context_run = context_runner(context)
        #: The work item this worker has taken, until its task's code has stopped.
        self.current_item: Optional[WorkItem] = None
        #: What this worker did; only this thread writes it.
        self.counts = WorkerCounts()
        #: Set when the pool detaches this worker: it takes no further task.
        self.abandoned = False

    def start(self) -> None:
        """Start the thread and register it for the exit hook (call under the lock)."""
        super().start()
        _live_workers[self] = self._work_queue
        _all_workers.add(self)

    def run(self) -> None:
        """The worker loop (see the module docstring)."""
        self.counts.tid = threading.get_ident()
        self.counts.tstate = thread_state()
        try:
            if not self._initialize():
                return
            try:
                self._loop()
            except BaseException:
                # Only a bug in cancelpool gets here: task outcomes, including
                # BaseExceptions, end up on futures. Same policy as the stdlib's worker.
                FUTURES_LOGGER.critical("Exception in worker %s", self.name, exc_info=True)
            finally:
                # 3.14+: what the stdlib's worker does on its way out (a context may
                # hold a resource per worker, e.g. a subinterpreter); nothing before.
                self._worker_context.finalize()
        finally:
            # Let go of the executor's deadline watch, as Thread.run() lets go of its
            # target: the watch refers to the executor's workers, so a stopped worker
            # that kept it would live on in a reference cycle until the collector runs
            # (CPython's threading_cleanup() reports such a thread as dangling).
            del self._deadlines

    def _initialize(self) -> bool:
        """Run the context's start-up; on failure, break the pool (as the stdlib)."""
        try:
            self._worker_context.initialize()
        except BaseException:
            FUTURES_LOGGER.critical("Exception in initializer:", exc_info=True)
            executor = self._executor_ref()
            if executor is not None:
                executor._initializer_failed()
            return False
        return True

    def _loop(self) -> None:
        work_queue = self._work_queue
        while not self.abandoned:
            if work_queue.empty():
                # Idle: let submit() reuse this thread instead of starting another. (The
                # 3.13 loop asks with get_nowait(); raising and catching queue.Empty costs
                # more than the whole of our per-task bookkeeping.)
                executor = self._executor_ref()
                if executor is not None:
                    executor._idle_semaphore.release()
                del executor
            item = work_queue.get(block=True)

            if item is not None:
                try:
                    self.run_task(item)
                except BaseException:
                    # Task outcomes never get here (run_task puts them on the future);
                    # a done-callback raising a BaseException, or a future driven from
                    # outside its executor, does. The stdlib's worker dies of it; ours
                    # logs it and takes the next task, so the pool keeps its capacity.
                    FUTURES_LOGGER.critical(
                        "Exception in worker %s after running %r; the worker carries on",
                        self.name,
                        item.future,
                        exc_info=True,
                    )
                    self._recover(item)
                # Drop the references to the task's function and arguments now,
                # not when the next item arrives (GH-60488).
                del item
                continue

            executor = self._executor_ref()
            # Exit if the interpreter is exiting, or the executor was collected or
            # shut down; pass the wake-up on to the next worker.
            if _global_shutdown or executor is None or executor._shutdown:
                if executor is not None:
                    executor._shutdown = True
                work_queue.put(None)
                return
            del executor

    def run_task(self, item: WorkItem) -> None:
        """Run one task, report its outcome to its future, and clear the references.

        This frame is where the task's code is called from: frames above it are the
        task's, and the only ones an interrupt may be raised in (``cancelpool._inject``).
        """
        future = item.future
        # Publish the item *before* reading the stop-new-tasks flag; shutdown() sets
        # the flag *before* it scans ``current_item``. The flag is a one-slot deque, and
        # our read and shutdown()'s append are operations on that one object, ordered on
        # every build (by the GIL, or by the deque's own lock without one): if our read
        # comes first, our store of ``current_item`` happens before shutdown()'s scan;
        # if the append does, we read the reason. So a task taken during
        # shutdown(cancel_running=True) is cancelled by the worker or by shutdown().
        self.current_item = item
        executor = self._executor_ref()
        stop_reason = None if executor is None else executor._stop_new_tasks[0]
        del executor
        if stop_reason is not None:
            future.cancel(reason=stop_reason)
        # Positional arguments to _transition: keyword parsing is measurable at this rate.
        tally = self.counts
        if not future._transition(TAKE, "", None, None, tally):
            self.current_item = None
            return
        options = future._options
        if options is not None and options.timeout is not None and options.timeout_from == "start":
            self._deadlines.start(future, options.timeout)
        run_in_context = self._context_run
        _slot.future = future
        try:
            if run_in_context is None:  # 3.9-3.13: the stdlib's _WorkItem.run() call
                result = item.fn(*item.args, **item.kwargs)
            else:  # 3.14+: as the stdlib's _WorkItem.run(ctx)
                result = run_in_context(item.task)
        except BaseException as exc:  # noqa: BLE001 - any outcome belongs on the future
            _slot.future = None
            future._transition(COMPLETE, "", None, exc, tally)
        else:
            _slot.future = None
            future._transition(COMPLETE, "", result, None, tally)
        finally:
            self.current_item = None
            # Abandoned by the ladder, or detached from the pool another way (a dask
            # task that seceded, ``cancelpool.dask``): leave, and let the executor go.
            if future._was_abandoned or self.abandoned:
                self._leave_abandoned()
            deadline = future._deadline
            if deadline is not None:
                deadline.cancel()
            # As the stdlib's _WorkItem.run() drops ``self``: a failed task's traceback
            # holds this frame, and the future holds the exception, so the frame must
            # not hold the future, or the cycle keeps both (and this thread, through
            # f_back) until the collector runs; CPython's tests report such a thread.
            del item, future, deadline

    def _leave_abandoned(self) -> None:
        """This worker's task was abandoned: leave the pool, replaced, before the next task.

        The decision was the task's ABANDON transition, under its future's lock; we read
        it after our COMPLETE took that lock, so it is never missed, with or without a
        GIL (a flag written by the escalation's thread and read here without an order
        could let an abandoned worker take one more task, on a thread the pool no longer
        tracks). ``_abandon_worker`` is idempotent under the executor's lock: if the
        escalation got there first (the task was stuck), it does nothing; if the task
        returned before the escalation found this worker, it detaches and replaces it
        here, so the pool keeps its capacity either way. Either way ``abandoned`` is
        True after it, so ``_loop`` exits.

        The task's code has ended and this worker takes no other, so the executor lets
        go of it (``_retire_worker``), keeping its counts: an executor that abandons
        workers all its life does not keep every one of them (issue 11).
        """
        executor = self._executor_ref()
        if executor is not None:
            executor._abandon_worker(self)
            executor._retire_worker(self)
        self.abandoned = True

    def _recover(self, item: WorkItem) -> None:
        """After an exception escaped run_task: make sure the task's future is final."""
        _slot.future = None
        self.current_item = None
        future = item.future
        with future._condition:
            running = future._task in CODE_RUNNING
        if running:
            future._transition(COMPLETE, "", None, None, self.counts)
        if future._was_abandoned or self.abandoned:
            self._leave_abandoned()

    # ------------------------------------------------------------ exit and abandon

    def task_is_stopping(self) -> bool:
        """Whether this worker's current task was cancelled (its code may still run)."""
        item = self.current_item
        if item is None:
            return False
        with item.future._condition:
            return item.future._task in CODE_STOPPING

    def exit_timeout(self) -> Optional[float]:
        """How long interpreter exit waits for this worker (its executor's setting)."""
        executor = self._executor_ref()
        return None if executor is None else executor._policy.exit_timeout

    def cancel_for_exit(self) -> None:
        """Exit is waiting for this worker too long: cancel its task, forced if set so."""
        item = self.current_item
        if item is not None:
            item.future.cancel(reason="exit", grace=0.0)

    def abandon_at_exit(self) -> None:
        """Detach this worker at exit: the interpreter will not wait for it."""
        item = self.current_item
        if item is None:
            return
        from ._escalate import Ladder

        ladder = item.future._ladder
        if isinstance(ladder, Ladder):
            ladder.abandon()
        else:
            self.abandoned = True


#: The code of the frame that calls a task's function (see the module docstring).
TASK_CALLER_CODE: CodeType = CONTEXT_RUN_CODE or WorkerThread.run_task.__code__


def all_workers() -> list[WorkerThread]:
    """Every worker thread of this process still alive (live and abandoned)."""
    return [w for w in list(_all_workers) if w.is_alive()]

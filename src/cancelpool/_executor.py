"""``CancellableThreadPoolExecutor``: the stdlib thread pool, with futures that stop tasks.

What we override and why (everything else is inherited):

``__init__``
    validates its arguments, then lets the stdlib set every attribute that stdlib code
    and third-party code read (``_max_workers``, ``_threads``, ``_work_queue``,
    ``_shutdown``, ``_shutdown_lock``, ``_idle_semaphore``, ``_broken``, ...).
``submit``
    makes a ``CancellableFuture`` bound to the task; rejects a non-callable ``fn``.
``_adjust_thread_count``, ``_initializer_failed``
    start our ``WorkerThread`` instead of the stdlib's ``_worker`` (with the worker
    context the stdlib would give it, see ``cancelpool._compat``); fail queued futures
    through their state machine, outside the executor's lock.
``shutdown``
    adds ``timeout=`` and ``cancel_running=``, and returns the tasks still running;
    with a timeout it returns in time however long the queue (``cancelpool._drain``).
``map``
    cancels the remaining futures, running ones included, when the iterator stops early,
    on every Python version (the stdlib cancels only pending ones, and before 3.12 not
    the one it was waiting on).

Locking protocol
----------------
``_shutdown_lock`` (the stdlib's) guards ``_shutdown``, ``_broken``, the queue draining
in ``shutdown()``/``_initializer_failed()`` and worker creation. ``submit`` holds it and,
inside it, ``_worker.global_shutdown_lock``. No future transition, and so no user
callback, runs under either: items are drained under the lock and failed or cancelled
after it is released, so a done-callback may call ``submit()`` without deadlocking.
``shutdown()`` also sets ``_shutdown`` (only ever from False to True) just before it
takes the lock, so that submitters racing it fail at once rather than hold it off; a
``submit()`` already past its check queues its item before ``shutdown()`` drains.
A worker moves from ``_threads`` to ``_abandoned`` (``_abandon_worker``), and out of it
with its counts into ``_counts.retired`` (``_retire_worker``), under ``_counts.lock``,
the leaf lock that ``statistics()`` takes to list the workers whose tasks it counts.
"""

from __future__ import annotations

import itertools
import logging
import numbers
import operator
import queue
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Generic, Optional, TypeVar, Union

from . import _worker
from ._compat import (
    WORKER_CONTEXT,
    BrokenThreadPool,
    new_worker_context,
    reject_context_kwargs,
    task_resolver,
)
from ._current import _slot
from ._deadline import DeadlineWatch
from ._drain import Drop, drain
from ._escalate import Policy
from ._future import (
    DROP,
    CancellableFuture,
)
from ._options import ExecutorView, TaskOptions, _handoff, submit_with, submits_plainly
from ._stats import ExecutorStatistics, SharedCounts, WorkerCounts
from ._timer import get_scheduler
from ._token import CancelToken
from ._validate import DEFAULT, _Default, check_bool, check_callable, check_timeout
from ._worker import WorkerThread, WorkItem, work_item_factory

if TYPE_CHECKING:
    from typing_extensions import ParamSpec

    P = ParamSpec("P")

__all__ = ("CancellableThreadPoolExecutor",)

T = TypeVar("T")


LOGGER = logging.getLogger("cancelpool")


class CancellableThreadPoolExecutor(ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` whose futures can stop tasks that are already running.

    A drop-in replacement: code written for ``concurrent.futures.ThreadPoolExecutor``
    works unchanged, and CPython's own ``concurrent.futures`` thread-pool tests pass with
    this class swapped in. Each task runs with its own stop token
    (:func:`cancelpool.current_token`); ``future.cancel()`` sets it when the task is
    running, and the task stops when its code next checks. Python has no way to stop a
    thread from outside; for tasks that never check, a *forced* cancel escalates after a
    grace period: ``TaskInterrupted`` is raised in the task's thread at a safe point, and
    a worker still stuck ``abandon_after`` seconds later (blocked in C code) is detached
    and replaced, so the pool keeps its capacity (see :doc:`/forced-cancellation`).

    Differences from ``ThreadPoolExecutor``:

    * ``submit()`` returns a :class:`CancellableFuture`, whose ``cancel()`` also stops
      running tasks (see there), and raises ``TypeError`` at once for a non-callable
      ``fn`` (the stdlib fails the future later).
    * ``shutdown()`` takes ``timeout=`` and ``cancel_running=`` and returns the futures
      whose tasks are still running; ``shutdown(cancel_futures=True, timeout=T)`` cancels
      running tasks too.
    * When a ``map()`` result iterator raises or is closed early, it cancels the
      remaining futures, running ones included.
    * ``statistics()`` returns a snapshot of the tasks by state.
    * Per-task options (a deadline, escalation, a group token) are set on a view,
      ``with_options(...)``, so ``submit()``'s signature stays the stdlib's.
    * A task submitted from inside another task of a cancelpool executor is cancelled
      when that task is (``inherit_token=False`` or ``with_options(inherit=False)`` to
      opt out).
    * ``map()`` takes ``buffersize=`` (3.14's bounded prefetch) on every version.
    * Constructor arguments of the wrong type raise ``TypeError`` naming the argument
      (on 3.14+, *initializer* and *initargs* are checked by ``prepare_context()``, as
      in the stdlib).
    * Worker threads are daemon threads that the executor's own exit hook joins, as the
      stdlib's hook joins its workers: queued work still completes at interpreter exit,
      but for at most ``exit_timeout`` seconds (the stdlib waits for ever), and tasks
      already cancelled are not waited for.

    Args:
        max_workers: The most threads to run tasks in; None picks the stdlib's default
            for this Python (``min(32, cpu count + 4)``).
        thread_name_prefix: Prefix of the worker threads' names.
        initializer: Called with *initargs* at the start of each worker thread; if it
            raises, the pool is broken, as in the stdlib. On 3.14+ workers start through
            the stdlib's worker-context protocol, as ``ThreadPoolExecutor``'s do: a
            subclass that overrides ``prepare_context`` gets its context's
            ``initialize()``, ``run(task)`` and ``finalize()`` called.
        initargs: Arguments for *initializer*.
        force: Whether a plain ``cancel()`` of a running task escalates (per call:
            ``cancel(force=...)``). Default False: cooperative only.
        grace: Seconds a cancelled running task has to stop on its own before it is
            interrupted (force) or a ``StillRunningWarning`` names it (no force);
            ``math.inf``: never.
        abandon_after: Seconds after the first interrupt attempt at which a task still
            running gets its worker abandoned and replaced; ``math.inf``: never.
        exit_timeout: The most seconds interpreter exit waits for this executor's
            unfinished tasks before cancelling them (reason ``"exit"``) and abandoning
            their workers; None (or ``math.inf``) waits as long as they take, like the
            stdlib.
        task_timeout: Every task's deadline, in seconds from when it starts; None (or
            ``math.inf``): no deadline. See :meth:`with_options` for what a deadline does.
        inherit_token: Whether a task submitted from inside another cancelpool task (to
            any ``CancellableThreadPoolExecutor``) is cancelled when that task is.
        **ctxkwargs: 3.14+ only: passed on to ``prepare_context()``, as by the stdlib.

    Raises:
        TypeError: an argument has the wrong type, *initializer* is not callable (3.14+:
            ``prepare_context()``'s error), or an unknown keyword argument is given
            (3.14+: ``prepare_context()``'s error).
        ValueError: *max_workers* is not greater than 0, or a delay is negative or NaN.
    """

    # The stdlib's attributes, typed as this class uses them: typeshed types the queue
    # for the stdlib's _WorkItem, the threads as a read-only set, _broken as a bool.
    _work_queue: queue.SimpleQueue[Optional[WorkItem]]  # type: ignore[assignment]
    _threads: set[WorkerThread]
    _broken: Union[bool, str]  # type: ignore[assignment]

    #: What a broken pool raises: 3.14's class attribute (a subclass may set its own),
    #: defined here on every version so that one code path raises it.
    BROKEN: type[BrokenThreadPool] = BrokenThreadPool

    def __init__(
        self,
        max_workers: Optional[int] = None,
        thread_name_prefix: str = "",
        initializer: Optional[Callable[..., object]] = None,
        initargs: tuple[Any, ...] = (),
        *,
        force: bool = False,
        grace: float = 1.0,
        abandon_after: float = 5.0,
        exit_timeout: Optional[float] = 5.0,
        task_timeout: Optional[float] = None,
        inherit_token: bool = True,
        **ctxkwargs: Any,
    ) -> None:
        reject_context_kwargs(type(self), ctxkwargs)  # before 3.14 there are none
        if max_workers is not None:
            given: object = max_workers  # any Integral: numpy's ints too, as the stdlib
            if isinstance(given, bool) or not isinstance(given, numbers.Integral):
                raise TypeError(f"max_workers must be an int or None, got {max_workers!r}")
            max_workers = operator.index(given)
            if max_workers <= 0:
                raise ValueError(f"max_workers must be greater than 0, got {max_workers!r}")
        if not isinstance(thread_name_prefix, str):
            raise TypeError(f"thread_name_prefix must be a str, got {thread_name_prefix!r}")
        if not WORKER_CONTEXT:
            # 3.14+ leaves these to prepare_context() (called by the stdlib's __init__):
            # the stdlib's checks and errors, or a subclass's, which may accept more.
            if initializer is not None:
                check_callable("initializer", initializer)
            if not isinstance(initargs, tuple):
                raise TypeError(f"initargs must be a tuple, got {initargs!r}")
        check_bool("force", force)
        grace_s = check_timeout("grace", grace, allow_none=False)
        abandon_s = check_timeout("abandon_after", abandon_after, allow_none=False)
        exit_s = check_timeout("exit_timeout", exit_timeout)
        assert grace_s is not None and abandon_s is not None
        #: What plain submit() and map() use; with_options() views override it.
        self._options = TaskOptions(
            timeout=check_timeout("task_timeout", task_timeout),
            inherit=check_bool("inherit_token", inherit_token),
        )
        super().__init__(max_workers, thread_name_prefix, initializer, initargs, **ctxkwargs)
        # What submit() queues: a WorkItem, or on 3.14+ one whose task is resolved by
        # the resolver prepare_context() returned (read here, once).
        self._new_work_item = work_item_factory(task_resolver(self))
        self._counts = SharedCounts()
        self._policy = Policy(
            self,
            force=force,
            grace=grace_s,
            abandon_after=abandon_s,
            exit_timeout=exit_s,
            scheduler=get_scheduler(),
        )
        # Expires the deadlines (counted from the start) of the tasks the workers run.
        self._deadlines = DeadlineWatch(self._policy.scheduler, self._threads)
        # Workers detached because their cancelled task would not stop, until their
        # thread leaves the task (_retire_worker): shutdown() reports their tasks, and
        # statistics() counts their tasks. Not in _threads. Moved in and out under
        # _counts.lock (see statistics()).
        self._abandoned: list[WorkerThread] = []
        # Set by shutdown(cancel_running=True): the reason to cancel any task a worker
        # takes from now on with. A one-slot deque, not an attribute: a worker reads it
        # without a lock after publishing its task, shutdown() appends to it before it
        # scans the workers, and operations on one deque are ordered on every build, so
        # one of the two sees the other without a GIL too (WorkerThread.run_task).
        self._stop_new_tasks: deque[Optional[str]] = deque((None,), maxlen=1)
        # The tasks shutdown(cancel_futures=True) took off the queue, until cancelled
        # (cancelpool._drain): a later shutdown(wait=True) waits for them too.
        self._drop: Optional[Drop] = None
        # Worker names count up, so a name is never reused within one executor.
        self._worker_numbers = itertools.count()

    # ------------------------------------------------------------------ submitting

    def submit(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> CancellableFuture[T]:
        """Schedule ``fn(*args, **kwargs)`` and return a :class:`CancellableFuture`.

        Inside the call, :func:`cancelpool.current_token` returns the task's stop token.
        Called from inside another cancelpool task, the new task is cancelled when that
        task is (unless ``inherit_token=False``). The executor's ``task_timeout``
        applies; other per-task options go through :meth:`with_options`.

        As in the stdlib, every task this executor queues goes through this method:
        ``map()``'s calls and those of :meth:`with_options` views too, so that an
        override in a subclass or a wrapper set on the instance sees them all. A view's
        options reach the task even when such a hook wraps *fn* and then calls this
        method (how, and why that is safe: "Hooks on submit() see every task" in
        :doc:`/compatibility`).

        Returns:
            The future of the call.

        Raises:
            TypeError: *fn* is not callable.
            RuntimeError: the executor was shut down, or the interpreter is exiting.
            concurrent.futures.thread.BrokenThreadPool: a worker's initializer failed.
        """
        # The options a view handed over for this call, if any: taken (read and cleared)
        # first thing, before anything can raise, so no other submit can get them.
        pending = _handoff.pending
        if pending is None or pending[0] is not self:
            return self._submit(fn, args, kwargs, self._options)
        _handoff.pending = None
        return self._submit(fn, args, kwargs, pending[1])

    def _submit(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: TaskOptions,
    ) -> CancellableFuture[T]:
        """``submit()`` with *options* (the executor's own, or a view's)."""
        check_callable("fn", fn)
        future: CancellableFuture[T] = CancellableFuture._for_task(
            self._counts, self._policy, options if options.per_task else None
        )
        with self._shutdown_lock, _worker.global_shutdown_lock:
            if self._broken:
                raise self.BROKEN(self._broken)
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if _worker.is_global_shutdown():
                raise RuntimeError("cannot schedule new futures after interpreter shutdown")
            # 3.14+: the task is resolved here, as in the stdlib (it may raise).
            item = self._new_work_item(future, fn, args, kwargs)
            if options.timeout is not None and options.timeout_from == "submit":
                future._arm_deadline(options)
            # Follow the group's token and the submitting task's before the task is
            # queued, so that a token already cancelled cancels it before any worker
            # can start it. Safe under our locks: the only code that can run here is
            # the cancel of this new future, which has no callbacks yet; a cancel from
            # another thread runs the link in that thread.
            parent = _slot.future if options.inherit else None
            if parent is not None:
                future._follow(
                    (parent.token,) if options.token is None else (options.token, parent.token)
                )
            elif options.token is not None:
                future._follow((options.token,))
            self._work_queue.put(item)
            self._counts.submitted += 1  # we hold _shutdown_lock, its writers' lock
            self._adjust_thread_count()
        return future

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
        """A view of this executor whose ``submit()`` and ``map()`` apply these options.

        Each argument left out keeps the executor's setting::

            quick = executor.with_options(timeout=2.0, force=True, grace=0.5)
            future = quick.submit(fetch, url)     # fetch(url), with a 2 s deadline

        **Deadlines.** When a task's *timeout* passes, its token is cancelled with reason
        ``"deadline"``, its cancel escalates as *force* and *grace* say, and its future
        fails at once with :class:`cancelpool.DeadlineExceeded`, a
        ``concurrent.futures.TimeoutError`` (not ``CancelledError``: ``cancelled()`` is
        False). The deadline counts from when a worker starts the task, so time spent
        queued behind other tasks does not count; with ``timeout_from="submit"`` it
        counts from ``submit()``, and a task still queued when it passes never runs.
        Every deadline is a timer on cancelpool's one timer thread, cancelled when the
        task ends.

        Args:
            timeout: Seconds each task may take, ``>= 0``; None (or ``math.inf``): no
                deadline (also turning off the executor's ``task_timeout``). 0 is a
                deadline passed already: counted from the start, the task's token is
                cancelled before its code runs and the future fails with
                ``DeadlineExceeded`` (the code runs until it checks the token);
                counted from submission, the task never runs.
            timeout_from: ``"start"`` (default) or ``"submit"``.
            force: Whether a cancel of the task (``future.cancel()``, its deadline, its
                group) escalates to an interrupt; ``future.cancel(force=...)`` still
                overrides it per call.
            grace: Seconds the task has to stop on its own before escalating;
                ``math.inf``: never escalates.
            token: A token whose cancel cancels the task (``CancelSource().token``): one
                ``cancel()`` for a whole group. None: no group.
            inherit: Whether a task submitted from inside another cancelpool task is
                cancelled when that task is.

        Returns:
            An :class:`ExecutorView`; cheap, make one wherever convenient.

        Raises:
            TypeError: an argument has the wrong type.
            ValueError: *timeout* or *grace* negative or NaN, *timeout_from* unknown.
        """
        merged = self._options.merged(timeout, timeout_from, force, grace, token, inherit)
        return ExecutorView(self, merged)

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: Optional[float] = None,
        chunksize: int = 1,
        buffersize: Optional[int] = None,
    ) -> Iterator[T]:
        """Return an iterator equivalent to ``map(fn, *iterables)``, calls run in the pool.

        As the stdlib: results come in input order, *timeout* bounds the whole
        iteration, *chunksize* is ignored. Without *buffersize* every call is submitted
        before this returns; with it (as 3.14's ``map``, on every version), only the
        first *buffersize* calls are, and each result taken submits the next call, so an
        endless or huge iterable is consumed as the results are; the iterator keeps the
        executor alive until it has submitted the last call (3.14's lets it be collected
        mid-iteration and then stops early, silently). In addition, when the
        iterator raises (a call's exception, ``TimeoutError``) or is closed or dropped
        before the end, every future it has not yielded yet is cancelled with reason
        ``"map"``, running ones included.

        Each call is submitted through ``self.submit(fn, *args)``, as in the stdlib, so
        that an override or a wrapper of ``submit`` sees every call.

        Raises:
            TypeError: *fn* is not callable, *timeout* not a number, or *buffersize* not
                an int or None (before 3.14, a bool neither; 3.14+ takes it as the
                stdlib does).
            ValueError: *timeout* is negative or NaN, or *buffersize* less than 1.
        """
        return self._map(self._options, fn, iterables, timeout, buffersize)

    def _map(
        self,
        options: TaskOptions,
        fn: Callable[..., T],
        iterables: tuple[Iterable[Any], ...],
        timeout: Optional[float],
        buffersize: Optional[int],
    ) -> Iterator[T]:
        """``map()`` with *options* (the executor's own, or a view's)."""
        check_callable("fn", fn)
        seconds = check_timeout("timeout", timeout)
        if buffersize is not None:
            _check_buffersize(buffersize)
        end_time = None if seconds is None else seconds + time.monotonic()
        arguments = zip(*iterables)
        refill: Optional[_Refill[T]] = None
        first: Iterable[tuple[Any, ...]] = arguments
        if buffersize is not None:
            # (islice takes at most sys.maxsize: a larger buffer is as good as unbounded)
            first = itertools.islice(arguments, min(buffersize, sys.maxsize))
            refill = _Refill(self, options, fn, arguments)
        # Future, not CancellableFuture: a hook on submit() may return another kind.
        futures: list[Future[T]] = []
        # Loops, not comprehensions: the except below needs what was submitted.
        try:
            if submits_plainly(self, options):  # as the stdlib's map, at its cost
                for args in first:
                    futures.append(self.submit(fn, *args))  # noqa: PERF401
            else:
                for args in first:
                    futures.append(submit_with(self, options, fn, args, {}))  # noqa: PERF401
        except BaseException:
            _cancel_each(reversed(futures))
            raise
        return _MapIterator(futures, end_time, refill)

    def _adjust_thread_count(self) -> None:
        # The stdlib's policy: reuse an idle worker if there is one, else start one
        # while below max_workers.
        if self._idle_semaphore.acquire(timeout=0):
            return

        # When the executor is collected, wake the workers so they exit.
        def weakref_cb(_: object, q: queue.SimpleQueue[Any] = self._work_queue) -> None:
            q.put(None)

        if len(self._threads) < self._max_workers:
            self._start_worker(weakref_cb)

    def _start_worker(self, weakref_cb: Callable[[object], None]) -> None:
        """Start one more worker. Call under ``_shutdown_lock`` and the global lock."""
        name = f"{self._thread_name_prefix or self}_{next(self._worker_numbers)}"
        # As the stdlib, each worker gets a context of its own, made here (3.14+: by
        # _create_worker_context(); before: over _initializer and _initargs).
        worker = WorkerThread(
            name,
            weakref.ref(self, weakref_cb),
            self._work_queue,
            new_worker_context(self),
            self._deadlines,
        )
        worker.start()
        self._threads.add(worker)

    def _abandon_worker(self, worker: WorkerThread) -> bool:
        """Detach *worker* (its cancelled task will not stop) and start a replacement.

        The detached thread finishes its task's code if it ever returns, then exits
        without taking another task; the exit hook no longer waits for it.

        Returns:
            Whether a replacement was started (not if the pool can get no more work).
        """
        with self._shutdown_lock, _worker.global_shutdown_lock:
            if worker.abandoned:
                return False
            self._detach_worker(worker)
            _worker.forget_worker(worker)
            # Keep the pool's capacity while it may still get work: not shut down, or
            # shut down with tasks still queued that someone must run or drop. Never at
            # interpreter exit: no task can be queued any more, and 3.12+ refuses to
            # start a thread then.
            may_get_work = not self._shutdown or not self._work_queue.empty()
            if may_get_work and not self._broken and not _worker.is_global_shutdown():

                def weakref_cb(_: object, q: queue.SimpleQueue[Any] = self._work_queue) -> None:
                    q.put(None)

                self._start_worker(weakref_cb)
                return True
            return False

    def _detach_worker(self, worker: WorkerThread) -> None:
        """Take *worker* out of the pool: it finishes its task, then leaves and retires.

        Call under ``_shutdown_lock`` and the global lock. The move from ``_threads`` to
        ``_abandoned`` is one step under the counts' lock, so that ``statistics()``
        counts the worker's tasks once (see there); ``abandoned`` makes the worker leave
        after its task (``WorkerThread.run_task``). For the ladder's abandonment, and for
        a dask task that secedes (``cancelpool.dask``).
        """
        worker.abandoned = True
        with self._counts.lock:
            self._threads.discard(worker)
            self._abandoned.append(worker)

    def _retire_worker(self, worker: WorkerThread) -> None:
        """Let go of abandoned *worker*: its task's code has ended and it is exiting.

        Called by the worker itself (``WorkerThread._leave_abandoned``), after its last
        count, so that an executor that abandons workers does not keep every one of them
        for ever; their counts move to ``SharedCounts.retired``, in the same locked step,
        so the totals of ``statistics()`` do not change. Nothing else needs the worker:
        it runs no task, so ``shutdown()`` has nothing to report from it.
        """
        counts = self._counts
        with counts.lock:
            if worker in self._abandoned:
                self._abandoned.remove(worker)
                counts.retired.add(worker.counts)

    def _initializer_failed(self) -> None:
        with self._shutdown_lock:
            self._broken = "A thread initializer failed, the thread pool is not usable anymore"
            items = self._drain_queue()
        for item in items:
            item.future._transition(DROP, exception=self.BROKEN(self._broken))

    def _drain_queue(self) -> deque[WorkItem]:
        """Take every queued item off the queue, in one fast step (``_drain.drain``).

        Call under ``_shutdown_lock``.
        """
        return drain(self._work_queue)

    # ------------------------------------------------------------------ shutting down

    def shutdown(  # type: ignore[override]  # returns the tasks still running
        self,
        wait: bool = True,
        *,
        cancel_futures: bool = False,
        timeout: Optional[float] = None,
        cancel_running: Optional[bool] = None,
        force: Union[bool, _Default] = DEFAULT,
    ) -> tuple[CancellableFuture[Any], ...]:
        """Stop accepting tasks, optionally cancel them, and wait for the workers.

        Safe to call more than once. With the stdlib's arguments it does what the stdlib
        does: ``cancel_futures=True`` cancels the tasks that have not started and lets
        running ones finish.

        With a *timeout*, the call returns within it plus a few milliseconds, however
        many tasks are queued: the queue is emptied at once, so none of its tasks can
        run; the first thousand are cancelled before the call returns, more while time
        is left, and the rest by a thread of their own right after it (see "A long
        queue" in :doc:`/shutdown`). A future not cancelled yet when the call returns is
        pending; ``result()``, ``wait()`` and ``as_completed()`` see it cancelled
        shortly after (a million take 1-5 s). A later ``shutdown(wait=True)`` waits
        for them too.

        Args:
            wait: Wait for the workers to finish their tasks and exit (bounded by
                *timeout*).
            cancel_futures: Cancel every task that has not started (reason
                ``"shutdown"``). Combined with *timeout*, also cancel running tasks.
            timeout: The most seconds to wait; None waits as long as it takes. Only
                meaningful with ``wait=True``.
            cancel_running: Cancel the tasks that are running (reason ``"shutdown"``), and
                any that a worker takes from now on. Default: ``cancel_futures and timeout
                is not None``. Pass True to ask for it without a timeout.
            force: Escalate the running tasks cancelled here (default: the executor's
                ``force``). With a *timeout*, the ladder is compressed to fit in it: the
                interrupt comes after ``min(grace, timeout / 4)`` and workers still stuck
                at three quarters of the timeout are abandoned, so that the call
                returns within *timeout* whatever the tasks do.

        Returns:
            The futures of the tasks whose code was still running when the call returned
            (empty when every worker was done). A cancelled task that has not yet stopped
            is in this tuple with ``task_state`` ``STOPPING``, ``INTERRUPTING`` or
            ``ABANDONED``. Tasks still queued (``cancel_futures=False``) are not;
            ``statistics().pending`` counts them.

        Raises:
            TypeError: an argument has the wrong type.
            ValueError: *timeout* is negative or NaN, or given with ``wait=False``.
        """
        seconds = check_timeout("timeout", timeout)
        if cancel_running is None:
            cancel_running = bool(cancel_futures) and seconds is not None
        check_bool("cancel_running", cancel_running)
        if force is not DEFAULT:
            check_bool("force", force)
        use_force = self._policy.force if force is DEFAULT else bool(force)
        if seconds is not None and not wait:
            raise ValueError(f"timeout={timeout!r} needs wait=True: nothing waits with wait=False")
        deadline = None if seconds is None else time.monotonic() + seconds
        # Set before the lock too: submit() calls racing this one then give up at their
        # next try instead of queueing behind it for the lock (issue 11).
        self._shutdown = True
        with self._shutdown_lock:
            self._shutdown = True
            if cancel_running:
                # Before the scan below: see WorkerThread.run_task.
                self._stop_new_tasks.append("shutdown")
            dropped = self._drain_queue() if cancel_futures else None
            # Wake workers blocked on the queue so they see _shutdown and exit.
            self._work_queue.put(None)
        workers = list(self._threads)
        stop: Optional[BaseException] = None
        if cancel_running:
            # Before the queued tasks: those can no longer run, and the escalation of
            # these counts its compressed ladder from now.
            stop = self._cancel_running(workers, use_force, seconds)
        if dropped:
            self._drop = Drop(dropped, "shutdown")
            # Within the timeout, or all of them (as the stdlib) without one.
            self._drop.run_or_hand_off(deadline)
        if wait:
            me = threading.current_thread()
            for worker in workers:
                if worker is me:  # shutdown() from inside a task: it cannot join itself
                    continue
                if deadline is None:
                    worker.join()
                else:
                    worker.join(max(0.0, deadline - time.monotonic()))
            drop = self._drop
            if drop is not None:  # futures done, even those an earlier call handed off
                drop.finish(deadline)
        # Nothing of ours stays on the timer that no running task needs, so its thread
        # exits once idle (a pending deadline check would keep it until due); with
        # wait=True, no thread of ours outlives the call: if nothing at all is scheduled,
        # the timer thread exits now (Scheduler.retire_if_idle).
        self._deadlines.close()
        if wait:
            left = 1.0 if deadline is None else max(0.0, deadline - time.monotonic())
            self._policy.scheduler.retire_if_idle(min(left, 1.0))
        abandoned = list(self._abandoned)  # one step: a worker may retire meanwhile
        running = self._still_running(workers + [w for w in abandoned if w not in workers])
        _reraise(stop)  # a token callback's KeyboardInterrupt, once all the rest is done
        return running

    def _cancel_running(
        self, workers: list[WorkerThread], force: bool, seconds: Optional[float]
    ) -> Optional[BaseException]:
        """Cancel the workers' running tasks (and escalate them, if *force*).

        Returns:
            The first exception a cancel raised (a token callback's ``BaseException``),
            for ``shutdown()`` to re-raise once it has done the rest; None if none did.
        """
        policy = self._policy
        if seconds is None:
            grace, abandon_after = policy.grace, policy.abandon_after
        else:  # compress the ladder into the timeout
            grace = min(policy.grace, seconds / 4)
            abandon_after = max(0.0, seconds * 0.75 - grace)
        stop: Optional[BaseException] = None
        for worker in workers:
            item = worker.current_item
            if item is None:
                continue
            future = item.future
            try:
                future.cancel(reason="shutdown", force=False)
            except BaseException as exc:  # noqa: BLE001 - re-raised after the rest (_cancel_each)
                stop = _first(stop, exc)
            if force:
                policy.escalate(future, True, grace, abandon_after)
        return stop

    @staticmethod
    def _still_running(workers: list[WorkerThread]) -> tuple[CancellableFuture[Any], ...]:
        running = []
        for worker in workers:
            item = worker.current_item
            if item is not None and not item.future._stopped_now():
                running.append(item.future)
        return tuple(running)

    # ------------------------------------------------------------------ introspection

    def statistics(self) -> ExecutorStatistics:
        """Return a snapshot of this executor's tasks by state.

        Exact whenever no task is changing state; see ``ExecutorStatistics``.
        """
        counts = self._counts
        with counts.lock:
            # Under the lock that moves a worker from _threads to _abandoned and on to
            # counts.retired: each worker's tasks are counted once, and none is missed.
            workers = [worker.counts for worker in list(self._threads) + self._abandoned]
            retired = WorkerCounts()
            retired.add(counts.retired)
        workers.append(retired)
        # Read in causal order: each event is read before the events that must precede
        # it for the same task (a task ends after it started, starts after it was
        # submitted, is cancelled while running after it started and before it stops),
        # so that a derived count includes every task it subtracts and is never negative.
        stopped = sum(w.stopped for w in workers)
        completed = sum(w.completed for w in workers)
        failed = sum(w.failed for w in workers)
        with counts.lock:
            cancelled_running = counts.cancelled_running
            cancelled_pending = counts.cancelled_pending
            expired_running = counts.expired_running
            expired_pending = counts.expired_pending
            broken = counts.broken
            interrupts = counts.interrupts
            abandoned = counts.abandoned
        started = sum(w.started for w in workers)
        submitted = counts.submitted
        return ExecutorStatistics(
            max_workers=self._max_workers,
            workers=sum(1 for worker in list(self._threads) if worker.is_alive()),
            submitted=submitted,
            pending=max(0, submitted - started - cancelled_pending - expired_pending - broken),
            running=max(0, started - completed - failed - cancelled_running - expired_running),
            completed=completed,
            failed=failed + broken,
            cancelled=cancelled_pending + cancelled_running,
            timed_out=expired_pending + expired_running,
            stopping=max(0, cancelled_running + expired_running - stopped),
            interrupts=interrupts,
            abandoned_workers=abandoned,
        )

    def __repr__(self) -> str:
        stats = self.statistics()
        state = "shut down" if self._shutdown else "open"
        if self._broken:
            state = "broken"
        return (
            f"<{type(self).__name__} {self._thread_name_prefix!r} {state}"
            f" max_workers={stats.max_workers} workers={stats.workers}"
            f" pending={stats.pending} running={stats.running} stopping={stats.stopping}>"
        )


class _MapIterator(Iterator[T]):
    """The iterator ``map()`` returns: the stdlib's generator, with a stronger ``close()``.

    ``close()`` cancels the remaining futures even before the first ``next()``.

    A generator's ``close()`` before its first ``next()`` runs none of its code, so the
    stdlib's map iterator closed that early leaves every task to run. Dropping the
    iterator keeps the stdlib's meaning: unstarted, the tasks still run (code relies on
    ``executor.map(fn, items)`` without iterating); started, the rest are cancelled.
    """

    __slots__ = ("_futures", "_results")

    def __init__(
        self,
        futures: list[Future[T]],
        end_time: Optional[float],
        refill: Optional[_Refill[T]],
    ) -> None:
        self._futures: deque[Future[T]] = deque(futures)
        self._results = _map_results(self._futures, end_time, refill)

    def __next__(self) -> T:
        return next(self._results)

    def close(self) -> None:
        """Stop iterating: cancel every future not yielded yet (reason ``"map"``)."""
        self._results.close()
        # Last submitted first, as the stdlib's map: the queued futures are cancelled
        # before the running ones, so a worker freed by a stopping task cannot take a
        # queued one in between. (If iteration had started, the generator's finally
        # already cancelled them in that order; these calls are then no-ops.)
        try:
            _cancel_each(reversed(self._futures))
        finally:
            self._futures.clear()


class _Refill(Generic[T]):
    """``map(buffersize=...)``'s supply of further calls: submits the next one on demand.

    It submits through the executor's ``submit()``, as 3.14's ``map`` does, so that
    hooks on it see these calls too.

    Unlike 3.14's ``map``, it holds the executor strongly, until the arguments run out:
    ``list(CancellableThreadPoolExecutor(2).map(f, items, buffersize=4))`` returns every
    result. 3.14's holds a weak reference ("so that the executor can be garbage
    collected independently of the result iterator", gh-74028), and when nothing else
    refers to the executor, it is freed mid-iteration and the iterator silently ends
    after the buffered calls: 4 results of 100 (issue 11). A strong reference keeps the
    executor no longer than the iterator needs it: when the iterator is its only owner,
    dropping or closing the iterator (or running out of arguments) lets the executor
    go, and its workers exit as with any executor dropped unused.
    """

    __slots__ = ("_arguments", "_executor", "_fn", "_options")

    def __init__(
        self,
        executor: CancellableThreadPoolExecutor,
        options: TaskOptions,
        fn: Callable[..., T],
        arguments: Iterator[tuple[Any, ...]],
    ) -> None:
        self._executor: Optional[CancellableThreadPoolExecutor] = executor
        self._options = options
        self._fn = fn
        self._arguments = arguments

    def next_future(self) -> Optional[Future[T]]:
        """Submit the next call; None when the arguments are used up.

        Raises:
            RuntimeError: the executor was shut down (from ``submit()``).
        """
        executor = self._executor
        if executor is None:
            return None
        args = next(self._arguments, None)
        if args is None:
            self._executor = None  # not needed any more: let it go (see above)
            return None
        if submits_plainly(executor, self._options):
            return executor.submit(self._fn, *args)
        return submit_with(executor, self._options, self._fn, args, {})


def _map_results(
    futures: deque[Future[T]],
    end_time: Optional[float],
    refill: Optional[_Refill[T]],
) -> Generator[T, None, None]:
    """Yield the results of *futures* in order; cancel the rest if stopped early."""
    # A generator of its own, so that map() submits its first calls before the caller
    # asks for the first result.
    try:
        futures.reverse()  # pop() from the right keeps input order; newest on the left
        while futures:
            if refill is not None:
                # As 3.14: submit the next call before waiting for the oldest, so that
                # buffersize calls stay queued or running while we wait.
                future = refill.next_future()
                if future is not None:
                    futures.appendleft(future)
            timeout = None if end_time is None else end_time - time.monotonic()
            yield _result_or_cancel(futures.pop(), timeout)
    finally:
        _cancel_each(futures)


def _result_or_cancel(future: Future[T], timeout: Optional[float]) -> T:
    try:
        try:
            return future.result(timeout)
        except BaseException:
            # Timed out, the task raised, or the caller was interrupted: stop the task.
            # (After a normal return the future is finished and cancel() would be a
            # no-op; skipping it saves a lock round trip per item.)
            _cancel(future)
            raise
    finally:
        # Break a reference cycle with the exception in future._exception (as stdlib).
        del future


def _cancel_each(futures: Iterable[Future[Any]]) -> None:
    """``_cancel`` every one of *futures*, whatever one of the cancels raises.

    A cancel raises only what a token callback raised that is not an ``Exception``
    (``KeyboardInterrupt``, ``SystemExit``: ``cancelpool._token``); it must not leave the
    later futures running. The first is re-raised once every future is cancelled.
    """
    stop: Optional[BaseException] = None
    for future in futures:
        try:
            _cancel(future)
        except BaseException as exc:  # noqa: BLE001, PERF203 - re-raised after the rest
            stop = _first(stop, exc)
    _reraise(stop)


def _first(stop: Optional[BaseException], exc: BaseException) -> BaseException:
    """The exception to re-raise after a loop of cancels: the first; log the others."""
    if stop is None:
        return exc
    LOGGER.error(
        "%r raised while cancelling; not re-raised, an earlier %r is", exc, stop, exc_info=exc
    )
    return stop


def _reraise(stop: Optional[BaseException]) -> None:
    if stop is not None:
        try:
            raise stop
        finally:
            stop = None  # no cycle through this frame's traceback


def _cancel(future: Future[Any]) -> None:
    """Cancel one of ``map()``'s futures with reason ``"map"``.

    A hook on ``submit()`` may have returned a future of another kind, whose ``cancel()``
    takes no reason (the stdlib's ``map`` calls it so).
    """
    if isinstance(future, CancellableFuture):
        future.cancel(reason="map")
    else:
        future.cancel()


#: Whether the running Python's own ``Executor.map`` takes and checks ``buffersize``.
_STDLIB_BUFFERSIZE = sys.version_info >= (3, 14)


def _check_buffersize(buffersize: object) -> None:
    """Check ``map()``'s *buffersize* (not None) as 3.14's ``Executor.map`` does.

    On 3.14+ exactly as the stdlib there, messages included (its tests match them), so
    whatever the stdlib's ``map`` takes, ours takes: a bool counts as an int (``True`` is
    1, ``False`` fails as less than 1). Before 3.14, where the stdlib has no *buffersize*,
    the same words with the bad value appended, and a bool is refused as the wrong type.

    Raises:
        TypeError: *buffersize* is not an int (or, before 3.14, is a bool).
        ValueError: *buffersize* is less than 1.
    """
    if _STDLIB_BUFFERSIZE:
        if not isinstance(buffersize, int):
            raise TypeError("buffersize must be an integer or None")
        if buffersize < 1:
            raise ValueError("buffersize must be None or > 0")
        return
    if isinstance(buffersize, bool) or not isinstance(buffersize, int):
        raise TypeError(f"buffersize must be an integer or None, got {buffersize!r}")
    if buffersize < 1:
        raise ValueError(f"buffersize must be None or > 0, got {buffersize!r}")

"""Stop running tasks on a dask.distributed cluster: the ``CancelRunningTasks`` worker plugin.

An optional extra (``pip install cancelpool[dask]``); ``import cancelpool`` never imports
this module or ``distributed``::

    from cancelpool.dask import CancelRunningTasks

    client.register_plugin(CancelRunningTasks(force=False, grace=1.0))
    fut = client.submit(long_job, x)
    client.cancel(fut)        # the task's token is set on its worker; it stops

The problem
-----------
A dask worker runs a task's function on a ``concurrent.futures`` thread pool
(``Worker.executors["default"]``). ``client.cancel()`` of a task that is already running
moves it to the ``cancelled`` state on its worker, but nothing stops the thread: it runs
on, and the worker keeps the thread's slot busy until the function returns
(dask/distributed#4694).

The construction
----------------
``setup()`` replaces the worker's default executor with a ``CancellableThreadPoolExecutor``
of the same size (``_DaskThreadPoolExecutor``), so tasks run with a stop token
(:func:`cancelpool.current_token`, the waiting helpers, ``shield()``).

*Which task runs which key* is learnt in the task's own thread. dask's task wrapper
(``distributed.worker._run_task``) writes ``active_threads[ident] = key`` under
``active_threads_lock`` before it calls the task's function, and deletes the entry after.
The plugin puts its own dict there (``_ActiveThreads``), whose ``__setitem__`` and
``__delitem__`` tell the plugin that *key* starts or stops running as the cancelpool task
of this thread (``_started``/``_stopped``).

*When the scheduler lets go of a running key* (``client.cancel``, a released future, a
client that disconnects), the worker moves it from ``executing`` or ``long-running`` to
``cancelled`` and calls the plugin's ``transition()`` hook, on its event loop. (The hook
is told the transition asked for, ``executing -> released``; the plugin reads the state
the key is in afterwards.)

Locking protocol
----------------
One lock, the plugin's ``_lock``, guards ``_runs`` (key -> the run of the key in a
thread), ``_cancels`` (keys cancelled before their run reached its thread) and
``_timeouts`` (keys that start executing with a deadline annotation).

* ``_started`` (task thread): in one critical section, registers the run and takes the
  key's pending cancel and pending deadline.
* ``transition`` (event loop): in one critical section, finds the key's run, or, if it
  has none, records the cancel as pending.

So a cancel is never lost and never applied twice: whichever critical section comes
first, the other sees what it did. The cancel itself (``future.cancel``, which runs
the token's callbacks) is made after the lock is released; it is idempotent, and it
acts on the future of that one run, which no other run shares. A pending cancel is
dropped when the key leaves ``cancelled``: then its execution has ended (``released``)
or the scheduler wants the running result after all (``resumed``), and no run of an
earlier cancel may be hit by it.

Seceding and rejoining move threads between the pool's ``_threads`` and its detached
list under the executor's own locks (``_shutdown_lock``, the global lock, the counts'
lock), as abandoning does; a rejoin is handed over under ``_rejoin_lock``, taken first.
The thread that gives its place marks itself to leave after its task; the one that
rejoins is unmarked by it before the ``threading.Event`` it waits on is set, so it reads
the change when it wakes. Each thread reads its own mark only at the end of its task.

The run's label (its key, which warnings name) is written on its future before
``_started`` registers the run under ``_lock``; every cancel of the run, and so every
escalation and warning, comes after that registration, so it sees the label.

Lock order: ``_started``/``_stopped`` run under dask's ``active_threads_lock`` and take
``_lock`` inside it; nothing takes ``active_threads_lock`` while holding ``_lock``.
The timer's lock (``call_later``) is taken inside ``_lock``; the timer runs its actions
without its lock. Nothing here relies on the GIL.

What dask is told
-----------------
What dask waits on is not the cancelpool future. The worker awaits
``loop.run_in_executor(executor, ...)``, an asyncio future chained to the one ``submit()``
returns; had that future been cancelled, the worker's ``execute`` coroutine would end with
``asyncio.CancelledError``, which the worker drops ("should exclusively happen in
Worker.close()"): the key would stay ``cancelled`` and its slot busy for ever. So
``submit()`` returns a plain future (``_DaskFuture``) that is settled when the task's
*code* has stopped, with the message dask's wrapper returned, except that:

* a run whose deadline passed reports ``DeadlineExceeded``, as the client sees it;
* a run whose worker the escalation ladder abandons (``force=True``, stuck in C) is
  settled at the abandonment with ``distributed.Reschedule``, so that dask frees its
  slot while cancelpool starts a replacement thread, and so is a task cancelled before
  a thread took it (the worker closing).

A cancelled run reports what it did, most often a failure with ``TaskCancelled``. dask
drops the outcome of a cancelled key; and if the key was wanted again while the
cancelled run was stopping (resubmitted), dask ignores that run's outcome (its
``run_id`` is stale) and computes the key again.

A task's deadline (``dask.annotate(cancelpool_timeout=30)``) counts from when its
function starts in its thread, as ``with_options(timeout=...)`` does, and is a timer on
cancelpool's timer thread. When it passes, the task's future fails with
``DeadlineExceeded`` and its token is cancelled with reason ``"deadline"`` (the EXPIRE
event of the future's state machine).

``secede()``, ``rejoin()`` and ``worker_client()`` work: a task that secedes leaves the
pool, which starts a replacement thread; its thread exits after the task, unless it
rejoins, which it does when another worker finishes a task and hands it its place.

What it cannot do
-----------------
Code blocked in C (a long numpy call, a socket read without a token-aware wait) cannot be
interrupted; with ``force=True`` its thread is abandoned after ``abandon_after`` and
replaced, and dask's slot is freed, but the abandoned thread runs on until the call
returns. Tasks that run on other executors (``annotate(executor=...)``), coroutine tasks,
actors, and tasks already running on the old executor when the plugin was registered are
not stopped.

Private details of distributed this module relies on (checked on 2026.8.0):
``Worker.executors``, ``Worker.active_threads`` and ``active_threads_lock`` and how
``_run_task`` writes them; ``Worker.execute`` takes the thread-pool path only when
``"ThreadPoolExecutor" in str(type(executor))``; the task's result message and
``Reschedule``; ``WorkerPlugin.transition`` called after each transition on the event
loop; ``distributed.threadpoolexecutor.thread_state.executor`` read by ``secede()`` and
``rejoin()``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import reprlib
import threading
import weakref
from collections.abc import Iterator, MutableMapping
from concurrent.futures import Future, InvalidStateError
from typing import Any, Callable, Optional

try:
    import distributed  # type: ignore[import-not-found, unused-ignore]
    from distributed import threadpoolexecutor as _dask_pool
    from distributed.core import error_message as _error_message
except ImportError as exc:  # pragma: no cover - tested with distributed installed
    raise ImportError(
        "cancelpool.dask needs dask.distributed, which is not installed: "
        "pip install 'cancelpool[dask]'"
    ) from exc

from . import _inject, _worker
from ._current import _slot
from ._exceptions import DeadlineExceeded
from ._executor import CancellableThreadPoolExecutor
from ._future import EXPIRE, CancellableFuture, TaskState
from ._timer import TimerHandle
from ._validate import check_bool, check_timeout
from ._worker import WorkerThread

__all__ = ("ANNOTATION", "CLOSE_REASON", "REASON", "CancelRunningTasks")

#: Under dask's worker logger, so that what the plugin logs is where dask users look:
#: the worker's log, ``client.get_worker_logs()``, the dashboard.
LOGGER = logging.getLogger("distributed.worker.cancelpool")

#: The annotation that gives a task a deadline, in seconds from when its function starts.
ANNOTATION = "cancelpool_timeout"

#: The reason a task cancelled by the scheduler sees (``token.reason``).
REASON = "dask-cancel"

#: The reason of a task whose worker closes while it runs.
CLOSE_REASON = "dask-close"

_RUNNING = frozenset({"executing", "long-running"})
#: States in which a key's execution may still be under way.
_EXECUTION = frozenset({"executing", "long-running", "cancelled", "resumed"})
_CLOSING = frozenset({"closing", "closing_gracefully", "closed", "failed"})
_DEFAULT_PREFIX = "Dask-Default-Threads"
#: Seconds a closing worker waits for its running tasks: ``Worker.close``'s default timeout.
_CLOSE_WAIT = 30.0
_repr = reprlib.Repr()
_repr.maxstring = 80


# ------------------------------------------------------------------ what dask awaits


class _DaskFuture(Future):  # type: ignore[type-arg]
    """The future dask awaits: settled when the task's code stops, never cancelled by us.

    Cancelling it (asyncio does when the worker cancels its ``execute`` coroutine, as on
    close) cancels the task too.
    """

    inner: Optional[CancellableFuture[Any]] = None

    def cancel(self) -> bool:
        # This future first: the task, once cancelled, may settle it at once.
        if not super().cancel():
            return False  # settled: the task's code has ended
        inner = self.inner
        if inner is not None:
            inner.cancel(reason=CLOSE_REASON)
        return True

    def settle(self, message: Any) -> None:
        """Set dask's message as the result, unless already settled or cancelled."""
        with contextlib.suppress(InvalidStateError):
            self.set_result(message)


def _failure(exc: BaseException, start: float, stop: float) -> dict[str, Any]:
    """A task-failure message as dask's wrapper makes one, for *exc*."""
    message: dict[str, Any] = dict(_error_message(exc))
    message.update(op="task-erred", actual_exception=exc, start=start, stop=stop)
    message["thread"] = threading.get_ident()
    return message


#: What ``_report`` is given for a run whose code has not ended (its thread abandoned).
_NO_MESSAGE = object()


def _report(inner: CancellableFuture[Any], message: Any, start: float, stop: float) -> Any:
    """What dask is told of a run: *message*, or what stands for it (module docstring).

    *message* is ``_NO_MESSAGE`` for a run settled before its code ended (abandoned).
    """
    if inner.done() and not inner.cancelled():
        exc = inner.exception(0)
        if isinstance(exc, DeadlineExceeded):
            return _failure(exc, start, stop)
    if message is _NO_MESSAGE:
        return _failure(distributed.Reschedule(), start, stop)
    return message


def _settle_if_never_ran(outer: _DaskFuture) -> Callable[[Future[Any]], None]:
    """A done-callback of the task's future: settle *outer* if the task never ran."""

    def done(inner: Future[Any]) -> None:
        assert isinstance(inner, CancellableFuture)
        if inner.task_state is TaskState.CANCELLED:  # cancelled before a worker took it
            now = distributed.metrics.time()
            outer.settle(_failure(distributed.Reschedule(), now, now))

    return done


class _SecedeShim:
    """What ``distributed.threadpoolexecutor.secede()``/``rejoin()`` see as the pool.

    They read ``thread_state.executor._threads``, ``_adjust_thread_count()``,
    ``_rejoin_lock``, ``_rejoin_list`` and ``submit()``; each goes to our executor,
    under its locks.
    """

    __slots__ = ("_executor",)

    def __init__(self, executor: _DaskThreadPoolExecutor) -> None:
        self._executor = executor

    @property
    def _threads(self) -> _SecedeShim:
        return self

    def remove(self, thread: threading.Thread) -> None:
        """``secede()``: *thread* leaves the pool; KeyError if it is not in it."""
        self._executor._secede(thread)

    def _adjust_thread_count(self) -> None:
        """Nothing to do: ``_secede`` started the replacement under the pool's lock."""

    @property
    def _rejoin_lock(self) -> threading.Lock:
        return self._executor._rejoin_lock

    @property
    def _rejoin_list(self) -> list[tuple[threading.Thread, threading.Event]]:
        return self._executor._rejoin_list

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        return self._executor.submit(fn, *args, **kwargs)


class _Handoff(threading.local):
    outer: Optional[_DaskFuture] = None


class _DaskThreadPoolExecutor(CancellableThreadPoolExecutor):
    """The executor handed to dask: ``submit()`` returns a ``_DaskFuture``.

    The class name contains "ThreadPoolExecutor" on purpose: ``Worker.execute`` checks it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._handoff = handoff = _Handoff()
        make_item = self._new_work_item

        def new_work_item(future: CancellableFuture[Any], *args: Any) -> Any:
            # Under submit()'s lock, before the item is queued: the outer future is on
            # the task's future before any worker can take it (read by _abandon_worker).
            future._dask_outer = handoff.outer  # type: ignore[attr-defined]
            return make_item(future, *args)

        self._new_work_item = new_work_item
        #: Seceded threads waiting to rejoin, and its lock: as dask's own pool has them.
        self._rejoin_lock = threading.Lock()
        self._rejoin_list: list[tuple[threading.Thread, threading.Event]] = []
        #: The dask worker whose tasks run here (set by the plugin), and whether it closes.
        self._dask_worker: Callable[[], Any] = lambda: None
        self._closing = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)``; the returned future is settled when its code stops."""
        outer = _DaskFuture()
        self._handoff.outer = outer
        try:
            inner: CancellableFuture[Any] = super().submit(self._run, outer, fn, args, kwargs)
        finally:
            self._handoff.outer = None
        outer.inner = inner
        inner.add_done_callback(_settle_if_never_ran(outer))
        return outer

    def _run(
        self,
        outer: _DaskFuture,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """The task: dask's wrapper, then what dask is told (module docstring)."""
        inner = _slot.future
        assert inner is not None
        start = distributed.metrics.time()
        _dask_pool.thread_state.executor = _SecedeShim(self)
        _dask_pool.thread_state.proceed = True
        try:
            message = fn(*args, **kwargs)
        except BaseException as exc:
            # Only an interrupt that landed in dask's wrapper itself gets here (the
            # task's own exceptions are in its message); a BaseException must not
            # reach the worker's coroutine, which catches only Exception.
            self._forget_thread(threading.get_ident())
            stop = distributed.metrics.time()
            outer.settle(_report(inner, _failure(exc, start, stop), start, stop))
            raise
        else:
            outer.settle(_report(inner, message, start, distributed.metrics.time()))
            return message
        finally:
            del _dask_pool.thread_state.executor
            del _dask_pool.thread_state.proceed
            self._give_place_to_rejoining()

    def _forget_thread(self, ident: int) -> None:
        """Drop this thread's entry in dask's active_threads, left by an interrupted wrapper."""
        worker = self._dask_worker()
        if worker is None:
            return
        with worker.active_threads_lock:
            if ident in worker.active_threads:
                del worker.active_threads[ident]

    def shutdown(self, wait: bool = True, **kwargs: Any) -> Any:
        """As the base's; at a worker's close, waits at most as dask waits for its own pool.

        ``Worker.close`` calls ``shutdown(wait=True)`` with a timeout only for dask's own
        executor class; after the plugin's teardown at close, a call without one waits
        at most ``_CLOSE_WAIT`` seconds, as ``Worker.close(timeout=30)`` does for dask's.
        """
        if self._closing and kwargs.get("timeout") is None:
            kwargs["timeout"] = _CLOSE_WAIT
        return super().shutdown(wait, **kwargs)

    def _abandon_worker(self, worker: WorkerThread) -> bool:
        replaced = super()._abandon_worker(worker)
        # The ladder abandoned the running task of *worker*: an ABANDON transition takes
        # place only while the task's code runs, and an abandoned worker takes no other
        # task, so current_item, if still set, is that task's.
        item = worker.current_item
        if item is not None:
            outer = getattr(item.future, "_dask_outer", None)
            if outer is not None:
                now = distributed.metrics.time()
                outer.settle(_report(item.future, _NO_MESSAGE, now, now))
        return replaced

    # -------------------------------------------------------------- secede and rejoin

    def _secede(self, thread: threading.Thread) -> None:
        """*thread* leaves the pool for the rest of its task; a replacement starts."""
        with self._shutdown_lock, _worker.global_shutdown_lock:
            if not isinstance(thread, WorkerThread) or thread not in self._threads:
                raise KeyError(thread)
            self._detach_worker(thread)  # after its task, it leaves (unless it rejoins)
            if not self._shutdown and not self._broken and not _worker.is_global_shutdown():
                self._adjust_thread_count()

    def _give_place_to_rejoining(self) -> None:
        """If a seceded thread waits to rejoin, give it this worker's place.

        Called by a worker at the end of each task; the worker then leaves the pool
        after the task, and the seceded thread carries on as a worker after its own.
        """
        with self._rejoin_lock:
            if not self._rejoin_list:
                return
            me = threading.current_thread()
            with self._shutdown_lock, _worker.global_shutdown_lock:
                if not isinstance(me, WorkerThread) or me not in self._threads:
                    return  # seceded or abandoned itself: it has no place to give
                joining, event = self._rejoin_list.pop()
                # Only threads that seceded from this pool rejoin it (the shim they
                # were given names it); dask's own threads rejoin dask's pool.
                assert isinstance(joining, WorkerThread)
                self._detach_worker(me)
                with self._counts.lock:  # back into the pool, in one step as well
                    if joining in self._abandoned:
                        self._abandoned.remove(joining)
                    self._threads.add(joining)
                joining.abandoned = False
        event.set()


# Frames above _run are the task's (its frame is ours, in a protected module).
_inject.add_task_caller(_DaskThreadPoolExecutor._run.__code__)


# ------------------------------------------------------------------------ the plugin


class _Run:
    """One run of a key in a thread: its task's future and its deadline timer."""

    __slots__ = ("deadline", "future")

    def __init__(self, future: CancellableFuture[Any]) -> None:
        self.future = future
        self.deadline: Optional[TimerHandle] = None


class _ActiveThreads(MutableMapping):  # type: ignore[type-arg]
    """dask's ``active_threads``, whose writes tell the plugin when a key starts and stops.

    A view of the worker's own dict, not a copy: a task that was already running when the
    plugin was set up (or removed) writes to that dict, through whichever object it was
    handed, and the entries stay right either way.
    """

    def __init__(self, plugin: CancelRunningTasks, entries: dict[int, Any]) -> None:
        self._plugin = plugin
        self.entries = entries

    def __getitem__(self, ident: int) -> Any:
        return self.entries[ident]

    def __setitem__(self, ident: int, key: Any) -> None:
        self.entries[ident] = key
        if ident == threading.get_ident():
            self._plugin._started(key)

    def __delitem__(self, ident: int) -> None:
        key = self.entries.pop(ident)
        if ident == threading.get_ident():
            self._plugin._stopped(key)

    def __iter__(self) -> Iterator[int]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def copy(self) -> dict[int, Any]:
        """A plain dict of the entries, as ``dict.copy()`` (dask's profiler calls it)."""
        return self.entries.copy()

    def __repr__(self) -> str:
        return repr(self.entries)


class CancelRunningTasks(distributed.WorkerPlugin):  # type: ignore[misc]
    """A worker plugin that stops tasks the scheduler cancels while they run.

    Register it once per cluster: ``client.register_plugin(CancelRunningTasks())``; workers
    that join later get it too. On each worker, tasks then run on a
    :class:`~cancelpool.CancellableThreadPoolExecutor` with the worker's thread count,
    and a task whose key the scheduler cancels or releases while it runs
    (``client.cancel``, a future dropped, a client that disconnects) has its future
    cancelled with reason ``"dask-cancel"``: ``current_token()`` is set, the waiting
    helpers wake, ``checkpoint()`` raises. Tasks annotated with
    ``cancelpool_timeout=seconds`` (``dask.annotate``) fail with ``DeadlineExceeded`` that
    long after they start.

    Tasks already running on the worker's old executor when the plugin is registered
    finish there; new tasks run on the new one.

    Args:
        force: Whether a cancelled task still running *grace* seconds later is
            interrupted (``TaskInterrupted``), and its thread abandoned and replaced if it
            runs on ``abandon_after`` seconds after that.
        grace: Seconds a cancelled task has to stop on its own; ``math.inf``: never
            escalate.
        abandon_after: Seconds after the interrupt at which a task still running has its
            thread abandoned (with *force*); ``math.inf``: never.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: *grace* or *abandon_after* is negative or NaN.
    """

    name = "cancelpool-cancel-running-tasks"

    def __init__(self, force: bool = False, grace: float = 1.0, abandon_after: float = 5.0) -> None:
        self.force = check_bool("force", force)
        grace_s = check_timeout("grace", grace, allow_none=False)
        abandon_s = check_timeout("abandon_after", abandon_after, allow_none=False)
        assert grace_s is not None and abandon_s is not None
        self.grace = grace_s
        self.abandon_after = abandon_s
        self._worker: Any = None
        self._executor: Optional[_DaskThreadPoolExecutor] = None
        self._lock = threading.Lock()
        self._runs: dict[Any, _Run] = {}
        self._cancels: set[Any] = set()
        self._timeouts: dict[Any, float] = {}

    def __repr__(self) -> str:
        return (
            f"CancelRunningTasks(force={self.force}, grace={self.grace}, "
            f"abandon_after={self.abandon_after})"
        )

    def __getstate__(self) -> dict[str, Any]:
        # Sent to the workers: the settings only.
        return {"force": self.force, "grace": self.grace, "abandon_after": self.abandon_after}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    # ------------------------------------------------------------------ life cycle

    def setup(self, worker: Any) -> None:
        """Run the worker's tasks on a ``CancellableThreadPoolExecutor`` from now on.

        Tasks running on the old executor finish there; it is shut down without waiting
        (its queued tasks still run) and its threads exit once they are done.
        """
        old = worker.executors["default"]
        threads = getattr(old, "_max_workers", None) or worker.state.nthreads
        prefix = getattr(old, "_thread_name_prefix", None) or _DEFAULT_PREFIX
        ex = _DaskThreadPoolExecutor(
            threads,
            thread_name_prefix=prefix,
            force=self.force,
            grace=self.grace,
            abandon_after=self.abandon_after,
        )
        ex._dask_worker = weakref.ref(worker)
        self._worker = worker
        self._executor = ex
        with worker.active_threads_lock:
            active = worker.active_threads
            if isinstance(active, _ActiveThreads):  # another copy of the plugin's
                active = active.entries
            worker.active_threads = _ActiveThreads(self, active)
        worker.executors["default"] = ex
        old.shutdown(wait=False)  # never cancels: running and queued tasks finish

    def teardown(self, worker: Any) -> None:
        """Stop using the cancellable executor, without blocking the worker's loop.

        On close the worker shuts its executors down itself (next); a plugin removed from
        a running worker puts back dask's thread pool of the same size, and its tasks
        still running finish on the cancellable one.
        """
        ex = self._executor
        with worker.active_threads_lock:
            if isinstance(worker.active_threads, _ActiveThreads):
                worker.active_threads = worker.active_threads.entries
        if ex is None or worker.executors.get("default") is not ex:
            return
        if str(getattr(worker.status, "name", worker.status)) in _CLOSING:
            ex._closing = True  # dask shuts it down next (see its shutdown())
            return
        worker.executors["default"] = _dask_pool.ThreadPoolExecutor(
            ex._max_workers, thread_name_prefix=ex._thread_name_prefix
        )
        ex.shutdown(wait=False)

    # ---------------------------------------------------------- the event loop's side

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        """Cancel *key*'s running task when the scheduler lets go of it; note its deadline."""
        worker = self._worker
        if worker is None:
            return
        ts = worker.state.tasks.get(key)
        state = "forgotten" if ts is None else ts.state
        target: Optional[CancellableFuture[Any]] = None
        with self._lock:
            if state == "cancelled" and start in _RUNNING:
                run = self._runs.get(key)
                if run is not None:
                    target = run.future
                else:  # its execution is under way but has not reached its thread
                    self._cancels.add(key)
            elif start == "cancelled" and state != "cancelled":
                self._cancels.discard(key)
            if state == "executing" and start not in _EXECUTION:
                seconds = self._timeout_of(key, ts)
                if seconds is not None:
                    self._timeouts[key] = seconds
            elif state not in _EXECUTION:
                self._timeouts.pop(key, None)
        if target is not None:
            target.cancel(reason=REASON, force=self.force, grace=self.grace)

    @staticmethod
    def _timeout_of(key: Any, ts: Any) -> Optional[float]:
        annotations = ts.annotations or {}
        if ANNOTATION not in annotations:
            return None
        value = annotations[ANNOTATION]
        try:
            return check_timeout(ANNOTATION, value)
        except (TypeError, ValueError) as exc:
            LOGGER.warning("cancelpool: task %r has no deadline: %s", key, exc)
            return None

    # -------------------------------------------------------------- the task's side

    def _started(self, key: Any) -> None:
        """*key* starts running as the task of this thread (under active_threads_lock)."""
        future = _slot.future
        ex = self._executor
        if future is None or ex is None:
            return  # not a cancelpool task: an actor, or another executor's thread
        run = _Run(future)
        future._label = f"{_repr.repr(key)}"  # type: ignore[attr-defined]  # for warnings
        with self._lock:
            self._runs[key] = run
            cancelled = key in self._cancels
            self._cancels.discard(key)
            seconds = self._timeouts.pop(key, None)
            if seconds is not None:
                run.deadline = ex._policy.scheduler.call_later(
                    seconds, functools.partial(self._expire, future, seconds)
                )
        if cancelled:
            future.cancel(reason=REASON, force=self.force, grace=self.grace)

    def _stopped(self, key: Any) -> None:
        """*key*'s function has returned in this thread (under active_threads_lock)."""
        future = _slot.future
        if future is None:
            return
        with self._lock:
            run = self._runs.get(key)
            if run is None or run.future is not future:
                return  # a later run of the key has replaced this (abandoned) one
            del self._runs[key]
        if run.deadline is not None:
            run.deadline.cancel()

    def _expire(self, future: CancellableFuture[Any], seconds: float) -> None:
        """The deadline's timer action: fail the task, cancel its token (EXPIRE)."""
        expired = DeadlineExceeded(seconds, "start")
        future._transition(EXPIRE, "deadline", None, expired, None, self.force, self.grace)

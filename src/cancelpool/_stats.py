"""Counting tasks by state, and the frozen snapshot ``executor.statistics()`` returns."""

from __future__ import annotations

import threading
from dataclasses import dataclass

__all__ = ("ExecutorStatistics", "SharedCounts", "WorkerCounts")


@dataclass(frozen=True)
class ExecutorStatistics:
    """A snapshot of an executor's tasks by state.

    Every task submitted is in exactly one of ``pending``, ``running``, ``completed``,
    ``failed``, ``cancelled`` and ``timed_out``, so those six add up to ``submitted``
    whenever no task is changing state. While tasks are changing state, a task may be counted in the
    state it is leaving instead of the one it is entering (counting costs no lock on a
    task's path); no count is ever negative. ``stopping`` counts the cancelled tasks
    whose code is still running (their futures are already done; their workers are
    still busy).

    Attributes:
        max_workers: The executor's ``max_workers``.
        workers: Worker threads alive now.
        submitted: Tasks accepted by ``submit()`` (and ``map()``) so far.
        pending: Queued tasks that have not started and are not cancelled.
        running: Tasks whose code is running and whose stop nobody has requested.
        completed: Tasks that returned a value, which is on their future.
        failed: Tasks that raised, with the exception on their future (includes
            tasks failed with ``BrokenThreadPool`` before they started).
        cancelled: Futures cancelled, before their task started or while it ran.
        timed_out: Tasks whose deadline passed (their futures failed with
            ``DeadlineExceeded``), while running or, with ``timeout_from="submit"``,
            still queued.
        stopping: Of ``cancelled`` and ``timed_out``, tasks whose code has not stopped
            yet (including interrupted ones, and ones whose worker was abandoned).
        interrupts: Task threads armed to raise ``TaskInterrupted`` by forced cancels.
        abandoned_workers: Workers detached because their cancelled task would not stop.
    """

    max_workers: int
    workers: int
    submitted: int
    pending: int
    running: int
    completed: int
    failed: int
    cancelled: int
    timed_out: int
    stopping: int
    interrupts: int
    abandoned_workers: int


class SharedCounts:
    """The counts of one executor that are not kept by its workers.

    Counting costs nothing on a task's hot path: each worker counts the tasks it starts
    and ends in plain attributes that only it writes (see ``WorkerThread``), and
    ``submitted`` is written only by ``submit()``, under the executor's ``_shutdown_lock``
    that it holds anyway. What happens outside workers (a cancel, a drop at shutdown or
    when the pool breaks) is rare, and counted here under ``lock``, a leaf lock that
    futures take inside their own ``_condition``.

    ``retired`` holds the counts of the abandoned workers the executor has let go of
    once their thread left its task (``CancellableThreadPoolExecutor._retire_worker``),
    so that dropping a worker never takes its tasks out of the totals; ``lock`` also
    guards moving a worker's counts there, so that ``statistics()`` counts each worker
    exactly once.

    Shared by an executor, its workers and its futures; it never references the
    executor, so it cannot keep one alive.
    """

    __slots__ = (
        "abandoned",
        "broken",
        "cancelled_pending",
        "cancelled_running",
        "expired_pending",
        "expired_running",
        "interrupts",
        "lock",
        "retired",
        "submitted",
    )

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.submitted = 0  # written under the executor's _shutdown_lock
        self.cancelled_pending = 0  # PENDING -> CANCELLED
        self.cancelled_running = 0  # RUNNING -> STOPPING
        self.expired_pending = 0  # PENDING -> CANCELLED, deadline passed (from submit)
        self.expired_running = 0  # RUNNING -> STOPPING, deadline passed
        self.broken = 0  # PENDING -> FINISHED with BrokenThreadPool, never run
        self.interrupts = (
            0  # threads armed for TaskInterrupted (STOPPING/INTERRUPTING -> INTERRUPTING)
        )
        self.abandoned = 0  # workers abandoned (-> ABANDONED)
        self.retired = WorkerCounts()  # abandoned workers let go of, summed (under lock)


class WorkerCounts:
    """What one worker did: written only by that worker, under the future's lock.

    One writer per field, so no lock is needed to count (``+=`` by the only writer loses
    nothing, with or without a GIL); readers see each field's value as of some recent
    instant. Without a GIL a reader may also see one field's newer value beside another's
    older one (stores to two attributes are not seen in order), so the causal order in
    which ``statistics()`` reads them is a GIL-build refinement: the counts it derives by
    subtraction are clamped at 0, which is what keeps them from going negative on any
    build. Kept after the worker exits (the executor keeps its threads, and folds those
    of the abandoned workers it lets go of into ``SharedCounts.retired``), so the totals
    never shrink.
    """

    __slots__ = ("completed", "failed", "started", "stopped", "tid", "tstate")

    def __init__(self) -> None:
        self.tid = 0  # the worker's thread id, set when it starts
        self.tstate = 0  # its PyThreadState address, where arming needs it (3.9-3.11)
        self.started = 0  # PENDING -> RUNNING
        self.completed = 0  # RUNNING -> FINISHED, returned
        self.failed = 0  # RUNNING -> FINISHED, raised
        self.stopped = 0  # STOPPING -> STOPPED

    def add(self, other: WorkerCounts) -> None:
        """Add the task counts of *other*, a worker that takes no more tasks, to these."""
        self.started += other.started
        self.completed += other.completed
        self.failed += other.failed
        self.stopped += other.stopped

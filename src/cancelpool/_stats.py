"""Counting tasks by state, and the frozen snapshot ``executor.statistics()`` returns."""

from __future__ import annotations

import threading
from dataclasses import dataclass

__all__ = ("ExecutorStatistics", "TaskCounts")


@dataclass(frozen=True)
class ExecutorStatistics:
    """A consistent snapshot of an executor's tasks, taken under one lock.

    Every task submitted is in exactly one of ``pending``, ``running``, ``completed``,
    ``failed`` and ``cancelled``, so those five add up to ``submitted``. ``stopping``
    counts the cancelled tasks whose code is still running (their futures are already
    cancelled and done; their workers are still busy).

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
        stopping: Of ``cancelled``, tasks whose code has not stopped yet.
    """

    max_workers: int
    workers: int
    submitted: int
    pending: int
    running: int
    completed: int
    failed: int
    cancelled: int
    stopping: int


class TaskCounts:
    """How many of one executor's tasks are in each state, and how many failed.

    States are the future module's internal state codes, small ints (an ``Enum`` key
    would cost a Python-level ``__hash__`` per update, on every task's hot path).

    Shared by an executor, its workers and its futures (never referencing the executor,
    so it cannot keep one alive). ``lock`` is a leaf lock: futures take it inside their
    own ``_condition`` when they change state, and nothing is acquired under it.
    """

    __slots__ = ("by_state", "failed", "lock")

    def __init__(self, n_states: int) -> None:
        self.lock = threading.Lock()
        self.by_state = [0] * n_states
        self.failed = 0

    def added(self, state: int) -> None:
        """Count a new task, in *state*."""
        with self.lock:
            self.by_state[state] += 1

    def moved(self, old: int, new: int, failed: bool) -> None:
        """Count a task's move from *old* to *new* (and whether it ended by raising)."""
        with self.lock:
            by_state = self.by_state
            by_state[old] -= 1
            by_state[new] += 1
            if failed:
                self.failed += 1

    def snapshot(self) -> tuple[list[int], int]:
        """Return (counts by state code, failed) as of one instant."""
        with self.lock:
            return list(self.by_state), self.failed

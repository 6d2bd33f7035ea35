"""What an open arm costs the *other* threads: ns per call or iteration, armed vs not.

Between a forced interrupt's arming and its landing (or its worker's abandonment), an arm
is open (``cancelpool._inject``). On 3.12+ it switches on ``sys.monitoring`` events that
fire in every thread: ``PY_START``/``PY_RESUME`` on every call of Python code, and
``JUMP`` on every loop back-edge of the armed code objects (those of the armed task's
frames). A thread that is not armed returns from each callback after a dict lookup (and,
at an entry, a set lookup), and code of a protected module (``_inject.PROTECTED``)
answers ``DISABLE`` the first time, so it pays no more callbacks until the window closes.
On 3.9-3.11 only the armed thread is traced, but 3.9 slows every thread while any thread
has a trace function (``docs/benchmarks.md``).

To hold an arm open, a task blocks in ``threading.Event.wait()`` (protected code, where no
interrupt is raised) called from ``loop_armed``, and is cancelled with
``cancel(force=True, grace=0)`` on an executor whose ``abandon_after`` is long. The
calling thread then runs a workload; with nothing armed it runs the same workload,
alternately, ``rounds`` times each, and the report is the median time per unit both ways
and their ratio (armed / not armed). Nothing armed is the stdlib executor's case too: it
has no arms. Workloads:

* ``calls``: calls of a small user function (one ``PY_START`` each while armed);
* ``stdlib_calls``: calls of a small function of a protected module, ``Queue.qsize``
  (disabled at its first call);
* ``loop_armed``: a ``while`` loop in the code object the armed task is in (one ``JUMP``
  each iteration while armed);
* ``loop_other``: the same loop in another code object (no event: the baseline).
"""

from __future__ import annotations

import queue
import statistics
import threading
import time
from typing import Callable, Optional

from cancelpool import CancellableThreadPoolExecutor

_BOUND = 30.0


class Gate:
    """Where the armed task blocks: it sets ``entered``, then waits for ``release``."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()


def leaf(x: int) -> int:
    """The function ``calls`` calls: returns its argument."""
    return x


def calls(n: int) -> None:
    """Call ``leaf`` *n* times."""
    for i in range(n):
        leaf(i)


def stdlib_calls(n: int) -> None:
    """Call ``queue.Queue.qsize`` (a protected module's function) *n* times."""
    qsize = queue.Queue().qsize
    for _ in range(n):
        qsize()


def loop_armed(n: int, gate: Optional[Gate] = None) -> None:
    """The armed task (blocked on *gate*), and, without *gate*, a loop of *n* iterations.

    Blocked, its frame is in this code object, which arming instruments; from
    ``gate.entered.set()`` on, the task is only in ``threading``, so it cannot land.
    """
    if gate is not None:
        gate.entered.set()
        gate.release.wait(_BOUND)
        return
    i = 0
    while i < n:
        i += 1


def loop_other(n: int) -> None:
    """The same loop as ``loop_armed``'s, in a code object that is never armed."""
    i = 0
    while i < n:
        i += 1


WORKLOADS: dict[str, Callable[[int], None]] = {
    "calls of a user function": calls,
    "calls of Queue.qsize (protected)": stdlib_calls,
    "loop in the armed task's function": loop_armed,
    "loop in other code": loop_other,
}


def window_times(workload: Callable[[int], None], n: int, rounds: int) -> tuple[float, float]:
    """Median seconds per unit of *workload* with nothing armed, and with an arm open."""
    plain: list[float] = []
    armed: list[float] = []
    with CancellableThreadPoolExecutor(max_workers=1, abandon_after=600) as ex:
        for _ in range(rounds):
            plain.append(_timed(workload, n))
            gate = Gate()
            future = ex.submit(loop_armed, 0, gate)
            if not gate.entered.wait(_BOUND):
                raise RuntimeError("task did not start")
            future.cancel(force=True, grace=0)  # armed; it cannot land while blocked
            if not future._arm_open:
                raise RuntimeError(f"the task was not armed: {future._refusal}")
            armed.append(_timed(workload, n))
            if not future._arm_open:
                raise RuntimeError("the arm closed during the timed run")
            gate.release.set()
            if not future.wait_stopped(_BOUND):
                raise RuntimeError("task did not stop")
    return statistics.median(plain), statistics.median(armed)


def _timed(workload: Callable[[int], None], n: int) -> float:
    t0 = time.perf_counter()
    workload(n)
    return (time.perf_counter() - t0) / n

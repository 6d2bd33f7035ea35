"""Force-cancel a task that never checks its token."""

from __future__ import annotations

import threading

from cancelpool import CancellableThreadPoolExecutor, TaskState

started = threading.Event()


def legacy_loop() -> None:
    started.set()
    while True:  # third-party code: never looks at a token
        try:
            sum(range(100))
        except Exception:  # noqa: BLE001, PERF203 - ...and swallows every Exception
            continue


ex = CancellableThreadPoolExecutor(max_workers=2, force=True, grace=0.5)
future = ex.submit(legacy_loop)
started.wait(10)
future.cancel()  # token now; TaskInterrupted 0.5 s later, at a safe point
print("stopped ->", future.wait_stopped(timeout=5))  # True
print("state ->", future.task_state is TaskState.STOPPED)  # True
print("interrupts ->", ex.statistics().interrupts)  # 1
print("still running ->", ex.shutdown(cancel_futures=True, timeout=2))  # ()

"""Keep a critical section whole: a forced cancel waits for the shield to end."""

from __future__ import annotations

import threading

from cancelpool import CancellableThreadPoolExecutor, shield

lock = threading.Lock()
balance = {"a": 100, "b": 0}
inside = threading.Event()


def transfer_forever() -> None:
    while True:
        with shield():  # noqa: SIM117 - no interrupt lands in here
            with lock:
                balance["a"] -= 1
                inside.set()
                balance["b"] += 1


ex = CancellableThreadPoolExecutor(max_workers=1, force=True, grace=0.0)
future = ex.submit(transfer_forever)
inside.wait(10)
future.cancel()
print("stopped ->", future.wait_stopped(timeout=5))  # True
print("books balance ->", balance["a"] + balance["b"] == 100)  # True
print("lock held ->", lock.locked())  # False
ex.shutdown()

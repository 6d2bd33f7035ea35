"""Give each task a time limit: with_options(timeout=...)."""

from __future__ import annotations

import concurrent.futures

from cancelpool import CancellableThreadPoolExecutor, DeadlineExceeded, current_token


def poll_service(name: str) -> str:
    if name == "slow":
        current_token().sleep(30)  # raises TaskCancelled(reason="deadline") at 0.2 s
    return f"{name}: ok"


with CancellableThreadPoolExecutor(max_workers=2) as ex:
    quick = ex.with_options(timeout=0.2)  # a view: same executor, a deadline per task
    fast = quick.submit(poll_service, "fast")
    slow = quick.submit(poll_service, "slow")
    print(fast.result())
    try:
        slow.result(timeout=5)
    except DeadlineExceeded as exc:
        print("slow: DeadlineExceeded after", exc.timeout, "s")
    print("a TimeoutError ->", isinstance(slow.exception(), concurrent.futures.TimeoutError))
    print("cancelled() ->", slow.cancelled())
    print("stopped ->", slow.wait_stopped(timeout=5), "| reason ->", slow.token.reason)
print("timed out ->", ex.statistics().timed_out)

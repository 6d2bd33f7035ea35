"""asyncio.to_thread under wait_for, with ours as the loop's default executor."""

from __future__ import annotations

import asyncio
import threading

from cancelpool import CancellableThreadPoolExecutor, TaskCancelled, current_token

started = threading.Event()
reasons: list[str] = []


def watch_feed() -> None:
    token = current_token()
    started.set()
    try:
        while True:
            token.sleep(0.01)  # stands for polling a feed
    except TaskCancelled as exc:
        reasons.append(exc.reason)
        raise


async def main() -> None:
    asyncio.get_running_loop().set_default_executor(CancellableThreadPoolExecutor())
    job = asyncio.ensure_future(asyncio.to_thread(watch_feed))
    while not started.is_set():
        await asyncio.sleep(0.001)
    try:
        await asyncio.wait_for(job, timeout=0.05)
    except asyncio.TimeoutError:
        print("timed out -> True")


asyncio.run(main())  # on the way out, it shuts the default executor down and waits
print("thread task stopped, reason ->", reasons[0])  # 'cancel': wait_for gives no message

"""Cancel the asyncio task that awaits run_in_executor: the thread task stops too."""

from __future__ import annotations

import asyncio
import threading

from cancelpool import CancellableThreadPoolExecutor, TaskCancelled, current_token

started = threading.Event()
reasons: list[str] = []


def download() -> str:
    token = current_token()
    started.set()
    try:
        for _ in range(1000):
            token.sleep(0.01)  # stands for one chunk; raises TaskCancelled once cancelled
    except TaskCancelled as exc:
        reasons.append(exc.reason)
        raise
    return "complete"


async def main(ex: CancellableThreadPoolExecutor) -> None:
    loop = asyncio.get_running_loop()

    async def handler() -> str:
        return await loop.run_in_executor(ex, download)

    task = asyncio.ensure_future(handler())
    while not started.is_set():  # until the download runs in its thread
        await asyncio.sleep(0.001)
    task.cancel("user closed the page")
    try:
        await task
    except asyncio.CancelledError:
        print("asyncio task cancelled -> True")


with CancellableThreadPoolExecutor(max_workers=4) as ex:
    asyncio.run(main(ex))
# Leaving the block waited for the thread task to stop.
print("thread task stopped, reason ->", reasons[0])  # the message given to task.cancel()

"""Cancel a running task that checks its token between steps."""

from __future__ import annotations

import threading
import time

from cancelpool import CancellableThreadPoolExecutor, current_token

started = threading.Event()


def crawl(urls: list[str]) -> list[str]:
    token = current_token()
    done = []
    for url in urls:
        token.raise_if_cancelled()  # stop between pages once cancelled
        started.set()
        time.sleep(0.01)  # stands for fetch(url)
        done.append(url)
    return done


with CancellableThreadPoolExecutor(max_workers=4) as ex:
    future = ex.submit(crawl, [f"https://example.org/{i}" for i in range(1000)])
    started.wait(10)
    print("cancel() ->", future.cancel())  # True, although crawl is running
    print("stopped ->", future.wait_stopped(timeout=1))  # True once crawl has returned
    print("state ->", future.task_state.value)  # 'stopped'

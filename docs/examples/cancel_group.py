"""Cancel a group of tasks with one call; a task's children are cancelled with it."""

from __future__ import annotations

import threading

from cancelpool import CancellableThreadPoolExecutor, CancelSource, current_token

running = threading.Barrier(3)  # the two downloads that get a worker, and us


def download(part: int) -> str:
    running.wait(5)
    current_token().sleep(30)  # stands for the real work, checking the token
    return f"part {part}"


with CancellableThreadPoolExecutor(max_workers=2) as ex:
    group = CancelSource()
    view = ex.with_options(token=group.token)
    parts = [view.submit(download, i) for i in range(4)]  # two run, two wait
    running.wait(5)
    group.cancel("user closed the window")
    print("all cancelled ->", all(f.cancelled() for f in parts))
    print("all stopped ->", all(f.wait_stopped(timeout=5) for f in parts))
    print("reasons ->", {f.token.reason for f in parts})

fetching = threading.Barrier(4)  # three pages, and us


def fetch(page: int) -> str:
    fetching.wait(5)
    current_token().sleep(30)
    return f"page {page}"


def crawl(site: str) -> list[str]:
    pages = [ex.submit(fetch, n) for n in range(3)]  # children of this task
    return [p.result() for p in pages]  # CancelledError once the children are cancelled


with CancellableThreadPoolExecutor(max_workers=4) as ex:
    job = ex.submit(crawl, "example.org")
    fetching.wait(5)
    job.cancel(reason="shutdown requested")
    print("crawl stopped ->", job.wait_stopped(timeout=5))
stats = ex.statistics()
print("cancelled ->", stats.cancelled, "| still running ->", stats.running + stats.stopping)

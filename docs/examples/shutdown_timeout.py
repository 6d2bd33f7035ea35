"""Shut down within a time limit, whatever the tasks do, and see who is still running."""

from __future__ import annotations

import threading

from cancelpool import CancellableThreadPoolExecutor, current_token

release = threading.Event()
started = threading.Event()


def cooperative() -> None:
    started.set()
    current_token().sleep(60)  # returns early, by raising TaskCancelled, on cancel


def stubborn() -> None:
    release.wait(60)  # never looks at its token


ex = CancellableThreadPoolExecutor(max_workers=2)
a = ex.submit(cooperative)
b = ex.submit(stubborn)
started.wait(10)
still_running = ex.shutdown(cancel_futures=True, timeout=0.5)
print("still running:", [f is b for f in still_running])  # [True]: only the stubborn one
print("a:", a.task_state.value, "| b:", b.task_state.value)  # a: stopped | b: stopping
release.set()  # let the stubborn task end, so the program can exit

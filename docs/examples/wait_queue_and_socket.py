"""Blocking calls that a cancel ends: a queue consumer and a socket reader."""

from __future__ import annotations

import queue
import socket

from cancelpool import CancellableThreadPoolExecutor, close_on_cancel, queue_get

jobs: queue.Queue[int] = queue.Queue()
done: list[int] = []


def consume() -> None:
    while True:
        job = queue_get(jobs)  # jobs.get(), but a cancel ends the wait: TaskCancelled
        done.append(job * 10)
        jobs.task_done()


ours, peer = socket.socketpair()  # the peer never writes


def read_reply() -> bytes:
    with close_on_cancel(ours):  # a cancel shuts the socket down, so recv() returns
        return ours.recv(4096)


with CancellableThreadPoolExecutor(max_workers=2) as ex:
    consumer = ex.submit(consume)
    reader = ex.submit(read_reply)
    for job in (1, 2, 3):
        jobs.put(job)
    jobs.join()  # all three handled: the consumer waits for more
    print("done ->", done)
    consumer.cancel(reason="no more jobs")
    reader.cancel(reason="too slow")
    print("stopped ->", consumer.wait_stopped(timeout=5), reader.wait_stopped(timeout=5))
    print("states ->", consumer.task_state.value, reader.task_state.value)
    print("queue_get outside a task ->", end=" ")
    try:
        queue_get(jobs, timeout=0)  # no task, no token: exactly jobs.get(timeout=0)
    except queue.Empty:
        print("queue.Empty")
ours.close()
peer.close()

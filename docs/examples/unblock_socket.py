"""Unblock a task stuck in recv(): register a callback on its token."""

from __future__ import annotations

import socket
import threading

from cancelpool import CancellableThreadPoolExecutor, current_token

ours, peer = socket.socketpair()  # the peer never writes
blocked = threading.Event()


def read_reply() -> bytes:
    # shutdown() makes a recv() blocked in another thread return at once (close() alone
    # does not, on Linux). The handle unregisters the callback when the block ends.
    with current_token().register(lambda: ours.shutdown(socket.SHUT_RDWR)):
        blocked.set()
        return ours.recv(4096)


with CancellableThreadPoolExecutor(max_workers=1) as ex:
    future = ex.submit(read_reply)
    blocked.wait(10)
    future.cancel(reason="user pressed stop")
    print("stopped ->", future.wait_stopped(timeout=5))
    print("reason ->", future.token.reason)
ours.close()
peer.close()

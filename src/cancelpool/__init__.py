"""cancelpool: a drop-in ``ThreadPoolExecutor`` whose futures stop running tasks.

Python cannot stop a thread from outside. cancelpool gives every task a stop token that
``future.cancel()`` sets even while the task runs; the task's code checks it, sleeps on
it, or registers a callback on it::

    from cancelpool import CancellableThreadPoolExecutor, current_token

    def crawl(urls):
        token = current_token()
        for url in urls:
            token.raise_if_cancelled()
            fetch(url)

    with CancellableThreadPoolExecutor(max_workers=8) as ex:
        fut = ex.submit(crawl, urls)
        fut.cancel()                 # True, although crawl is running
        fut.wait_stopped(timeout=1)  # True once crawl's code has returned
"""

from ._current import checkpoint, current_token, current_token_or_none
from ._exceptions import (
    CancelPoolWarning,
    DeadlineExceeded,
    ForceUnavailableWarning,
    InterruptSwallowedWarning,
    StillRunningWarning,
    TaskCancelled,
    TaskInterrupted,
    WorkerAbandonedWarning,
)
from ._executor import CancellableThreadPoolExecutor
from ._future import CancellableFuture, TaskState
from ._inject import AVAILABLE as FORCE_AVAILABLE
from ._options import ExecutorView, TaskOptions
from ._shield import shield
from ._source import CancelSource
from ._stats import ExecutorStatistics
from ._token import CallbackHandle, CancelToken
from ._version import __version__
from ._wait import (
    close_on_cancel,
    future_result,
    queue_get,
    sleep,
    wait_condition,
    wait_event,
    wait_for,
)

# isort: split
# Last, once every module it resets is loaded: registers the library's fork hooks.
from . import _fork  # noqa: F401

__all__ = (
    "FORCE_AVAILABLE",
    "CallbackHandle",
    "CancelPoolWarning",
    "CancelSource",
    "CancelToken",
    "CancellableFuture",
    "CancellableThreadPoolExecutor",
    "DeadlineExceeded",
    "ExecutorStatistics",
    "ExecutorView",
    "ForceUnavailableWarning",
    "InterruptSwallowedWarning",
    "StillRunningWarning",
    "TaskCancelled",
    "TaskInterrupted",
    "TaskOptions",
    "TaskState",
    "WorkerAbandonedWarning",
    "__version__",
    "checkpoint",
    "close_on_cancel",
    "current_token",
    "current_token_or_none",
    "future_result",
    "queue_get",
    "shield",
    "sleep",
    "wait_condition",
    "wait_event",
    "wait_for",
)

# Reprs, tracebacks and pickles name the public module, not the private one.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("cancelpool._"):
        _obj.__module__ = __name__
del _name, _obj

"""Stop a task running on a dask.distributed cluster: the CancelRunningTasks plugin."""

from __future__ import annotations

import logging

import dask
from distributed import Client, Event, LocalCluster, Variable

from cancelpool import DeadlineExceeded, TaskCancelled, current_token
from cancelpool.dask import CancelRunningTasks


def long_job() -> str:
    token = current_token()  # the task's stop token, on the worker
    Event("long-job-started").set()
    try:
        token.sleep(60)  # stands for work that checks its token; raises once cancelled
    except TaskCancelled as exc:
        Variable("long-job-reason").set(exc.reason)  # tell the demo what the task saw
        raise
    return "finished"


def slow_job() -> str:
    current_token().sleep(60)  # its deadline cancels the token at 0.3 s
    return "finished"


if __name__ == "__main__":
    # One worker process with one thread: a task that does not stop would hold it.
    cluster = LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=":0",  # any free port: no warning if 8787 is taken
        silence_logs=logging.CRITICAL,  # the worker logs the deadline as "Compute Failed"
    )
    with cluster, Client(cluster) as client:
        client.register_plugin(CancelRunningTasks())
        job = client.submit(long_job)
        print("running ->", Event("long-job-started").wait(timeout=30))
        client.cancel(job)
        # The next task gets the worker's only thread long before long_job's 60 s.
        print("next task ->", client.submit(sum, [1, 2, 3]).result(timeout=10))
        print("the task saw ->", Variable("long-job-reason").get(timeout=10))

        with dask.annotate(cancelpool_timeout=0.3):  # seconds from when it starts
            slow = client.submit(slow_job)
        try:
            slow.result(timeout=10)
        except DeadlineExceeded as exc:
            print("slow_job: DeadlineExceeded after", exc.timeout, "s")

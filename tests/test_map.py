"""map(): when the result iterator stops early, the remaining work is cancelled."""

from __future__ import annotations

import gc
import itertools
import sys
import threading
import weakref
from collections.abc import Iterable, Iterator
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from cancelpool import CancellableThreadPoolExecutor, current_token

from .conftest import WAIT, wait_collected, wait_for


class Tasks:
    def __init__(self, n_running: int) -> None:
        self.started = threading.Barrier(n_running + 1, timeout=WAIT)
        self.stopped: list[Any] = []

    def work(self, item: Any) -> Any:
        if item == "fail":
            raise ValueError("bad item")
        self.started.wait()
        current_token().wait(WAIT)
        self.stopped.append(item)
        current_token().raise_if_cancelled()
        return item


def test_close_cancels_running_and_pending() -> None:
    tasks = Tasks(n_running=2)
    ex = CancellableThreadPoolExecutor(max_workers=2)
    results = ex.map(tasks.work, ["a", "b", "c", "d"])
    tasks.started.wait()  # a and b are running, c and d queued
    results.close()  # type: ignore[attr-defined]
    assert ex.shutdown(timeout=WAIT) == ()
    assert sorted(tasks.stopped) == ["a", "b"]  # c and d never ran
    stats = ex.statistics()
    assert stats.cancelled == 4 and stats.completed == 0


def test_close_cancels_the_last_submitted_first() -> None:
    # Queued futures before running ones: were a running one cancelled first, its worker,
    # freed, could take a queued task before that task's cancel (a race seen on PyPy).
    tasks = Tasks(n_running=2)
    ex = CancellableThreadPoolExecutor(max_workers=2)
    results = ex.map(tasks.work, ["a", "b", "c", "d"])
    order: list[str] = []
    for item, future in zip("abcd", results._futures):  # type: ignore[attr-defined]
        future.add_done_callback(lambda _, item=item: order.append(item))
    tasks.started.wait()
    results.close()  # type: ignore[attr-defined]
    assert order == ["d", "c", "b", "a"]
    assert ex.shutdown(timeout=WAIT) == ()


def test_exception_cancels_the_rest() -> None:
    tasks = Tasks(n_running=2)  # "fail" ends at once, then "x" and "y" both run
    ex = CancellableThreadPoolExecutor(max_workers=2)
    results = ex.map(tasks.work, ["fail", "x", "y"])
    tasks.started.wait()
    with pytest.raises(ValueError, match="bad item"):
        next(results)
    assert ex.shutdown(timeout=WAIT) == ()
    assert ex.statistics().cancelled == 2


def test_timeout_cancels_the_awaited_running_future_too() -> None:
    # Before 3.12 the stdlib's map() leaves the future it timed out on running.
    tasks = Tasks(n_running=1)
    ex = CancellableThreadPoolExecutor(max_workers=1)
    results = ex.map(tasks.work, ["a", "b"], timeout=0)
    tasks.started.wait()  # "a" is running
    with pytest.raises(futures.TimeoutError):
        next(results)
    assert ex.shutdown(timeout=WAIT) == ()
    assert tasks.stopped == ["a"]
    assert ex.statistics().cancelled == 2


def test_reason_is_map() -> None:
    gate = threading.Event()
    ex = CancellableThreadPoolExecutor(max_workers=1)
    blocker = ex.submit(gate.wait, WAIT)
    results = ex.map(int, ["1", "2"], timeout=0)
    with pytest.raises(futures.TimeoutError):
        next(results)
    gate.set()
    blocker.result(WAIT)
    ex.shutdown(timeout=WAIT)
    assert ex.statistics().cancelled == 2


def test_submit_failure_cancels_what_map_already_submitted() -> None:
    gate = threading.Event()
    ex = CancellableThreadPoolExecutor(max_workers=1)
    blocker = ex.submit(gate.wait, WAIT)

    def items() -> Any:
        yield 1
        yield 2
        raise RuntimeError("the input iterator broke")

    with pytest.raises(RuntimeError, match="input iterator broke"):
        ex.map(int, items())
    gate.set()
    blocker.result(WAIT)
    ex.shutdown(timeout=WAIT)
    stats = ex.statistics()
    assert stats.cancelled == 2 and stats.completed == 1


def test_map_results_of_finished_tasks_are_kept() -> None:
    with CancellableThreadPoolExecutor(max_workers=2) as ex:
        fs_results = list(ex.map(lambda x: x * 2, range(100)))
    assert fs_results == [x * 2 for x in range(100)]
    assert ex.statistics().completed == 100


def test_map_validates_arguments() -> None:
    with CancellableThreadPoolExecutor(max_workers=1) as ex:
        with pytest.raises(TypeError, match="fn must be callable, got 3"):
            ex.map(3, [1])  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="timeout must be >= 0 or None, got -1"):
            ex.map(int, [1], timeout=-1)


def test_dropping_a_started_iterator_cancels_the_rest() -> None:
    import gc

    tasks = Tasks(n_running=2)
    ex = CancellableThreadPoolExecutor(max_workers=2)
    results = ex.map(
        lambda item: item if item == "first" else tasks.work(item), ["first", "a", "b"]
    )
    assert next(results) == "first"
    tasks.started.wait()  # "a" and "b" are running
    del results
    gc.collect()
    assert ex.shutdown(timeout=WAIT) == ()
    assert sorted(tasks.stopped) == ["a", "b"]
    stats = ex.statistics()
    assert (stats.completed, stats.cancelled) == (1, 2)


def workers_exited(threads: Iterable[threading.Thread]) -> bool:
    """Whether *threads* have ended, after a collection: on PyPy, the weakref callback
    that wakes a dropped executor's workers runs only after one."""
    gc.collect()
    return not any(t.is_alive() for t in threads if t.name.startswith("ThreadPoolExecutor"))


class TestBuffersize:
    """``map(buffersize=N)``: 3.14's bounded prefetch, on every supported version."""

    def test_an_endless_iterable_is_consumed_as_results_are_taken(self) -> None:
        ex = CancellableThreadPoolExecutor(max_workers=2)
        try:
            consumed: list[int] = []

            def numbers() -> Iterator[int]:
                for i in itertools.count():
                    consumed.append(i)
                    yield i

            results = ex.map(lambda x: x * x, numbers(), buffersize=3)
            assert len(consumed) == 3  # only the first buffersize calls are submitted
            assert [next(results) for _ in range(5)] == [0, 1, 4, 9, 16]
            # Each result taken submitted one more call, before waiting (as 3.14).
            assert len(consumed) == 3 + 5
            results.close()  # type: ignore[attr-defined]
            assert ex.statistics().submitted == 8
        finally:
            ex.shutdown(cancel_futures=True, timeout=WAIT)

    def test_results_in_order_and_nothing_lost(self) -> None:
        with CancellableThreadPoolExecutor(max_workers=4) as ex:
            assert list(ex.map(pow, range(50), itertools.repeat(2), buffersize=4)) == [
                i * i for i in range(50)
            ]
            assert list(ex.map(pow, [], buffersize=1)) == []

    def test_closing_cancels_the_buffered_calls(self) -> None:
        tasks = Tasks(n_running=1)
        ex = CancellableThreadPoolExecutor(max_workers=1)
        results = ex.map(tasks.work, ["a", "b", "c", "d", "e"], buffersize=2)
        tasks.started.wait()  # a runs, b queued; c, d, e not submitted
        results.close()  # type: ignore[attr-defined]
        assert ex.shutdown(timeout=WAIT) == ()
        stats = ex.statistics()
        assert (stats.submitted, stats.cancelled) == (2, 2)
        assert tasks.stopped == ["a"]

    @pytest.mark.parametrize(
        ("value", "error", "message"),
        [
            (0, ValueError, "buffersize must be None or > 0"),
            (-3, ValueError, "buffersize must be None or > 0"),
            (1.5, TypeError, "buffersize must be an integer or None"),
            ("foo", TypeError, "buffersize must be an integer or None"),
        ],
    )
    def test_bad_buffersize_has_the_stdlib_message(
        self, value: Any, error: type[Exception], message: str
    ) -> None:
        # 3.14+: exactly the interpreter's own message (its test suite matches it);
        # before, the same words with the value named.
        if sys.version_info < (3, 14):
            message += f", got {value!r}"
        with CancellableThreadPoolExecutor(max_workers=1) as ex:
            with pytest.raises(error) as caught:
                ex.map(pow, [1], [1], buffersize=value)
            assert str(caught.value) == message
            assert ex.statistics().submitted == 0

    @pytest.mark.skipif(sys.version_info < (3, 14), reason="the stdlib checks from 3.14")
    @pytest.mark.parametrize("value", [0, -3, 1.5, "foo"])
    def test_bad_buffersize_fails_as_in_the_stdlib(self, value: Any) -> None:
        stdlib = ThreadPoolExecutor(max_workers=1)
        with stdlib, pytest.raises((TypeError, ValueError)) as expected:
            stdlib.map(pow, [1], [1], buffersize=value)  # type: ignore[call-arg,unused-ignore]
        ex = CancellableThreadPoolExecutor(max_workers=1)
        with ex, pytest.raises((TypeError, ValueError)) as caught:
            ex.map(pow, [1], [1], buffersize=value)
        assert type(caught.value) is type(expected.value)
        assert str(caught.value) == str(expected.value)

    @pytest.mark.skipif(sys.version_info >= (3, 14), reason="3.14's map takes a bool as an int")
    @pytest.mark.parametrize("value", [True, False])
    def test_a_bool_buffersize_is_refused_and_named_before_3_14(self, value: bool) -> None:
        ex = CancellableThreadPoolExecutor(max_workers=1)
        with ex, pytest.raises(TypeError) as caught:
            ex.map(pow, [1], [1], buffersize=value)
        assert str(caught.value) == f"buffersize must be an integer or None, got {value!r}"

    @pytest.mark.skipif(sys.version_info < (3, 14), reason="the stdlib takes buffersize from 3.14")
    def test_a_bool_buffersize_behaves_as_in_the_stdlib(self) -> None:
        # Drop-in: 3.14's map takes True as 1 and fails False as less than 1.
        ex = CancellableThreadPoolExecutor(max_workers=1)
        with ex:
            assert list(ex.map(abs, [-1, -2], buffersize=True)) == [1, 2]
            with pytest.raises(ValueError, match=r"^buffersize must be None or > 0$"):
                ex.map(abs, [1], buffersize=False)

    def test_an_executor_only_its_iterator_refers_to_gives_every_result(self) -> None:
        # Issue 11: 3.14's map refers to its executor weakly, and an executor nothing
        # else refers to was collected mid-iteration: 4 results of 100, no error. (The
        # stdlib's goes as map() returns; ours is in reference cycles and went at the
        # next collection, hence the gc.collect() below to make the test certain.)
        before = set(threading.enumerate())
        assert list(CancellableThreadPoolExecutor(2).map(abs, range(100), buffersize=4)) == list(
            range(100)
        )
        results = CancellableThreadPoolExecutor(2).map(abs, range(-50, 50), buffersize=4)
        first = next(results)
        gc.collect()
        assert [first, *results] == [abs(i) for i in range(-50, 50)]
        workers = set(threading.enumerate()) - before
        wait_for(lambda: workers_exited(workers), "the dropped executors' workers to exit")

    def test_a_dropped_iterator_lets_its_executor_go(self) -> None:
        ex = CancellableThreadPoolExecutor(max_workers=1)
        ref = weakref.ref(ex)
        results = ex.map(abs, itertools.count(), buffersize=2)
        assert next(results) == 0
        workers = list(ex._threads)
        del ex
        gc.collect()
        assert ref() is not None  # kept while the iterator may submit more
        del results
        wait_collected(ref, "the executor to be collected")
        wait_for(lambda: workers_exited(workers), "the dropped executor's workers to exit")

    def test_an_iterator_that_submitted_its_last_call_lets_its_executor_go(self) -> None:
        ex = CancellableThreadPoolExecutor(max_workers=1)
        ref = weakref.ref(ex)
        results = ex.map(abs, [-1, -2, -3], buffersize=2)
        assert next(results) == 1  # submits the third call
        assert next(results) == 2  # finds no fourth: lets go of the executor
        del ex
        wait_collected(ref, "the executor to be collected")
        assert list(results) == [3]  # the buffered call still completes

    def test_an_iterator_whose_executor_was_shut_down_raises(self) -> None:
        # Never a silent end: the next call cannot be submitted, and the caller is told.
        ex = CancellableThreadPoolExecutor(max_workers=1)
        results = ex.map(abs, itertools.count(), buffersize=1)
        assert next(results) == 0
        ex.shutdown(wait=True)
        with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
            next(results)

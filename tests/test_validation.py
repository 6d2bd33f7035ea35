"""Bad input at the public boundary: a TypeError or ValueError that names the value."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from cancelpool import CancellableThreadPoolExecutor


@pytest.mark.parametrize(
    ("kwargs", "exc", "message"),
    [
        ({"max_workers": "4"}, TypeError, r"max_workers must be an int or None, got '4'"),
        ({"max_workers": 2.5}, TypeError, r"max_workers must be an int or None, got 2\.5"),
        ({"max_workers": True}, TypeError, r"max_workers must be an int or None, got True"),
        ({"max_workers": 0}, ValueError, r"max_workers must be greater than 0, got 0"),
        ({"thread_name_prefix": None}, TypeError, r"thread_name_prefix must be a str, got None"),
        *(
            # 3.14+: prepare_context() checks them, with the stdlib's error (and accepts
            # any iterable initargs, as the stdlib does): tests/test_worker_context.py.
            [({"initializer": "setup"}, TypeError, r"^initializer must be a callable$")]
            if sys.version_info >= (3, 14)
            else [
                ({"initializer": "setup"}, TypeError, r"initializer must be callable, got 'setup'"),
                ({"initargs": [1]}, TypeError, r"initargs must be a tuple, got \[1\]"),
            ]
        ),
    ],
)
def test_constructor(kwargs: dict[str, Any], exc: type[Exception], message: str) -> None:
    with pytest.raises(exc, match=message):
        CancellableThreadPoolExecutor(**kwargs)


def test_submit_non_callable() -> None:
    with CancellableThreadPoolExecutor(max_workers=1) as ex:
        with pytest.raises(TypeError, match=r"fn must be callable, got 'print'"):
            ex.submit("print")  # type: ignore[arg-type]
        assert ex.statistics().submitted == 0


def test_submit_after_shutdown_message() -> None:
    ex = CancellableThreadPoolExecutor(max_workers=1)
    ex.shutdown()
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        ex.submit(int)


def test_subclass_of_stdlib_class() -> None:
    from concurrent.futures import ThreadPoolExecutor

    assert issubclass(CancellableThreadPoolExecutor, ThreadPoolExecutor)

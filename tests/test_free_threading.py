"""Free-threaded builds (3.13t+): what is detected, and what cancelpool does there.

No free-threaded build is installable where these tests run, so a build running without
the GIL is simulated by replacing ``sys._is_gil_enabled``. What is argued rather than
tested (every place whose correctness relied on the GIL ordering two threads' steps) is
in ``docs/design.md``, "Without the GIL".
"""

from __future__ import annotations

import sys
import types

import pytest

import cancelpool
from cancelpool import _inject

from .conftest import run_python


def flags(**changes: object) -> types.SimpleNamespace:
    """``sys.flags`` with some fields changed."""
    fields = {name: getattr(sys.flags, name) for name in dir(sys.flags) if name[0] != "_"}
    fields.update(changes)
    return types.SimpleNamespace(**fields)


PYPY = hasattr(sys, "pypy_version_info")


def test_a_build_with_the_gil_disabled_is_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: False, raising=False)
    assert _inject.gil_disabled()
    reason = _inject._why_no_mechanism()
    assert reason is not None
    if not PYPY:  # (PyPy has no mechanism anyway, and says so first)
        assert reason.startswith("none: free-threaded build with the GIL disabled")


def test_a_gil_on_for_now_only_counts_as_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    # A free-threaded build switches its GIL on while it loads an extension that needs
    # it, and may switch it off again; only -X gil=1 (sys.flags.gil == 1) keeps it on.
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: True, raising=False)
    monkeypatch.setattr(sys, "flags", flags(gil=None))
    assert _inject.gil_disabled()
    reason = _inject._why_no_mechanism()
    assert reason is not None and (PYPY or "GIL not forced on" in reason)
    monkeypatch.setattr(sys, "flags", flags(gil=1))
    assert not _inject.gil_disabled()


def test_builds_with_a_gil_are_not_free_threaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(sys, "_is_gil_enabled", raising=False)  # as before 3.13
    assert not _inject.gil_disabled()
    if PYPY:
        assert _inject._why_no_mechanism() == "none: PyPy (see cancelpool._inject)"
    else:
        assert _inject._why_no_mechanism() is None


def test_this_interpreter_reports_what_it_is() -> None:
    # Every interpreter these tests run on has a GIL.
    assert not _inject.gil_disabled()
    assert cancelpool.FORCE_AVAILABLE is _inject.AVAILABLE
    assert _inject.AVAILABLE is (_inject.MECHANISM == "ctypes.pythonapi.PyThreadState_SetAsyncExc")


CHILD = """
    import sys, threading, warnings
    sys._is_gil_enabled = lambda: False  # as a free-threaded build running without it
    import cancelpool
    from cancelpool import CancellableThreadPoolExecutor, _inject
    print(cancelpool.FORCE_AVAILABLE, _inject.MECHANISM.split(" (")[0])
    shown, abandoned = [], threading.Event()
    def showwarning(message, category, *args, **kwargs):
        shown.append(category.__name__)
        if category is cancelpool.WorkerAbandonedWarning:
            abandoned.set()
    warnings.showwarning = showwarning
    started = threading.Event()
    def busy():
        started.set()
        while True:
            pass
    ex = CancellableThreadPoolExecutor(max_workers=1, abandon_after=0.05)
    future = ex.submit(busy)
    started.wait(30)
    future.cancel(force=True, grace=0.0)  # no interrupt: it ends by abandoning the worker
    abandoned.wait(30)
    print(future.task_state.name, ex.statistics().interrupts, sorted(shown))
    print(ex.submit(pow, 2, 5).result(30))  # the replacement worker
    ex.shutdown(wait=False)
"""


@pytest.mark.subprocess
def test_a_forced_cancel_without_the_gil_abandons_instead_of_interrupting() -> None:
    proc = run_python(CHILD)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    if PYPY:
        assert lines[0] == "False none: PyPy"
    else:
        assert lines[0] == "False none: free-threaded build with the GIL disabled"
    assert lines[1] == "ABANDONED 0 ['ForceUnavailableWarning', 'WorkerAbandonedWarning']"
    assert lines[2] == "32"

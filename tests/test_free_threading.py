"""Free-threaded builds (3.13t+): what is detected, and what cancelpool does there.

No free-threaded build is installable where these tests run, so a build running without
the GIL is simulated by replacing ``sys._is_gil_enabled``. What is decided from it is which
route arms a thread for a forced interrupt (``_inject._choose_backend()``): the one a build
with the GIL takes, ``sys.monitoring`` (which stops the world to instrument code there,
CPython gh-116818), with ``MECHANISM`` saying that the argument is untested. The argument
itself (the decision and the raise are one step of the task's own thread) is in
``cancelpool._inject`` and ``docs/design.md``, "Without the GIL".
"""

from __future__ import annotations

import platform
import sys
import types

import pytest

import cancelpool
from cancelpool import _inject, _monitor, _trace

from .conftest import run_python


def flags(**changes: object) -> types.SimpleNamespace:
    """``sys.flags`` with some fields changed."""
    fields = {name: getattr(sys.flags, name) for name in dir(sys.flags) if name[0] != "_"}
    fields.update(changes)
    return types.SimpleNamespace(**fields)


PYPY = platform.python_implementation() == "PyPy"
#: Only CPython 3.13 and later have free-threaded builds; elsewhere there is nothing to
#: simulate (PyPy has no route at all, GIL or not).
HAS_FREE_THREADED_BUILDS = not PYPY and sys.version_info >= (3, 13)
needs_free_threaded_builds = pytest.mark.skipif(
    not HAS_FREE_THREADED_BUILDS, reason="no free-threaded build of this Python exists"
)
UNTESTED = " (free-threaded build: argued in cancelpool._inject, untested)"
PYPY_REASON = "none: PyPy cannot arm another thread"


def test_a_build_with_the_gil_disabled_is_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: False, raising=False)
    assert _inject.gil_disabled()


def test_a_gil_on_for_now_only_counts_as_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    # A free-threaded build switches its GIL on while it loads an extension that needs
    # it, and may switch it off again; only -X gil=1 (sys.flags.gil == 1) keeps it on.
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: True, raising=False)
    monkeypatch.setattr(sys, "flags", flags(gil=None))
    assert _inject.gil_disabled()
    monkeypatch.setattr(sys, "flags", flags(gil=1))
    assert not _inject.gil_disabled()


@pytest.fixture(autouse=True)
def _keep_the_trace_routes_functions(monkeypatch: pytest.MonkeyPatch) -> None:
    """``_choose_backend()`` on 3.9-3.11 looks the C API up again: keep what was found."""
    for name in ("_set_trace", "_clear_trace", "_get_state"):
        monkeypatch.setattr(_trace, name, getattr(_trace, name))


def test_builds_with_a_gil_are_not_free_threaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(sys, "_is_gil_enabled", raising=False)  # as before 3.13
    assert not _inject.gil_disabled()
    backend, mechanism = _inject._choose_backend()
    if PYPY:
        assert backend is None
        assert mechanism.startswith(PYPY_REASON)
    elif sys.version_info >= (3, 12):
        assert (backend, mechanism) == (_monitor, _monitor.MECHANISM)
    else:
        assert (backend, mechanism) == (_trace, _trace.MECHANISM)


@needs_free_threaded_builds
def test_the_route_a_free_threaded_build_takes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: False, raising=False)
    assert _inject._choose_backend() == (_monitor, _monitor.MECHANISM)


def test_pypy_has_no_route_gil_or_not(monkeypatch: pytest.MonkeyPatch) -> None:
    if not PYPY:
        pytest.skip("PyPy only")
    for enabled in (True, False):
        monkeypatch.setattr(sys, "_is_gil_enabled", lambda e=enabled: e, raising=False)
        backend, mechanism = _inject._choose_backend()
        assert backend is None
        assert mechanism.startswith(PYPY_REASON)


def test_this_interpreter_reports_what_it_is() -> None:
    # Every interpreter these tests run on has a GIL: no "untested" suffix.
    assert not _inject.gil_disabled()
    assert cancelpool.FORCE_AVAILABLE is _inject.AVAILABLE
    assert _inject.AVAILABLE is (_inject._backend is not None)
    assert cancelpool.FORCE_AVAILABLE is not PYPY
    assert not _inject.MECHANISM.endswith(UNTESTED)


# A child interpreter: optionally simulate a free-threaded build before cancelpool is
# imported, or take away the route after it is; then force-cancel a task that never
# checks its token, and report what happened.
CHILD = """
    import sys, threading, warnings
    MODE = {mode!r}
    if MODE == "free-threaded":
        sys._is_gil_enabled = lambda: False  # as a free-threaded build running without it
    import cancelpool
    from cancelpool import CancellableThreadPoolExecutor, _inject
    if MODE == "no route":
        _inject._backend, _inject.AVAILABLE = None, False
        _inject.MECHANISM = "none: taken away by the test"
        cancelpool.FORCE_AVAILABLE = False
    print(_inject.AVAILABLE, cancelpool.FORCE_AVAILABLE)
    print(_inject.MECHANISM)
    shown, abandoned = [], threading.Event()
    def showwarning(message, category, *args, **kwargs):
        shown.append(category.__name__)
        if category is cancelpool.WorkerAbandonedWarning:
            abandoned.set()
    warnings.showwarning = showwarning
    started, flags = threading.Event(), {{"release": False}}
    def busy():
        started.set()
        while not flags["release"]:
            pass
    ex = CancellableThreadPoolExecutor(max_workers=1, abandon_after=0.05)
    future = ex.submit(busy)
    assert started.wait(30)
    future.cancel(force=True, grace=0.0)
    if _inject.AVAILABLE:
        assert future.wait_stopped(30)  # interrupted
    else:
        assert abandoned.wait(30)  # no interrupt: it ends by abandoning the worker
    print(
        future.task_state.name, ex.statistics().interrupts, future._interrupts_landed,
        sorted(shown),
    )
    print(ex.submit(pow, 2, 5).result(30))  # a worker (the replacement, if abandoned)
    flags["release"] = True
    assert future.wait_stopped(30)
    print(future.task_state.name, dict(_inject._armed))
    ex.shutdown(wait=True)
"""
ABANDONED = "ABANDONED 0 0 ['ForceUnavailableWarning', 'WorkerAbandonedWarning']"
INTERRUPTING = "STOPPED 1 1 []"


def run_child(mode: str) -> list[str]:
    proc = run_python(CHILD.format(mode=mode))
    assert proc.returncode == 0, proc.stderr
    lines: list[str] = proc.stdout.splitlines()
    assert lines[3:] == ["32", "STOPPED {}"], lines
    return lines[:3]


@pytest.mark.subprocess
@pytest.mark.skipif(
    not (PYPY or HAS_FREE_THREADED_BUILDS), reason="no free-threaded build of this Python exists"
)
def test_a_forced_cancel_on_a_free_threaded_build() -> None:
    available, mechanism, outcome = run_child("free-threaded")
    if PYPY:
        assert available == "False False"
        assert mechanism.startswith(PYPY_REASON)
        assert outcome == ABANDONED
    else:
        # The route is the one a build with the GIL takes, and says it is untested there.
        assert available == "True True"
        assert mechanism == _monitor.MECHANISM + UNTESTED
        assert outcome == INTERRUPTING


@pytest.mark.subprocess
def test_where_no_route_exists_a_forced_cancel_abandons_instead() -> None:
    # The path PyPy and a free-threaded 3.13 take, on this interpreter.
    available, mechanism, outcome = run_child("no route")
    assert available == "False False"
    assert mechanism == "none: taken away by the test"
    assert outcome == ABANDONED

"""A forked child never hangs on a lock of the library (issue 11, item 2).

``cancelpool._fork`` lists every process-wide lock of the library and resets each one in
a forked child. Here:

* the list is complete: a scan of the package's modules finds exactly the module-level
  locks it names, each under one name, and no other module registers a fork hook;
* for each lock in the list, a parent thread holds it when the main thread forks, and
  the child uses it through the library (and takes it) and exits, within a bound;
* a campaign (marker ``stress``) forks repeatedly while other threads churn tokens and
  the timer, and no child may hang: ``FORKS`` forks at scale 1,
  ``CANCELPOOL_STRESS_SCALE=50`` makes 2,000.

Every fork happens in a child interpreter (``conftest.run_python``), and every forked
child is waited for with a bound and killed after it, so a hang fails a test and never
freezes the run.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import pkgutil
import platform
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import pytest

import cancelpool
from cancelpool import _fork

from .conftest import STRESS_SCALE, WAIT, run_forking_program, run_python

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

#: What the scan counts as a lock: anything a thread can hold and another block on.
LOCK_TYPES = (
    type(threading.Lock()),
    type(threading.RLock()),
    threading.Condition,
    threading.Semaphore,
    threading.Event,
    threading.Barrier,
)


# ------------------------------------------------------------------ the list is complete


def package_modules() -> Iterator[ModuleType]:
    """Every module of the package (``__main__`` is a command line, not a library module)."""
    for info in pkgutil.iter_modules(cancelpool.__path__):
        if info.name == "dask" and importlib.util.find_spec("distributed") is None:
            continue  # the optional extra: importing it without distributed raises
        if info.name != "__main__":
            yield importlib.import_module(f"cancelpool.{info.name}")


def locks_in(value: object, path: str) -> Iterator[tuple[str, object]]:
    """*value* if it is a lock, or the locks among its attributes if it is a cancelpool object.

    One level deep: a module-level instance of one of the library's classes (a
    singleton, like the timer's scheduler) is process-wide, and so are its locks.
    """
    if isinstance(value, LOCK_TYPES):
        yield path, value
        return
    if isinstance(value, (type, ModuleType)) or callable(value):
        return
    if not type(value).__module__.startswith("cancelpool."):
        return
    names = set(getattr(value, "__dict__", {}))
    for klass in type(value).__mro__:
        names.update(getattr(klass, "__slots__", ()))
    for name in sorted(names):
        attribute = getattr(value, name, None)
        if isinstance(attribute, LOCK_TYPES):
            yield f"{path}.{name}", attribute


def scan_module_level_locks() -> dict[int, list[str]]:
    """The locks bound at module level in the package: by identity, every name found."""
    found: dict[int, list[str]] = {}
    for module in package_modules():
        for name, value in vars(module).items():
            for path, lock in locks_in(value, f"{module.__name__}.{name}"):
                found.setdefault(id(lock), []).append(path)
    return found


def owner_of(path: str) -> object:
    """The object whose attribute the last part of *path* names (a module, a class...)."""
    parts = path.split(".")
    owner: object = importlib.import_module(".".join(parts[:2]))
    for part in parts[2:-1]:
        owner = getattr(owner, part)
    return owner


def test_the_list_names_every_module_level_lock_of_the_package_once() -> None:
    found = scan_module_level_locks()
    twice = [names for names in found.values() if len(names) > 1]
    # A second name (``from ._token import _lock``) would keep the old, held lock after
    # the child rebinds the first.
    assert not twice, f"a lock is bound under more than one name: {twice}"
    listed = {entry.lock for entry in _fork.LOCKS if not isinstance(owner_of(entry.lock), type)}
    assert {names[0] for names in found.values()} == listed


def test_each_per_object_entry_names_a_lock_attribute_of_its_class() -> None:
    per_object = [entry for entry in _fork.LOCKS if isinstance(owner_of(entry.lock), type)]
    assert [entry.lock for entry in per_object] == ["cancelpool._deadline.DeadlineWatch._lock"]
    from cancelpool._deadline import DeadlineWatch

    assert "_lock" in DeadlineWatch.__slots__


def test_the_docstring_lists_every_lock_in_reset_order() -> None:
    doc = _fork.__doc__
    assert doc is not None
    places = [doc.find(f"``{entry.lock}``") for entry in _fork.LOCKS]
    assert -1 not in places, [e.lock for e, p in zip(_fork.LOCKS, places) if p == -1]
    assert places == sorted(places)


def test_only_the_fork_module_registers_fork_hooks() -> None:
    sources = Path(cancelpool.__file__).parent.glob("*.py")
    registering = sorted(p.name for p in sources if "register_at_fork(" in p.read_text("utf-8"))
    assert registering == ["_fork.py"]


def test_a_reset_that_fails_does_not_stop_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str] = []

    def failing() -> None:
        ran.append("failing")
        raise RuntimeError("reset failed")

    monkeypatch.setattr(
        _fork,
        "LOCKS",
        (
            _fork.ForkReset("first", failing),
            _fork.ForkReset("second", lambda: ran.append("second")),
        ),
    )
    with pytest.raises(RuntimeError, match="reset failed"):
        _fork._after_in_child()
    assert ran == ["failing", "second"]


# --------------------------------------------- each lock, held by a parent thread at fork


class Case(NamedTuple):
    """How to hold one lock of ``_fork.LOCKS`` in the parent and use it in the child."""

    lock: str  # the expression for the lock object
    use: str  # child: sets ``ok``; must return (the test fails if the child hangs)
    setup: str = ""  # parent, before the holder starts
    cleanup: str = ""  # parent, after the child is reaped and the holder has let go


CASES = {
    "cancelpool._token._lock": Case(
        lock="_token._lock",
        use="""
            source = CancelSource()
            source.token.wait(0)
            ok = source.cancel() and source.token.wait(0)
        """,
    ),
    "cancelpool._escalate._warn_lock": Case(
        lock="_escalate._warn_lock",
        # Only PyPy issues the warning (from a forced cancel's escalation): the check
        # that every child makes, taking the lock, is what that path does.
        use="ok = True",
    ),
    "cancelpool._inject._registry_lock": Case(
        lock="_inject._registry_lock",
        use="""
            def spin(started):
                started.set()
                while True:
                    pass
            if cancelpool.FORCE_AVAILABLE:  # arming takes the lock
                started = threading.Event()
                ex = CancellableThreadPoolExecutor(1, force=True, grace=0)
                future = ex.submit(spin, started)
                ok = started.wait(10) and future.cancel() and future.wait_stopped(10)
                ex.shutdown(timeout=10)
            else:
                ok = True
        """,
    ),
    "cancelpool._timer._scheduler._cond": Case(
        lock="_timer._scheduler._cond",
        use="""
            source = CancelSource()
            source.cancel_after(0.01)  # the child's own timer thread
            ok = source.token.wait(10)
        """,
    ),
    "cancelpool._deadline.DeadlineWatch._lock": Case(
        # The parent's executor has a deadline check scheduled; the child schedules its own.
        setup="""
            def wait_on_token(started):
                started.set()
                current_token().wait(30)
            started = threading.Event()
            ex = CancellableThreadPoolExecutor(max_workers=2)
            held = ex.with_options(timeout=30).submit(wait_on_token, started)
            started.wait(30)
        """,
        lock="ex._deadlines._lock",
        use="""
            future = ex.with_options(timeout=0.05).submit(wait_on_token, threading.Event())
            ok = isinstance(future.exception(10), DeadlineExceeded)
        """,
        cleanup="""
            held.cancel()
            ex.shutdown(timeout=10)
        """,
    ),
    "cancelpool._worker.global_shutdown_lock": Case(
        lock="_worker.global_shutdown_lock",
        use="""
            with CancellableThreadPoolExecutor(max_workers=1) as child_ex:  # submit takes it
                ok = child_ex.submit(int, "7").result(10) == 7
        """,
    ),
}

#: The child program: ``{setup}``, then a thread holds ``{lock}`` while the main thread
#: forks. A lock the library holds across the fork (``ForkReset.before``) would block the
#: fork until the holder lets go, so that holder lets go once the fork has started (a
#: fork hook of this program's, registered after cancelpool's, so it runs first).
HOLD_AND_FORK = """
import os, signal, sys, threading, time, warnings
warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads, 3.12+
import cancelpool
from cancelpool import (
    CancellableThreadPoolExecutor, CancelSource, DeadlineExceeded, current_token,
    _escalate, _fork, _inject, _timer, _token, _worker,
)
{setup}
lock = {lock}
held_across = next(e for e in _fork.LOCKS if e.lock == {name!r}).before is not None
holding, forking, release = threading.Event(), threading.Event(), threading.Event()
os.register_at_fork(before=forking.set)
def hold():
    with lock:
        holding.set()
        (forking if held_across else release).wait(30)
holder = threading.Thread(target=hold)
holder.start()
holding.wait(30)
pid = os.fork()
if pid == 0:
    warnings.simplefilter("ignore")
    {use}
    lock = {lock}  # the child's, now
    if lock.acquire(timeout=5):
        lock.release()
    else:
        ok = False
    sys.exit(0 if ok else 3)  # a normal exit: the exit hooks run
"""


def test_every_lock_in_the_list_has_a_case() -> None:
    assert list(CASES) == [entry.lock for entry in _fork.LOCKS]


@needs_fork
@pytest.mark.subprocess
@pytest.mark.parametrize("name", list(CASES))
def test_a_lock_held_by_another_thread_at_fork_is_usable_in_the_child(name: str) -> None:
    case = CASES[name]
    indent = " " * 4
    code = HOLD_AND_FORK.format(
        setup=textwrap.dedent(case.setup),
        lock=case.lock,
        name=name,
        use=textwrap.indent(textwrap.dedent(case.use), indent).strip(),
    )
    after = "release.set()\nholder.join(30)\n" + textwrap.dedent(case.cleanup)
    proc = run_forking_program(code, after)
    assert proc.returncode == 0, proc.stderr
    # "child hung": it did not exit within 20 s, and was killed.
    assert proc.stdout.strip() == "0", (proc.stdout, proc.stderr)


# ------------------------------------------------------------------------- the campaign

#: Forks at scale 1 (a few seconds); ``CANCELPOOL_STRESS_SCALE=50`` makes 2,000.
FORKS = 40
#: Seconds the campaign may fork before it stops short (``capped``).
TIME_CAP = 30.0 * STRESS_SCALE
#: A child not gone this long after its fork is counted hung and killed. A child exits in
#: milliseconds; this is far above that on a loaded machine.
CHILD_CAP = WAIT
#: The campaign stops at this many hung children: each costs ``CHILD_CAP``.
MAX_HUNG = 3
#: Threads cancelling new tokens in a loop: the issue's reproducer.
CHURNERS = 2
#: Where the campaign appends its counts as a JSON line, as the other campaigns do.
CAMPAIGN_LOG = os.environ.get("CANCELPOOL_CAMPAIGN_LOG")

#: Forks while ``churners`` threads cancel new tokens and one more cancels through the
#: timer; each child cancels a token and one through its own timer, then exits with 0.
#: Prints one JSON line of counts.
CAMPAIGN = """
import json, os, signal, sys, threading, time, warnings
warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads, 3.12+
from cancelpool import CancelSource

FORKS, TIME_CAP, CHILD_CAP = {forks}, {time_cap}, {child_cap}
MAX_HUNG, CHURNERS = {max_hung}, {churners}
stop = threading.Event()

def churn_tokens():
    while not stop.is_set():
        CancelSource().token.wait(0)
        CancelSource().cancel()

def churn_timer():
    while not stop.is_set():
        source = CancelSource()
        source.cancel_after(0)
        source.token.wait(10)

def child():
    CancelSource().cancel()
    source = CancelSource()
    source.cancel_after(0)
    return 0 if source.token.wait(CHILD_CAP) else 3

def reap(pid):
    deadline = time.monotonic() + CHILD_CAP
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.0005)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None

threads = [threading.Thread(target=churn_tokens) for _ in range(CHURNERS)]
threads.append(threading.Thread(target=churn_timer))
for thread in threads:
    thread.start()
forks = hung = failed = 0
capped = False
slowest = 0.0
started = time.monotonic()
try:
    while forks < FORKS and hung < MAX_HUNG:
        if time.monotonic() - started > TIME_CAP:
            capped = True
            break
        begun = time.monotonic()
        pid = os.fork()
        if pid == 0:
            code = 4
            try:
                code = child()
            finally:
                os._exit(code)
        forks += 1
        code = reap(pid)
        slowest = max(slowest, time.monotonic() - begun)
        if code is None:
            hung += 1
        elif code != 0:
            failed += 1
finally:
    stop.set()
    for thread in threads:
        thread.join(30)
print(json.dumps(dict(
    forks=forks, hung=hung, failed=failed, capped=capped,
    seconds=round(time.monotonic() - started, 3), slowest_child_s=round(slowest, 3),
)))
"""


@needs_fork
@pytest.mark.stress
@pytest.mark.subprocess
@pytest.mark.timeout(TIME_CAP + (MAX_HUNG + 2) * CHILD_CAP + 60)
def test_no_child_hangs_in_forks_under_token_churn() -> None:
    asked = max(1, int(FORKS * STRESS_SCALE))
    code = CAMPAIGN.format(
        forks=asked,
        time_cap=TIME_CAP,
        child_cap=CHILD_CAP,
        max_hung=MAX_HUNG,
        churners=CHURNERS,
    )
    proc = run_python(code, timeout=TIME_CAP + (MAX_HUNG + 1) * CHILD_CAP + 30)
    assert proc.returncode == 0, proc.stderr
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    log_campaign(asked, counts)
    assert counts["hung"] == 0, counts
    assert counts["failed"] == 0, counts
    assert counts["forks"] == asked or counts["capped"], counts


def log_campaign(asked: int, counts: dict[str, object]) -> None:
    """Append the campaign's counts to ``CAMPAIGN_LOG``, if set."""
    if not CAMPAIGN_LOG:
        return
    record: dict[str, object] = {
        "campaign": "forks under token churn",
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "scale": STRESS_SCALE,
        "asked": asked,
        **counts,
    }
    with open(CAMPAIGN_LOG, "a", encoding="utf-8") as out:
        out.write(json.dumps(record) + "\n")

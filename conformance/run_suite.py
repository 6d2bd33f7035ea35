"""Run CPython's own concurrent.futures tests with CancellableThreadPoolExecutor swapped in.

Usage (in an environment where cancelpool is installed)::

    python conformance/run_suite.py            # stock run, then swapped run, then compare
    python conformance/run_suite.py --mode swapped   # one run only (used by the runner itself)

The tests are run where the interpreter installed them; nothing is copied. Where an
interpreter ships no ``test_concurrent_futures`` (the pyenv builds of 3.11 and 3.12),
the suite of the nearest older Python found on the machine is used (Debian's
``libpython3.11-testsuite`` installs 3.11's in ``/usr/lib/python3.11/test``), or the
directory named by ``$CANCELPOOL_CPYTHON_TESTS``.

Selected: the thread-pool test classes (``ThreadPool*``) and ``FutureTests``; the
process-pool tests are out of scope. The comparison run decides what must pass: every
selected test that passes with the stock ``ThreadPoolExecutor`` must pass with ours.

The runner fails loudly (exit 2) if the swap did not take effect: if
``concurrent.futures.ThreadPoolExecutor`` is not ours after the swap, if any selected
test class binds another ``executor_type``, or if no child interpreter reported the swap
although the suite ran tests that start children.
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib
import importlib.util
import json
import os
import pkgutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import unittest
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
PTH_NAME = "zz_cancelpool_conformance.pth"
PTH_LINE = (
    "import os, sys; d = os.environ.get('CANCELPOOL_CONFORMANCE_DIR'); "
    "d and (sys.path.insert(0, d), __import__('_cancelpool_swap'))\n"
)
SELECTED_PREFIXES = ("ThreadPool", "FutureTests")
# Tests that start a child interpreter; the swap must reach it.
CHILD_TESTS = ("test_interpreter_shutdown", "test_hang_gh83386", "test_cancel_futures_wait_false")
# A run takes about a minute; a run that hangs must fail CI, not freeze it. After
# HANG_SECONDS the run dumps every thread's stack and exits; the runner kills it for sure
# a little later.
HANG_SECONDS = 300


class SwapNotInEffectError(Exception):
    """The executor under test is not the one the run claims to test."""


def find_suite() -> tuple[str, Optional[str]]:
    """Return (module name, directory to add to ``test.__path__`` or None)."""
    override = os.environ.get("CANCELPOOL_CPYTHON_TESTS")
    candidates: list[Path] = [Path(override)] if override else []
    # find_spec, not import: importing the suite now would bind the stock class.
    if not override and importlib.util.find_spec("test.test_concurrent_futures") is not None:
        return "test.test_concurrent_futures", None
    major, minor = sys.version_info[:2]
    for m in range(minor, 8, -1):
        candidates.append(Path(f"/usr/lib/python{major}.{m}/test"))
        candidates.append(
            Path(sys.base_prefix).parent / f"{major}.{m}" / "lib" / f"python{major}.{m}" / "test"
        )
    for directory in candidates:
        if (directory / "test_concurrent_futures").is_dir() or (
            directory / "test_concurrent_futures.py"
        ).is_file():
            return "test.test_concurrent_futures", str(directory)
    raise SystemExit(
        "no CPython concurrent.futures test suite found for this interpreter; on Debian, "
        "apt-get install libpython3.11-testsuite, or set CANCELPOOL_CPYTHON_TESTS"
    )


def load_modules(name: str) -> list[Any]:
    package = importlib.import_module(name)
    if not hasattr(package, "__path__"):
        return [package]
    return [
        importlib.import_module(f"{name}.{info.name}")
        for info in pkgutil.iter_modules(package.__path__)
        if info.name.startswith("test_")
    ]


def selected_suite(modules: list[Any]) -> tuple[unittest.TestSuite, list[type]]:
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    classes = []
    for module in modules:
        for attr in sorted(vars(module)):
            obj = getattr(module, attr)
            if (
                isinstance(obj, type)
                and issubclass(obj, unittest.TestCase)
                and obj.__module__ == module.__name__
                and obj.__name__.startswith(SELECTED_PREFIXES)
            ):
                classes.append(obj)
                suite.addTests(loader.loadTestsFromTestCase(obj))
    return suite, classes


def run_once(mode: str, report: Path) -> int:
    """Run the selected tests in this process; write the outcome per test to *report*."""
    faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)
    module_name, suite_dir = find_suite()
    swapped = mode == "swapped"
    log = Path(tempfile.mkstemp(prefix="cancelpool-swap-", suffix=".log")[1])
    os.environ["CANCELPOOL_CONFORMANCE_LOG"] = str(log)
    if suite_dir:
        os.environ["CANCELPOOL_CONFORMANCE_SUITE_DIR"] = suite_dir
    if swapped:
        os.environ["CANCELPOOL_CONFORMANCE_SWAP"] = "1"
    os.environ["CANCELPOOL_CONFORMANCE_DIR"] = str(HERE)
    sys.path.insert(0, str(HERE))
    importlib.import_module("_cancelpool_swap")

    import concurrent.futures

    from cancelpool import CancellableThreadPoolExecutor

    expected = (
        CancellableThreadPoolExecutor if swapped else concurrent.futures.thread.ThreadPoolExecutor
    )
    if concurrent.futures.ThreadPoolExecutor is not expected:
        raise SwapNotInEffectError(
            f"concurrent.futures.ThreadPoolExecutor is {concurrent.futures.ThreadPoolExecutor!r}"
        )

    modules = load_modules(module_name)
    suite, classes = selected_suite(modules)
    for cls in classes:
        bound = getattr(cls, "executor_type", expected)
        if bound is not expected:
            raise SwapNotInEffectError(
                f"{cls.__name__}.executor_type is {bound!r}, expected {expected!r}"
            )

    # Collected before the run: a TestSuite drops its tests as it runs them.
    outcomes: dict[str, str] = dict.fromkeys((t.id() for t in _iter_tests(suite)), "passed")
    runner = unittest.TextTestRunner(
        verbosity=2, stream=sys.stdout, resultclass=SubTestRecordingResult
    )
    result = runner.run(suite)
    assert isinstance(result, SubTestRecordingResult)
    for test, _ in result.failures:
        outcomes[test.id()] = "failed"
    for test, _ in result.errors:
        outcomes[test.id()] = "error"
    for test, _ in result.skipped:
        outcomes[test.id()] = "skipped"
    for test, _ in result.expectedFailures:
        outcomes[test.id()] = "xfail"
    for test in result.unexpectedSuccesses:
        outcomes[test.id()] = "xpass"
    # A failing subtest is reported under its own id (test id plus its parameters): it
    # fails its test too, and every subtest is counted on its own.
    outcomes.update(result.subtest_outcomes)
    for test_id in result.tests_with_failed_subtests:
        if outcomes.get(test_id) == "passed":
            outcomes[test_id] = "failed"
    env_changed = _environment_altered()
    children = [
        line for line in log.read_text().splitlines() if line.split()[0] != str(os.getpid())
    ]
    log.unlink()
    ran_child_tests = [
        t for t in outcomes if t.rsplit(".", 1)[-1] in CHILD_TESTS and outcomes[t] != "skipped"
    ]
    if swapped and ran_child_tests and not children:
        raise SwapNotInEffectError(
            f"{len(ran_child_tests)} tests started child interpreters, none swapped"
        )
    report.write_text(
        json.dumps(
            {
                "mode": mode,
                "suite": suite_dir or module_name,
                "outcomes": outcomes,
                "children_swapped": len(children),
                "env_changed": env_changed,
            }
        )
    )
    return 0


class SubTestRecordingResult(unittest.TextTestResult):
    """A ``TextTestResult`` that records every subtest's outcome, passed ones included.

    unittest reports a failing subtest under the subtest's own id and nothing under its
    test's id, so a runner that reads outcomes by test id sees the test as passed.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.subtest_outcomes: dict[str, str] = {}
        self.tests_with_failed_subtests: set[str] = set()

    def addSubTest(  # noqa: N802 - unittest's name
        self,
        test: unittest.TestCase,
        subtest: unittest.TestCase,
        err: Any,
    ) -> None:
        super().addSubTest(test, subtest, err)
        if err is None:
            self.subtest_outcomes[subtest.id()] = "passed"
            return
        failure = issubclass(err[0], test.failureException)
        self.subtest_outcomes[subtest.id()] = "failed" if failure else "error"
        self.tests_with_failed_subtests.add(test.id())


def _environment_altered() -> bool:
    """Whether CPython's test support saw the environment changed (dangling threads...).

    ``threading_helper.threading_cleanup()``, which the suite's module tear-down calls,
    sets ``support.environment_altered`` when threads outlive the tests; regrtest's
    ``--fail-env-changed`` fails the run for it.
    """
    try:
        from test import support
    except ImportError:
        return False
    return bool(getattr(support, "environment_altered", False))


def _iter_tests(suite: unittest.TestSuite) -> list[unittest.TestCase]:
    tests = []
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            tests.extend(_iter_tests(item))
        else:
            tests.append(item)
    return tests


def run_child(mode: str) -> dict[str, Any]:
    report = Path(tempfile.mkstemp(prefix=f"cancelpool-{mode}-", suffix=".json")[1])
    started = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--mode", mode, "--report", str(report)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
            timeout=HANG_SECONDS + 60,
        )
        returncode, output = proc.returncode, proc.stdout
    except subprocess.TimeoutExpired as exc:
        returncode = -9
        captured = exc.output or ""
        output = captured if isinstance(captured, str) else captured.decode(errors="replace")
        output += f"\n(killed: the {mode} run hung for {HANG_SECONDS + 60}s)"
    data: dict[str, Any] = json.loads(report.read_text()) if report.stat().st_size else {}
    report.unlink()
    data.setdefault("mode", mode)
    data["seconds"] = time.monotonic() - started
    data["returncode"] = returncode
    data["output"] = output
    return data


def install_pth() -> Path:
    """Write the ``.pth`` that swaps the executor in every child interpreter of the run.

    ``site`` reads ``.pth`` files in name order, and ours imports cancelpool: with an
    editable install, whose own ``.pth`` (``_cancelpool.pth`` or similar) puts cancelpool
    on ``sys.path``, ours could come first and fail with "No module named 'cancelpool'".
    So the runner also hands the children the folder cancelpool is imported from
    (``CANCELPOOL_CONFORMANCE_IMPORT_DIR``), and the name sorts after the usual ones.
    """
    import cancelpool

    os.environ["CANCELPOOL_CONFORMANCE_IMPORT_DIR"] = str(
        Path(cancelpool.__file__).resolve().parent.parent
    )
    pth = Path(sysconfig.get_path("purelib")) / PTH_NAME
    pth.write_text(PTH_LINE)
    return pth


def compare(summary: Optional[Path]) -> int:
    pth = install_pth()
    try:
        stock = run_child("stock")
        swapped = run_child("swapped")
    finally:
        pth.unlink()
    version = ".".join(map(str, sys.version_info[:3]))
    for data in (stock, swapped):
        if data["returncode"] != 0 or "outcomes" not in data:
            print(data["output"])
            mode, code = data.get("mode", "?"), data["returncode"]
            print(f"conformance {version}: the {mode} run crashed or hung (exit {code})")
            return 2
    must_pass = sorted(t for t, o in stock["outcomes"].items() if o == "passed")
    regressions = [t for t in must_pass if swapped["outcomes"].get(t) != "passed"]
    # regrtest's --fail-env-changed: threads left behind by the tests fail the run.
    env_changed = swapped.get("env_changed", False) and not stock.get("env_changed", False)
    if regressions or env_changed:
        print(swapped["output"])
    print(f"conformance {version}: suite {swapped['suite']}")
    print(
        f"  stock ThreadPoolExecutor:        {len(must_pass)} of {len(stock['outcomes'])} selected "
        f"tests pass ({stock['seconds']:.1f}s)"
    )
    passed = len(must_pass) - len(regressions)
    print(
        f"  CancellableThreadPoolExecutor:   {passed} of those {len(must_pass)} pass "
        f"({swapped['seconds']:.1f}s); swap confirmed in {swapped['children_swapped']} child "
        "interpreters"
    )
    subtests = sum(" (" in t for t in must_pass)
    print(f"  ({subtests} of the {len(must_pass)} are subtests, counted one by one)")
    for t in regressions:
        print(f"  REGRESSION {t}: {swapped['outcomes'].get(t, 'missing')}")
    if env_changed:
        print(
            "  ENV CHANGED: threads outlived the tests with our class (not with the stock "
            "one): CPython's threading_cleanup() reported dangling threads"
        )
    failed = len(regressions) + env_changed
    print(f"conformance: {passed} passed, {failed} failed")
    if summary is not None:
        summary.write_text(json.dumps({"passed": passed, "failed": failed}))
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("stock", "swapped"))
    parser.add_argument("--report", type=Path)
    parser.add_argument("--summary", type=Path, help="write {passed, failed} here as JSON")
    args = parser.parse_args()
    if args.mode is None:
        return compare(args.summary)
    try:
        return run_once(args.mode, args.report or Path(os.devnull))
    except SwapNotInEffectError as exc:
        print(f"SWAP NOT IN EFFECT: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

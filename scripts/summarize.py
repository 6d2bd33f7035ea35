"""Sum up one `scripts/test` run: every tox env's result and counts, then one count line.

Reads, for each tox work dir given (the host's ``.tox`` and the 3.14/3.15 chroot's), the
``result.json`` that ``tox --result-json`` wrote (each env's exit code), the JUnit XML
that each test env's pytest wrote and the JSON summary each conformance env wrote (both in
the env's tmp dir, which tox empties at the start of every run). It prints a line per env,
then, last, one line that counts every env::

    tests: 3770 passed, 0 failed, 60 skipped

Test envs add their test counts, conformance envs their counts of CPython tests that pass
with the stock executor and with ours (subtests included); an env without counts (lint,
typing, docs, package) adds one passed or one failed check; an env that failed without reporting a
failure in its counts (a crash, a hang, a failed install) adds one failed, as does an env
expected but absent. Exits 1 if anything failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import NamedTuple, Optional

#: Every env a full run must report, in the order printed.
EXPECTED = (
    "lint",
    "typing",
    "docs",
    "package",
    *(f"py3{m}" for m in range(9, 16)),
    "pypy3",
    *(f"conformance-py3{m}" for m in range(9, 16)),
)


class EnvResult(NamedTuple):
    """What one env reported."""

    name: str
    exit_code: Optional[int]  # None: the env is not in any result.json
    passed: int
    failed: int
    skipped: int
    counted: bool  # whether the env wrote test counts


def junit_counts(path: Path) -> tuple[int, int, int]:
    """(passed, failed, skipped) from a pytest JUnit XML file."""
    suites = ET.parse(path).getroot()
    suite_list = [suites] if suites.tag == "testsuite" else list(suites)
    tests = sum(int(s.get("tests", 0)) for s in suite_list)
    failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suite_list)
    skipped = sum(int(s.get("skipped", 0)) for s in suite_list)
    return tests - failed - skipped, failed, skipped


def read_env(tox_dir: Path, name: str, exit_code: Optional[int]) -> EnvResult:
    """The result of env *name* in *tox_dir*."""
    junit = tox_dir / name / "tmp" / "junit.xml"
    conformance = tox_dir / name / "tmp" / "conformance.json"
    if junit.exists():
        return EnvResult(name, exit_code, *junit_counts(junit), counted=True)
    if conformance.exists():
        data = json.loads(conformance.read_text())
        return EnvResult(name, exit_code, data["passed"], data["failed"], 0, counted=True)
    return EnvResult(name, exit_code, 0, 0, 0, counted=False)


def exit_codes(tox_dir: Path) -> dict[str, int]:
    """Each env's exit code from *tox_dir*/result.json (empty if there is none)."""
    path = tox_dir / "result.json"
    if not path.exists():
        return {}
    envs = json.loads(path.read_text()).get("testenvs", {})
    return {
        name: int(env["result"]["exit_code"])
        for name, env in envs.items()
        if isinstance(env, dict) and "result" in env and not name.startswith(".")
    }


def describe(env: EnvResult) -> str:
    """One line for *env*."""
    if env.exit_code is None:
        return f"  {env.name:20} did not run"
    verdict = "ok" if env.exit_code == 0 else f"FAILED (exit {env.exit_code})"
    if not env.counted:
        return f"  {env.name:20} {verdict}"
    return (
        f"  {env.name:20} {verdict:18} {env.passed:5} passed {env.failed:3} failed "
        f"{env.skipped:3} skipped"
    )


def tally(envs: list[EnvResult]) -> tuple[int, int, int]:
    """(passed, failed, skipped) over *envs*, every env counted (see the module doc)."""
    passed = failed = skipped = 0
    for env in envs:
        passed += env.passed
        failed += env.failed
        skipped += env.skipped
        ok = env.exit_code == 0
        if not env.counted:
            passed += ok
            failed += not ok
        elif not ok and env.failed == 0:
            failed += 1
    return passed, failed, skipped


def main(argv: Optional[list[str]] = None) -> int:
    """Print the summary of the tox work dirs named in *argv*; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tox_dirs", nargs="+", type=Path)
    parser.add_argument("--seconds", type=int, help="how long the whole run took")
    args = parser.parse_args(argv)
    found: dict[str, EnvResult] = {}
    for tox_dir in args.tox_dirs:
        for name, code in exit_codes(tox_dir).items():
            found[name] = read_env(tox_dir, name, code)
    envs = [found.pop(name, EnvResult(name, None, 0, 0, 0, False)) for name in EXPECTED]
    envs.extend(found.values())
    print("scripts/test: every env")
    for env in envs:
        print(describe(env))
    passed, failed, skipped = tally(envs)
    bad = [e.name for e in envs if e.exit_code != 0]
    took = f" in {args.seconds} s" if args.seconds is not None else ""
    print(
        f"scripts/test: {len(envs) - len(bad)} of {len(envs)} envs ok{took}"
        + (f"; failed or missing: {', '.join(bad)}" if bad else "")
    )
    print(f"tests: {passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed or bad else 0


if __name__ == "__main__":
    sys.exit(main())

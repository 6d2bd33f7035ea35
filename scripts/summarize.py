"""Sum up what the tox envs of one `scripts/test` run counted, one line per env.

Reads the JUnit XML that each test env's pytest wrote and the JSON summary each
conformance env wrote (both in the env's tmp dir, which tox empties at the start of
every run), prints a line per env, and a closing `tests: N passed, N failed` line.
Exits 1 if an env that should have reported did not.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def main(tox_dir: Path) -> int:
    """Print the per-env counts found under *tox_dir*; return the exit status."""
    total_passed = total_failed = total_skipped = 0
    missing = []
    for env in sorted(p for p in tox_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        junit = env / "tmp" / "junit.xml"
        conformance = env / "tmp" / "conformance.json"
        if junit.exists():
            suites = ET.parse(junit).getroot()
            suite_list = [suites] if suites.tag == "testsuite" else list(suites)
            tests = sum(int(s.get("tests", 0)) for s in suite_list)
            failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suite_list)
            skipped = sum(int(s.get("skipped", 0)) for s in suite_list)
            passed = tests - failed - skipped
        elif conformance.exists():
            data = json.loads(conformance.read_text())
            passed, failed, skipped = data["passed"], data["failed"], 0
        else:
            if env.name.startswith(("py3", "conformance-")):
                missing.append(env.name)
            continue
        total_passed += passed
        total_failed += failed
        total_skipped += skipped
        print(f"  {env.name:20} {passed:5} passed {failed:3} failed {skipped:3} skipped")
    for name in missing:
        print(f"  {name:20} reported nothing")
    print(f"tests: {total_passed} passed, {total_failed} failed, {total_skipped} skipped")
    return 1 if (total_failed or missing) else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else ".tox")))

"""The docs are built from the code, and their examples run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "docs" / "examples").glob("*.py"))

EXPECTED = {
    "crawl.py": "cancel() -> True\nstopped -> True\nstate -> stopped\n",
    "unblock_socket.py": "stopped -> True\nreason -> user pressed stop\n",
    "shutdown_timeout.py": "still running: [True]\na: stopped | b: stopping\n",
    "in_and_out_of_tasks.py": "inside a task: False\n6\ninside a task: True\n15\n",
}


def test_every_example_has_an_expected_output() -> None:
    assert {p.name for p in EXAMPLES} == set(EXPECTED)


@pytest.mark.subprocess
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(example: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == EXPECTED[example.name]
    assert proc.stderr == ""


def test_generated_docs_are_current() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "build.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_doc_page_is_linked_from_the_index() -> None:
    index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    for page in (ROOT / "docs").glob("*.md"):
        if page.name != "index.md":
            assert f"({page.name})" in index, page.name

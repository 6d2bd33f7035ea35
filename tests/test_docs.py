"""The docs are built from the code, and their examples run."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

import cancelpool

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "docs" / "examples").glob("*.py"))

EXPECTED = {
    "crawl.py": "cancel() -> True\nstopped -> True\nstate -> stopped\n",
    "unblock_socket.py": "stopped -> True\nreason -> user pressed stop\n",
    "shutdown_timeout.py": "still running: [True]\na: stopped | b: stopping\n",
    "in_and_out_of_tasks.py": "inside a task: False\n6\ninside a task: True\n15\n",
    "force_legacy_loop.py": (
        "stopped -> True\nstate -> True\ninterrupts -> 1\nstill running -> ()\n"
    ),
    "shield_critical.py": "stopped -> True\nbooks balance -> True\nlock held -> False\n",
    "deadline.py": (
        "fast: ok\nslow: DeadlineExceeded after 0.2 s\na TimeoutError -> True\n"
        "cancelled() -> False\nstopped -> True | reason -> deadline\ntimed out -> 1\n"
    ),
    "cancel_group.py": (
        "all cancelled -> True\nall stopped -> True\nreasons -> {'user closed the window'}\n"
        "crawl stopped -> True\ncancelled -> 4 | still running -> 0\n"
    ),
    "asyncio_cancel_task.py": (
        "asyncio task cancelled -> True\nthread task stopped, reason -> user closed the page\n"
    ),
    "asyncio_to_thread_timeout.py": "timed out -> True\nthread task stopped, reason -> cancel\n",
    "wait_queue_and_socket.py": (
        "done -> [10, 20, 30]\nstopped -> True True\nstates -> stopped stopped\n"
        "queue_get outside a task -> queue.Empty\n"
    ),
}
NEEDS_INJECTION = {"force_legacy_loop.py", "shield_critical.py"}


def test_every_example_has_an_expected_output() -> None:
    assert {p.name for p in EXAMPLES} == set(EXPECTED)


@pytest.mark.subprocess
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(example: Path) -> None:
    if example.name in NEEDS_INJECTION and not cancelpool.FORCE_AVAILABLE:
        pytest.skip("needs injection")
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


@pytest.mark.subprocess
@pytest.mark.skipif(
    platform.python_implementation() != "CPython", reason="the page's table is CPython's"
)
def test_interruption_table_matches_this_interpreter() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "measure_interruptions.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    measured = [line.split("|")[2].strip() for line in proc.stdout.splitlines()[2:]]
    page = (ROOT / "docs" / "forced-cancellation.md").read_text(encoding="utf-8")
    start = page.index("| the task is in |")
    rows = page[start:].split("\n\n")[0].splitlines()[2:]
    documented = [row.split("|")[2].strip() for row in rows]
    # Same rows, same order; the page's wording of each outcome starts with the script's.
    assert len(measured) == len(documented) == 11
    for got, doc in zip(measured, documented):
        assert doc.startswith(got.split(" (")[0]), (got, doc)

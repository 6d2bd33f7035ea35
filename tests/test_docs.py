"""The docs are built from the code, and their examples run."""

from __future__ import annotations

import html
import importlib.util
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest

import cancelpool

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "docs" / "examples").glob("*.py"))
API_PAGES = sorted((ROOT / "docs" / "api").glob("*.md"))
# The directives that document a public name in the API pages: ``.. autoclass:: X``,
# ``.. autofunction:: X``, ``.. data:: X``...
API_DIRECTIVE = re.compile(r"^\.\. (?:auto)?(?:class|function|exception|data):: (\w+)$", re.M)
# Private names a page may mention: the hooks a ``queue.Queue`` subclass overrides,
# named by ``queue_get``'s docstring (the stdlib's, not ours).
ALLOWED_PRIVATE = {"_get", "_qsize"}
# The site builds only where Sphinx and the docs' packages are installed: the docs tox
# env (tox -e docs); the test envs do not install them.
HAVE_SPHINX = all(importlib.util.find_spec(m) for m in ("sphinx", "myst_parser", "furo"))

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
    "dask_cancel.py": (
        "running -> True\nnext task -> 6\nthe task saw -> dask-cancel\n"
        "slow_job: DeadlineExceeded after 0.3 s\n"
    ),
}
NEEDS_INJECTION = {"force_legacy_loop.py", "shield_critical.py"}
# The dask extra: distributed installs on CPython 3.10+ only (not on 3.9 or PyPy).
NEEDS_DISTRIBUTED = {"dask_cancel.py"}
HAVE_DISTRIBUTED = importlib.util.find_spec("distributed") is not None


def test_every_example_has_an_expected_output() -> None:
    assert {p.name for p in EXAMPLES} == set(EXPECTED)


@pytest.mark.subprocess
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(example: Path) -> None:
    if example.name in NEEDS_INJECTION and not cancelpool.FORCE_AVAILABLE:
        pytest.skip("needs injection")
    if example.name in NEEDS_DISTRIBUTED and not HAVE_DISTRIBUTED:
        pytest.skip(
            "needs dask.distributed (pip install 'cancelpool[dask]'), "
            "not installed on this interpreter"
        )
    proc = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == EXPECTED[example.name]
    assert proc.stderr == ""


def test_included_examples_are_current() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "build.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_public_name_is_in_the_api_pages() -> None:
    documented = [
        name for page in API_PAGES for name in API_DIRECTIVE.findall(page.read_text("utf-8"))
    ]
    assert sorted(documented) == sorted(cancelpool.__all__)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The HTML site, built as ``tox -e docs`` builds it: warnings are errors."""
    if not HAVE_SPHINX:
        pytest.skip("sphinx, myst-parser and furo are not installed (tox -e docs has them)")
    out = tmp_path_factory.mktemp("html")
    flags = ["-W", "--keep-going", "-n", "-q", "-b", "html", "-d", str(out / ".doctrees")]
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", *flags, str(ROOT / "docs"), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == "", proc.stderr  # no warning, even one -W would not catch
    return out


def _article(page: Path) -> str:
    """The HTML of a built page's content (without the theme's navigation)."""
    raw = page.read_text(encoding="utf-8")
    return raw[raw.index("<article") : raw.index("</article>")]


@pytest.mark.subprocess
def test_site_api_pages_document_every_public_name(site: Path) -> None:
    ids = set()
    for page in (site / "api").glob("*.html"):
        ids |= set(re.findall(r'id="cancelpool\.(\w+)"', _article(page)))
    assert set(cancelpool.__all__) <= ids


@pytest.mark.subprocess
def test_site_api_pages_name_nothing_private(site: Path) -> None:
    pages = sorted((site / "api").glob("*.html"))
    assert len(pages) == len(API_PAGES)
    for page in pages:
        article = _article(page)
        # Not in links or anchors either: ``_Default``, ``cancelpool._token``...
        assert "_Default" not in article, page.name
        assert not re.search(r"cancelpool\._[a-z]", article), page.name
        assert "concurrent.futures._base" not in article, page.name
        text = html.unescape(re.sub(r"<[^>]+>", "", article))
        private = set(re.findall(r"[\w.]*\b_[A-Za-z]\w*", text)) - ALLOWED_PRIVATE
        assert not private, (page.name, sorted(private))


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

"""Check the built sdist and wheel carry what a package index shows: license and URLs.

Usage: ``python scripts/check_dist.py DIST_DIR`` (tox's ``package`` env runs it after
``python -m build`` and ``twine check --strict``). ``DIST_DIR`` must hold exactly one
wheel and one sdist. The check fails (exit 1, one line per problem) unless:

- the wheel has the repository's ``LICENSE``, byte for byte, in its ``.dist-info``
  (``licenses/LICENSE``, PEP 639) and the sdist has it at its root;
- both artifacts' metadata (``METADATA``, ``PKG-INFO``) say ``License-Expression: MIT``
  and ``License-File: LICENSE``, carry every ``[project.urls]`` entry of
  ``pyproject.toml``, the PyPy classifier, and the version of ``_version.py``;
- their long description (the README) links only to absolute URLs: a package index
  shows it without the repository, so ``docs/x.md`` would be a broken link there.

``twine check`` validates the metadata's syntax and the README's rendering; it does not
look for the license file or compare anything with the source tree, hence this script.
"""

from __future__ import annotations

import re
import sys
import tarfile
import zipfile
from email.message import Message
from email.parser import HeaderParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPY = "Programming Language :: Python :: Implementation :: PyPy"
# A Markdown link or image target: [text](target) or ![alt](target).
LINK = re.compile(r"\]\(([^)\s]+)")


def expected_urls() -> list[str]:
    """The ``Project-URL`` values ``pyproject.toml``'s ``[project.urls]`` should produce."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    table = re.search(r"^\[project\.urls\]\n(.*?)(?:^\[|\Z)", text, re.M | re.S)
    if table is None:
        return []
    pairs = re.findall(r'^(\w+) = "([^"]+)"', table.group(1), re.M)
    return [f"{name}, {url}" for name, url in pairs]


def expected_version() -> str:
    """The version string in ``src/cancelpool/_version.py``."""
    text = (ROOT / "src" / "cancelpool" / "_version.py").read_text(encoding="utf-8")
    found = re.search(r'__version__ = "([^"]+)"', text)
    return found.group(1) if found else "<no __version__ in _version.py>"


def check_metadata(label: str, meta: Message) -> list[str]:
    """Problems with one artifact's core metadata (empty if none)."""
    problems = []
    for field, value in (
        ("License-Expression", "MIT"),
        ("License-File", "LICENSE"),
        ("Version", expected_version()),
    ):
        if meta.get(field) != value:
            problems.append(f"{label}: {field} is {meta.get(field)!r}, expected {value!r}")
    urls = meta.get_all("Project-URL") or []
    problems += [f"{label}: no Project-URL {url!r}" for url in expected_urls() if url not in urls]
    if PYPY not in (meta.get_all("Classifier") or []):
        problems.append(f"{label}: no classifier {PYPY!r}")
    body = meta.get_payload()
    for target in LINK.findall(body if isinstance(body, str) else ""):
        if not target.startswith(("https://", "http://")):
            problems.append(f"{label}: the README links to {target!r}, not an absolute URL")
    return problems


def check_wheel(path: Path, license_text: bytes) -> list[str]:
    """Problems with the wheel: its LICENSE in ``.dist-info/licenses`` and its METADATA."""
    with zipfile.ZipFile(path) as whl:
        names = whl.namelist()
        dist_info = next((n.split("/")[0] for n in names if ".dist-info/" in n), "")
        problems = []
        if f"{dist_info}/licenses/LICENSE" not in names:
            problems.append(f"{path.name}: no {dist_info}/licenses/LICENSE")
        elif whl.read(f"{dist_info}/licenses/LICENSE") != license_text:
            problems.append(f"{path.name}: its LICENSE differs from the repository's")
        meta = HeaderParser().parsestr(whl.read(f"{dist_info}/METADATA").decode("utf-8"))
    return problems + check_metadata(path.name, meta)


def check_sdist(path: Path, license_text: bytes) -> list[str]:
    """Problems with the sdist: its LICENSE at the root and its PKG-INFO."""
    top = path.name[: -len(".tar.gz")]
    with tarfile.open(path) as sdist:

        def read(name: str) -> bytes | None:
            try:
                member = sdist.extractfile(f"{top}/{name}")
            except KeyError:
                return None
            return member.read() if member else None

        found = read("LICENSE")
        pkg_info = read("PKG-INFO") or b""
    problems = []
    if found is None:
        problems.append(f"{path.name}: no {top}/LICENSE")
    elif found != license_text:
        problems.append(f"{path.name}: its LICENSE differs from the repository's")
    return problems + check_metadata(path.name, HeaderParser().parsestr(pkg_info.decode()))


def main(argv: list[str]) -> int:
    """Check the artifacts in ``argv[0]``; print the problems; return the exit status."""
    if len(argv) != 1:
        print("usage: python scripts/check_dist.py DIST_DIR", file=sys.stderr)
        return 2
    dist = Path(argv[0])
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        print(f"{dist}: expected one wheel and one sdist, found {wheels + sdists}")
        return 1
    license_text = (ROOT / "LICENSE").read_bytes()
    problems = check_wheel(wheels[0], license_text) + check_sdist(sdists[0], license_text)
    for problem in problems:
        print(problem)
    if not problems:
        print(f"{wheels[0].name}, {sdists[0].name}: LICENSE, license metadata, URLs, OK")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

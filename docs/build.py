"""Keep the examples that the pages include in sync with the example files.

Usage: ``python docs/build.py`` rewrites, in every page, the fenced code block that
follows an ``<!-- include: examples/NAME.py -->`` marker with the file's current text.
``python docs/build.py --check`` changes nothing and exits 1 if any page is stale;
``tests/test_docs.py`` runs that check, so the pages cannot drift from the examples,
which the tests run. (The API reference is built by Sphinx from the docstrings:
``docs/api/``, ``docs/conf.py``.)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
INCLUDE = re.compile(r"(<!-- include: (?P<path>[\w/.-]+) -->\n```python\n)(?P<body>.*?)(```)", re.S)


def expand_includes(text: str) -> str:
    """Replace the code block after each include marker with the file it names."""

    def replace(match: re.Match[str]) -> str:
        body = (DOCS / match["path"]).read_text(encoding="utf-8")
        return match[1] + body + match[4]

    return INCLUDE.sub(replace, text)


def built() -> dict[Path, str]:
    """Every page, path to the text it should have."""
    return {
        page: expand_includes(page.read_text(encoding="utf-8"))
        for page in sorted(DOCS.glob("*.md"))
    }


def main(argv: list[str]) -> int:
    pages = built()
    stale = [p for p, text in pages.items() if p.read_text("utf-8") != text]
    if "--check" in argv:
        for p in stale:
            sys.stdout.write(f"stale: {p.name} (run python docs/build.py)\n")
        return 1 if stale else 0
    for p in stale:
        p.write_text(pages[p], encoding="utf-8")
        sys.stdout.write(f"wrote {p}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Sphinx configuration: the Markdown pages (MyST), the API reference from the docstrings.

Build with ``tox -e docs`` or
``sphinx-build -W --keep-going -n -b html docs docs/_build/html`` (with cancelpool
installed, e.g. ``pip install -e .``). Warnings are errors and every cross-reference must
resolve (``-n``); the stdlib's resolve against ``_intersphinx/python3.inv``, a committed
copy of Python's inventory, so the build never touches the network.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Generic

import cancelpool

DOCS = Path(__file__).resolve().parent

project = "cancelpool"
author = "cancelpool developers"
copyright = "cancelpool developers"
release = cancelpool.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
# The example scripts, the page builder and the measuring script are Python files the
# pages include or name, not pages.
exclude_patterns = ["_build", "examples", "_intersphinx"]

# Links between pages point at headings (design.md#without-the-gil): give every heading
# down to ### an anchor, as GitHub's renderer does.
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"cancelpool {release}"

nitpicky = True

# Python's objects.inv (3.13), committed so that the build works offline; the pages link
# to the live docs. To refresh it, download https://docs.python.org/3/objects.inv over it.
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", str(DOCS / "_intersphinx" / "python3.inv")),
}

# ---------------------------------------------------------------- autodoc
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
# Show defaults as written (`timeout=DEFAULT`, `grace=math.inf`), not as their values.
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# Private names that signatures and docstrings reach through annotations, replaced by
# public text (tests/test_docs.py checks the built API pages for any left):
# - ``DEFAULT`` ("use the executor's setting") has a private type, ``_Default``: the
#   annotation drops it and the default keeps its name, so that
#   ``force: Union[bool, _Default] = DEFAULT`` reads ``force: bool = DEFAULT``;
# - a public class defined in a private module is named by its public name
#   (``cancelpool._token.CancelToken`` -> ``cancelpool.CancelToken``), and a type variable
#   (``cancelpool._wait.C``) by its bare name;
# - the stdlib's own private modules give way to the names its docs use
#   (``concurrent.futures._base.Future`` -> ``concurrent.futures.Future``).
_DEFAULT_TYPE = re.compile(
    r"\s*\|\s*~?cancelpool\._validate\._Default\b|~?cancelpool\._validate\._Default\s*\|\s*"
)
# The same, where the annotation stayed a string (a NamedTuple's fields):
# ``Union[bool, _Default]`` -> ``bool``.
_DEFAULT_IN_UNION = re.compile(r"Union\[([\w.]+), _Default\]")
_PRIVATE_MODULE = re.compile(r"(~?)cancelpool\._\w+\.(\w+)")
_STDLIB_PRIVATE = re.compile(r"concurrent\.futures\._base\.")


def _public_name(match: re.Match[str]) -> str:
    tilde, name = match[1], match[2]
    return f"{tilde}cancelpool.{name}" if name in cancelpool.__all__ else name


def public_text(text: str) -> str:
    """*text* with the private names above replaced by public ones."""
    text = _DEFAULT_TYPE.sub("", text)
    text = _DEFAULT_IN_UNION.sub(r"\1", text)
    text = _PRIVATE_MODULE.sub(_public_name, text)
    text = _STDLIB_PRIVATE.sub("concurrent.futures.", text)
    # Sphinx writes ``Callable[..., T]`` as ``Callable[[...], T]``.
    return text.replace("[[...], ", "[..., ")


# What cannot resolve, and why: nothing to link to, so no warning either.
nitpick_ignore = [
    # Type variables of generic signatures (``Callable[..., T]``): no page documents them.
    ("py:class", "T"),
    ("py:obj", "T"),
    ("py:class", "C"),
    ("py:obj", "C"),
    # ``P`` is the ParamSpec of ``Callable[P, T]`` (``P.args``, ``P.kwargs``): same.
    ("py:class", "P"),
    ("py:class", "P.args"),
    ("py:class", "P.kwargs"),
]


def _public_signature(
    app: Any,
    what: str,
    name: str,
    obj: Any,
    options: Any,
    signature: str | None,
    return_annotation: str | None,
) -> tuple[str | None, str | None]:
    """Replace private names in a signature (``autodoc-process-signature``)."""
    del app, what, name, obj, options
    return (
        None if signature is None else public_text(signature),
        None if return_annotation is None else public_text(return_annotation),
    )


def _public_docstring(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """Replace private names in a docstring, after napoleon added the annotated types."""
    del app, what, name, obj, options
    lines[:] = [public_text(line) for line in lines]


def _public_bases(app: Any, name: str, obj: Any, options: Any, bases: list[Any]) -> None:
    """Name the stdlib bases as its docs do (``concurrent.futures.ThreadPoolExecutor``)."""
    del app, name, obj, options
    for i, base in enumerate(bases):
        origin = getattr(base, "__origin__", base)  # Future[T] -> Future
        if isinstance(origin, type) and origin.__module__.startswith("concurrent.futures."):
            bases[i] = f":py:class:`concurrent.futures.{origin.__qualname__}`"
        elif origin is Generic:  # Generic[cancelpool._wait.C] -> Generic[C]
            params = ", ".join(p.__name__ for p in base.__args__)
            bases[i] = f":py:class:`~typing.Generic`\\ [{params}]"


def setup(app: Any) -> None:
    """Register the rewrites; the docstring one runs after napoleon's (priority 500)."""
    app.connect("autodoc-process-signature", _public_signature)
    app.connect("autodoc-process-docstring", _public_docstring, priority=600)
    app.connect("autodoc-process-bases", _public_bases)

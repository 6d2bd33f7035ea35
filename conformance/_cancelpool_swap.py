"""Swap cancelpool's executor into ``concurrent.futures``, in this and in child interpreters.

Imported by the conformance runner, and at start-up of every child interpreter through a
``.pth`` file the runner writes into the environment's site-packages while it runs (a
``.pth`` is processed even under ``python -I``, which CPython's tests use for children).
The ``.pth`` line does nothing unless ``CANCELPOOL_CONFORMANCE_DIR`` is set; this module
then makes the suite importable (``$CANCELPOOL_CONFORMANCE_SUITE_DIR``, in both runs)
and swaps the executor only if ``CANCELPOOL_CONFORMANCE_SWAP=1`` (the swapped run).

Each process that swaps appends one line to ``$CANCELPOOL_CONFORMANCE_LOG``, so the
runner can prove the swap reached the children. Nothing is printed: CPython's exit tests
assert that a child's stderr is empty.
"""

from __future__ import annotations

import os
import sys


def add_suite_dir() -> None:
    suite_dir = os.environ.get("CANCELPOOL_CONFORMANCE_SUITE_DIR")
    if suite_dir:
        # The suite lives outside this interpreter's own ``test`` package (3.11, 3.12).
        import test

        if suite_dir not in test.__path__:
            test.__path__.append(suite_dir)


def add_import_dir() -> None:
    # The folder the runner imported cancelpool from: an editable install's own .pth may
    # not have been processed yet when ours runs (site reads them in name order).
    import_dir = os.environ.get("CANCELPOOL_CONFORMANCE_IMPORT_DIR")
    if import_dir and import_dir not in sys.path:
        sys.path.append(import_dir)


def install() -> None:
    import concurrent.futures
    import concurrent.futures.thread

    from cancelpool import CancellableThreadPoolExecutor

    # ``futures.ThreadPoolExecutor`` is what the tests bind; the class's own name is what
    # child scripts import (``from concurrent.futures import {executor_type.__name__}``).
    concurrent.futures.ThreadPoolExecutor = CancellableThreadPoolExecutor  # type: ignore[misc]
    concurrent.futures.thread.ThreadPoolExecutor = CancellableThreadPoolExecutor  # type: ignore[misc]
    concurrent.futures.CancellableThreadPoolExecutor = CancellableThreadPoolExecutor  # type: ignore[attr-defined]

    log = os.environ.get("CANCELPOOL_CONFORMANCE_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"{os.getpid()} {sys.executable} {' '.join(sys.argv[:2])!r}\n")


if os.environ.get("CANCELPOOL_CONFORMANCE_DIR"):
    add_suite_dir()
    if os.environ.get("CANCELPOOL_CONFORMANCE_SWAP") == "1":
        add_import_dir()
        install()

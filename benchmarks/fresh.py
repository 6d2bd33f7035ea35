"""Run one benchmark function in a fresh interpreter (memory and start-up state untouched).

Each benchmark module that needs it calls ``in_fresh_interpreter("bench_x", "fn", ...)``:
the child imports that module from this directory, calls the function with the
arguments (passed as JSON), and prints its result as JSON, which is returned here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = str(Path(__file__).resolve().parent)


def in_fresh_interpreter(module: str, function: str, *args: object, timeout: float = 600) -> Any:
    """Return ``module.function(*args)`` computed in a new interpreter (JSON in and out).

    Raises:
        subprocess.CalledProcessError: the child failed (its stderr is on the error).
    """
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import importlib; "
        "mod = importlib.import_module(sys.argv[2]); "
        "print(json.dumps(getattr(mod, sys.argv[3])(*json.loads(sys.argv[4]))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, HERE, module, function, json.dumps(args)],
        capture_output=True,
        text=True,
        check=True,
        timeout=timeout,
    )
    return json.loads(out.stdout)

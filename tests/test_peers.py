"""The peer comparison runs (``benchmarks/peers.py --quick``) where its peers are installed.

The CI test environments do not install the ``bench`` extra, so there this test skips and
says which peer is missing. Speed is not asserted, only what the comparison's claims rest
on: the stdlib pools never stop a running task, cancelpool's forced cancel does and leaves
no primitive broken, a process pool stops a task blocked in C.
"""

from __future__ import annotations

import importlib.util
import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PEERS = ("pebble", "func_timeout", "stopit", "matplotlib", "pkg_resources")

_missing = [name for name in PEERS if importlib.util.find_spec(name) is None]


@pytest.mark.subprocess
@pytest.mark.timeout(240)  # a quick run takes about a minute on 2 busy cores
@pytest.mark.skipif(
    bool(_missing), reason=f"the bench extra is not installed (missing: {', '.join(_missing)})"
)
@pytest.mark.skipif(
    platform.python_implementation() != "CPython" or sys.platform != "linux",
    reason="the comparison is made on CPython, Linux (one monotonic clock for all processes)",
)
def test_quick_peer_comparison(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "peers.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=220,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "peers-results.json").read_text())
    for plot in ("peers-overhead.png", "peers-stop-latency.png", "peers-threads-left.png"):
        assert (tmp_path / plot).stat().st_size > 1000, plot
    assert "### Time to a free worker" in proc.stdout
    assert all(row["per_call_s"] > 0 for row in data["overhead"].values())
    stop = data["stop"]
    for task in ("loop", "primitives", "blocked in C"):
        assert not stop["ThreadPoolExecutor"][task]["stopped"]
        assert not stop["ProcessPoolExecutor"][task]["stopped"]
    forced = stop["cancelpool forced"]
    assert forced["loop"]["stopped"] and forced["primitives"]["stopped"]
    assert forced["primitives"]["primitives_checked"] > 0
    assert forced["primitives"]["broken"] == {}
    assert stop["pebble ProcessPool"]["blocked in C"]["stopped"]
    assert not stop["func_timeout"]["blocked in C"]["stopped"]
    assert data["threads"]["cancelpool forced"]["tasks"] > 0

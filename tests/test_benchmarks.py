"""The benchmarks run (a smoke run with tiny sizes); speed itself is not asserted here."""

from __future__ import annotations

import importlib.util
import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

import cancelpool

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.subprocess
def test_quick_benchmark_run(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert len(data["throughput"]) == 4
    assert len(data["deadline"]) == 3
    assert data["timer_wakeups"] <= 3  # at most the first deadline of each benchmark
    assert 0 < data["waiting"]["socket"]["p50_us"] <= data["waiting"]["socket"]["p99_us"]
    assert data["waiting"]["queue_get"]["ratio"] > 0
    assert all(row["ratio"] > 0 for row in data["throughput"])
    assert {row["task"] for row in data["latency"]} == {
        "polling token.cancelled",
        "blocked in token.wait()",
        "blocked in token.sleep()",
    }
    if platform.python_implementation() == "CPython":
        assert data["memory"]["ours_bytes"] > 0
    # Forced latency: 2 task shapes x 2 cancellers where injection works, none elsewhere.
    assert len(data["forced"]) == (4 if cancelpool.FORCE_AVAILABLE else 0)
    assert all(0 < row["p50_us"] <= row["p99_us"] for row in data["forced"])
    # The dask plugin's rows (two workloads) where distributed is installed, none elsewhere.
    assert len(data["dask"]) == (2 if importlib.util.find_spec("distributed") else 0)
    assert all(row["ratio"] > 0 for row in data["dask"])
    assert len(data["dask_stop"]) == len(data["dask"])
    assert all(0 < row["p50_ms"] <= row["p99_ms"] for row in data["dask_stop"])

"""`python -m cancelpool demo` runs, says what it shows, and exits promptly."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

import cancelpool
from cancelpool.__main__ import main


@pytest.mark.subprocess
def test_demo_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cancelpool", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "stdlib ThreadPoolExecutor: cancel() of a running task -> False" in out
    assert "cancelpool:                cancel() of a running task -> True" in out
    assert "wait_stopped() -> True); state now 'stopped'" in out
    assert "(stopped: True, reason: 'user pressed stop')" in out
    if cancelpool.FORCE_AVAILABLE:
        assert "TaskInterrupted was raised and the loop stopped" in out
        assert "(stopped: True)" in out
        assert "state 'stopped'; interrupts: 1" in out
    else:
        assert "cannot interrupt a task (cancelpool.FORCE_AVAILABLE is False)" in out
        assert "state 'abandoned'; the pool took the next task on a new worker: True" in out
        assert "ForceUnavailableWarning: forced cancellation cannot interrupt" in out
        assert "WorkerAbandonedWarning: task _force.<locals>.legacy_loop()" in out
    assert "failed with DeadlineExceeded after" in out
    assert "(a TimeoutError: True); task stopped: True, reason 'deadline'" in out
    assert "all cancelled: True, all stopped: True" in out
    assert re.search(r"shutdown\(cancel_futures=True, timeout=0.5\) returned after", out)
    assert "state=cancelled, worker abandoned reason='shutdown'" in out
    assert "WorkerAbandonedWarning: task" in out
    assert out.rstrip().endswith("Done.")
    assert proc.stderr == ""


def test_cli_requires_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "demo" in capsys.readouterr().err

"""`python -m cancelpool demo` runs, says what it shows, and exits promptly."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import textwrap

import pytest

import cancelpool
from cancelpool import _demo
from cancelpool.__main__ import main

DEMO = [sys.executable, "-m", "cancelpool", "demo"]


@pytest.fixture(scope="module")
def demo() -> subprocess.CompletedProcess[str]:
    """One run of the demo (about 2 s), shared by the tests that read its output."""
    return subprocess.run(DEMO, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.subprocess
def test_demo_runs(demo: subprocess.CompletedProcess[str]) -> None:
    proc = demo
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "stdlib ThreadPoolExecutor: cancel() of a running task -> False; it runs on " in out
    assert "(running() -> True)" in out
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
    assert out.rstrip().endswith("Done.")
    assert proc.stderr == ""


@pytest.mark.subprocess
def test_demo_step_5_shows_both_shutdowns(demo: subprocess.CompletedProcess[str]) -> None:
    assert demo.returncode == 0, demo.stderr
    step = demo.stdout.split("\n5. ")[1]
    # cancelpool: returns within its timeout; the stuck task is reported, its worker
    # abandoned; the queue behind it (one worker, so nothing in it ran) is cancelled.
    found = re.search(
        r"shutdown\(cancel_futures=True, timeout=0.5\) returned after ([\d.]+) ms", step
    )
    assert found and 400 < float(found.group(1)) < 5000, step
    assert "still running: 1 task:\n" in step
    assert "state=cancelled, worker abandoned reason='shutdown'>" in step
    assert "WorkerAbandonedWarning: task _stuck_task.<locals>.stuck() in thread" in step
    assert "the 5 queued tasks: 5 cancelled, 0 ran; abandoned workers: 1" in step
    # The stdlib, measured: its shutdown() still blocked a second later, the task running.
    assert re.search(
        r"stdlib ThreadPoolExecutor, the same task and queue: shutdown\(cancel_futures=True\) "
        r"\(it has no timeout parameter\) still blocked 1\.\d s later: True\n",
        step,
    ), step
    assert (
        "the task running: True; its thread alive: True; the 5 queued tasks: 5 cancelled, 0 ran\n"
        in step
    )
    assert "the demo then set the Event the task waits on: the task returned" in step


@pytest.mark.subprocess
def test_demo_warnings_are_whole_and_wrapped_at_word_boundaries(
    demo: subprocess.CompletedProcess[str],
) -> None:
    assert demo.returncode == 0, demo.stderr
    lines = demo.stdout.splitlines()
    starts = [i for i, line in enumerate(lines) if re.match(r"   \w+Warning: ", line)]
    assert starts, demo.stdout
    for i in starts:
        following = itertools.takewhile(lambda line: line.startswith("     "), lines[i + 1 :])
        block = [lines[i], *following]
        assert all(len(line) <= 100 for line in block), block
        text = " ".join(line.strip() for line in block)
        # The whole message is there: every warning of cancelpool ends with advice.
        assert text.endswith(("token.register().", "check their token to stop them for real.")), (
            text
        )
        assert "..." not in text


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith(f"cancelpool {cancelpool.__version__} (")


def test_cli_without_a_command_names_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error: choose a command: demo\n" in err
    assert "the following arguments are required" not in err


def test_demo_help_lists_every_step_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["demo", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert len(_demo.STEPS) == 5
    for number, (title, _) in enumerate(_demo.STEPS, 1):
        assert f"\n  {number}. {title}\n" in out


@pytest.mark.subprocess
def test_closed_pipe_ends_the_demo_quietly() -> None:
    # As `python -m cancelpool demo | head -1`: the reader takes one line and goes away.
    with subprocess.Popen(
        DEMO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8"
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stderr is not None
            assert proc.stdout.readline().startswith("cancelpool ")
            proc.stdout.close()
            returncode = proc.wait(timeout=30)
            stderr = proc.stderr.read()
        finally:
            proc.kill()  # a no-op once it has exited; a hang fails above, not here
    # 1, as Python itself exits when it cannot flush stdout; no traceback.
    assert returncode == 1, stderr
    assert stderr == ""


@pytest.mark.subprocess
@pytest.mark.parametrize(
    "marker",
    [
        "   stdlib ThreadPoolExecutor: cancel()",  # step 1, inside the stdlib pool's block
        "   the task: Event().wait(3600)",  # step 5, before cancelpool's stuck pool
        "   stdlib ThreadPoolExecutor, the same task",  # step 5, the stdlib's task stuck
    ],
)
def test_a_write_error_mid_step_leaves_nothing_to_wait_for(marker: str) -> None:
    # A stuck task left unreleased would hold up the exit for an hour: the stdlib's exit
    # hook joins its workers (and the with block of step 1 waits for its task).
    code = f"""
        import io, time
        from cancelpool import _demo

        class Out(io.StringIO):
            def write(self, text):
                if text.startswith({marker!r}):
                    raise BrokenPipeError(32, "Broken pipe")
                return super().write(text)

        t0 = time.perf_counter()
        try:
            _demo.main(Out())
        except BrokenPipeError:
            print("raised after", round(time.perf_counter() - t0, 1), "s")
    """
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("raised after "), proc.stdout
    assert proc.stderr == ""

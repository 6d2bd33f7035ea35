"""scripts/summarize.py: the closing lines of `scripts/test` count every env honestly."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "summarize.py"

pytestmark = pytest.mark.skipif(not SCRIPT.exists(), reason="runs from a source checkout")


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("summarize", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_run(tox_dir: Path, exit_codes: dict[str, int]) -> None:
    tox_dir.mkdir(parents=True, exist_ok=True)
    envs = {name: {"result": {"exit_code": code}} for name, code in exit_codes.items()}
    (tox_dir / "result.json").write_text(json.dumps({"testenvs": envs}))


def write_junit(tox_dir: Path, env: str, tests: int, failures: int, skipped: int) -> None:
    tmp = tox_dir / env / "tmp"
    tmp.mkdir(parents=True)
    (tmp / "junit.xml").write_text(
        f'<testsuites><testsuite tests="{tests}" failures="{failures}" errors="0" '
        f'skipped="{skipped}"/></testsuites>'
    )


def write_conformance(tox_dir: Path, env: str, passed: int, failed: int) -> None:
    tmp = tox_dir / env / "tmp"
    tmp.mkdir(parents=True)
    (tmp / "conformance.json").write_text(json.dumps({"passed": passed, "failed": failed}))


def full_run(tmp_path: Path, summarize: ModuleType) -> tuple[Path, Path]:
    host, chroot = tmp_path / "host", tmp_path / "chroot"
    names: list[str] = list(summarize.EXPECTED)
    chroot_names = [n for n in names if n.endswith(("py314", "py315"))]
    write_run(host, {n: 0 for n in names if n not in chroot_names})
    write_run(chroot, dict.fromkeys(chroot_names, 0))
    for name in names:
        where = chroot if name in chroot_names else host
        if name.startswith("conformance-"):
            write_conformance(where, name, 60, 0)
        elif name not in ("lint", "typing", "docs", "package"):
            write_junit(where, name, 100, 0, 2)
    return host, chroot


def last_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines: list[str] = capsys.readouterr().out.splitlines()
    return lines[-1]


def test_a_green_run_counts_every_env(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    summarize = load()
    host, chroot = full_run(tmp_path, summarize)
    assert summarize.main([str(host), str(chroot)]) == 0
    # 8 suites x 98 passed, 7 conformance runs x 60, lint, typing, docs and package one
    # check each.
    assert last_line(capsys) == "tests: 1208 passed, 0 failed, 16 skipped"


def test_a_failed_env_without_counts_fails_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    summarize = load()
    host, chroot = full_run(tmp_path, summarize)
    data = json.loads((host / "result.json").read_text())
    data["testenvs"]["typing"]["result"]["exit_code"] = 1
    (host / "result.json").write_text(json.dumps(data))
    assert summarize.main([str(host), str(chroot)]) == 1
    out = capsys.readouterr().out
    assert "typing               FAILED (exit 1)" in out
    assert out.splitlines()[-1] == "tests: 1207 passed, 1 failed, 16 skipped"


def test_a_crashed_suite_and_a_missing_env_count_as_failures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    summarize = load()
    host, chroot = full_run(tmp_path, summarize)
    data = json.loads((host / "result.json").read_text())
    data["testenvs"]["py39"]["result"]["exit_code"] = 2  # junit says 0 failed: a crash
    (host / "result.json").write_text(json.dumps(data))
    (chroot / "result.json").unlink()  # the chroot envs never ran
    assert summarize.main([str(host), str(chroot)]) == 1
    out = capsys.readouterr().out
    assert "py315                did not run" in out
    assert "failed or missing: py39, py314, py315" in out
    # py39's 98 still count as passed; its crash and the 4 missing envs fail.
    assert out.splitlines()[-1] == "tests: 892 passed, 5 failed, 12 skipped"

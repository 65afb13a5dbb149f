"""The project's own rules, checked by kept tools configured in pyproject.toml: ruff (lint),
import-linter (the layer contracts: the engine is the front ends' only door, only ui/ imports
gradio, ui/ never imports torch) and mypy (types of the vocabulary, the engine and the queue)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[test]' installs it)")
    return path


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


def test_ruff_finds_nothing():
    out = _run(_tool("ruff"), "check", "sdui", "tests", "bench", "app.py")
    assert out.returncode == 0, out.stdout + out.stderr


def test_layer_contracts_are_kept():
    out = _run(_tool("lint-imports"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def test_the_front_ends_never_reach_through_the_engine_into_the_manager():
    """The contracts see imports; this sees attribute reach-throughs (``engine.manager.x``)."""
    offenders = []
    for folder in ("sdui/ui", "sdui/api"):
        for path in (REPO / folder).rglob("*.py"):
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if ".manager" in line:
                    offenders.append(f"{path.relative_to(REPO)}:{n}")
    cli = (REPO / "sdui" / "cli.py").read_text(encoding="utf-8")
    offenders += ["sdui/cli.py"] if ".manager" in cli else []
    assert offenders == []


def test_mypy_accepts_the_typed_core():
    out = _run(_tool("mypy"))
    assert out.returncode == 0, out.stdout + out.stderr

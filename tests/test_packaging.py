"""The package installs under its distribution name and runs as a command and a module."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import aiollm

DIST = "aiollm-client"


def test_distribution_name_and_version_agree() -> None:
    assert metadata.version(DIST) == aiollm.__version__
    entry_points = metadata.distribution(DIST).entry_points
    assert [ep.value for ep in entry_points if ep.name == "aiollm"] == ["aiollm.cli:main"]


def test_version_flag_of_the_command_and_the_module() -> None:
    script = Path(sys.executable).parent / "aiollm"
    for argv in ([str(script), "--version"], [sys.executable, "-m", "aiollm", "--version"]):
        out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True)
        assert out.stdout.strip() == f"aiollm {aiollm.__version__} ({DIST})"


def test_python_dash_m_runs_the_cli() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "aiollm", "--help"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0
    assert "usage: aiollm" in out.stdout
    assert "chat" in out.stdout and "bench" in out.stdout


def test_install_hints_name_the_distribution() -> None:
    root = Path(aiollm.__file__).parent
    hints = [p for p in root.rglob("*.py") if "pip install" in p.read_text(encoding="utf-8")]
    assert hints, "expected install hints in the package"
    for path in hints:
        text = path.read_text(encoding="utf-8")
        assert "'aiollm[" not in text and "pip install aiollm " not in text, path

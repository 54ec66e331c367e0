"""examples/tools.py runs as written against the embedded emulator (every provider)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).parent.parent / "examples" / "tools.py"


def test_the_tool_calling_example_runs() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("get_weather(") == 3
    assert done.stdout.count("It is sunny in Hangzhou") == 3

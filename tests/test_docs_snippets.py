"""Every ``python`` block of the README and of ``docs/`` runs, against the emulator.

Each block runs as its own script in a fresh directory, with the environment of a running
emulator (so ``aiollm.Client()`` finds settings for every provider and needs no key). A block
preceded by ``<!-- snippet: skip (why) -->`` is not run; one preceded by
``<!-- snippet: requires some.module -->`` runs only where that module is installed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from anyio.from_thread import start_blocking_portal

from aiollm.testing import Emulator

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(
    r"^(?:<!-- snippet: (?P<marker>[^\n]*?) -->\n)?```python\n(?P<code>.*?)^```\s*$",
    re.MULTILINE | re.DOTALL,
)
MARKER = re.compile(r"skip \(.+\)|requires [\w.]+")


@dataclass
class Snippet:
    page: Path
    line: int
    code: str
    marker: str | None

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def snippets() -> list[Snippet]:
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in BLOCK.finditer(text):
            line = text.count("\n", 0, match.start("code"))
            found.append(Snippet(page, line, match["code"], match["marker"]))
    return found


ALL = snippets()


@pytest.fixture(scope="module")
def emulator_env() -> Iterator[dict[str, str]]:
    """The environment that points every provider at an emulator running in a thread."""
    with start_blocking_portal() as portal:
        with portal.wrap_async_context_manager(Emulator()) as emu:
            yield emu.env()


def test_the_readme_and_docs_have_snippets_and_only_known_markers() -> None:
    assert len([s for s in ALL if s.page.name == "README.md"]) >= 6
    for snippet in ALL:
        if snippet.marker is not None:
            assert MARKER.fullmatch(snippet.marker), f"{snippet.name}: {snippet.marker!r}"


@pytest.mark.parametrize("snippet", ALL, ids=[s.name for s in ALL])
def test_every_client_an_example_creates_is_closed(snippet: Snippet) -> None:
    code = "\n".join(line.partition("#")[0] for line in snippet.code.splitlines())
    if "Client(" in code or ".client(" in code:
        assert "async with" in code or "aclose()" in code, snippet.name


@pytest.mark.parametrize("snippet", ALL, ids=[s.name for s in ALL])
def test_snippet_runs(snippet: Snippet, emulator_env: dict[str, str], tmp_path: Path) -> None:
    marker = snippet.marker or ""
    if marker.startswith("skip"):
        pytest.skip(marker)
    if marker.startswith("requires "):
        module = marker.removeprefix("requires ")
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            pytest.skip(f"needs {module}")
    env = {**os.environ, **emulator_env}
    for key in ("AIOLLM_OTEL", "OTEL_SDK_DISABLED"):
        env.pop(key, None)
    proc = subprocess.run(
        [sys.executable, "-c", snippet.code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"{snippet.name} failed:\n{proc.stderr[-3000:]}"


def test_the_readme_links_to_files_that_exist() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(((?!https?:|#)[^)#\s]+)(?:#[^)]*)?\)", text)
    assert "docs/providers/dashscope.md" in targets and "examples/" in targets
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert not missing

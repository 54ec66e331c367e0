"""Reports: repeated runs' intervals, comparing two results, the single-file HTML report
(opened in a real headless Chromium when one is installed; CI installs it)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from aiollm.bench import run
from aiollm.bench._compare import interval
from aiollm.cli import main

pytestmark = pytest.mark.anyio

FAST = ["--emulator", "--model", "openai/m", "--first-token", "0.01", "--per-token", "0.001"]
FAST += ["--max-tokens", "6", "--no-progress"]


def test_interval_uses_student_t() -> None:
    ci = interval([10.0, 12.0, 14.0])
    assert ci["mean"] == 12.0 and ci["n"] == 3
    assert ci["ci95_low"] == pytest.approx(12.0 - 4.303 * 2.0 / 3**0.5, abs=1e-3)
    assert interval([5.0])["ci95_low"] is None


async def test_repeated_runs_give_confidence_intervals() -> None:
    result = await run(
        models=["openai/m"],
        emulator=True,
        first_token=0.005,
        per_token=0.001,
        max_tokens=4,
        requests=6,
        concurrency=2,
        runs=3,
    )
    assert [r.load["repeat"] for r in result.runs] == [0, 1, 2]
    data = result.to_json()
    assert isinstance(data, dict) and len(data["runs"]) == 3
    (group,) = data["confidence_intervals"]
    ttft = group["figures"]["median_ttft_ms"]
    assert group["runs"] == 3 and ttft["ci95_low"] <= ttft["mean"] <= ttft["ci95_high"]
    assert "95% intervals" in result.table()


def test_compare_prints_differences_and_flags_regressions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    base = {"model": "openai/m", "concurrency": 4, "request_rate": None}
    a.write_text(json.dumps({**base, "median_ttft_ms": 100.0, "request_throughput": 10.0}))
    b.write_text(json.dumps([{**base, "median_ttft_ms": 130.0, "request_throughput": 11.0}]))
    assert main(["bench", "--compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "median_ttft_ms" in out and "+30.0%" in out and "worse" in out
    assert "request_throughput" in out and "+10.0%" in out
    assert main(["bench", "--compare", str(a), str(b), "--max-regression", "20"]) == 1
    assert main(["bench", "--compare", str(a), str(b), "--max-regression", "50"]) == 0
    (tmp_path / "bad.json").write_text("nope")
    assert main(["bench", "--compare", str(a), str(tmp_path / "bad.json")]) == 2


def _html_report(tmp_path: Path) -> Path:
    out = tmp_path / "report.html"
    argv = ["bench", *FAST, "--emulator-quota", "30", "--find-max", "--slo", "ttft_p99:500"]
    argv += ["--step-duration", "0.4", "--search-start", "8", "--search-limit", "16"]
    argv += ["--repeats", "1", "--html", str(out)]
    assert main(argv) == 0
    return out


def test_html_report_is_one_offline_file(tmp_path: Path) -> None:
    text = _html_report(tmp_path).read_text()
    assert text.startswith("<!DOCTYPE html>")
    assert "http://" not in text.replace("http://127.0.0.1", "") and "https://" not in text
    assert text.count("<svg") >= 7  # the capacity curves, then 5 charts per step
    assert "Quota telemetry" in text and "capacity curve" in text and "SLO ttft_p99" in text


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    _chromium() is None and not os.environ.get("CI"), reason="needs chromium (CI installs it)"
)
def test_html_report_renders_its_charts_in_headless_chromium(tmp_path: Path) -> None:
    browser = _chromium()
    assert browser is not None, "CI must install chromium (apt-get install -y chromium)"
    report = _html_report(tmp_path)
    profile = tmp_path / "profile"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu"]
    cmd += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    cmd += ["--no-first-run", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0"]
    cmd += ["--virtual-time-budget=3000", "--dump-dom", report.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    body = re.search(r"<body[^>]*>", proc.stdout)
    assert body is not None, proc.stdout[:500]
    charts = re.search(r'data-charts="(\d+)"', body.group(0))
    errors = re.search(r'data-errors="(\d+)"', body.group(0))
    assert charts is not None and errors is not None, body.group(0)
    assert int(charts.group(1)) >= 7 and errors.group(1) == "0"
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    assert not [line for line in console if "Uncaught" in line or "Error" in line], console

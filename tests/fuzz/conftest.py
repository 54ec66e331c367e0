"""Fuzzing budget: a quick run in the normal suite; ``nox -s fuzz`` sets a long one.

``AIOLLM_FUZZ_SECONDS`` (unset: the quick run) is the whole long run's budget, shared by the
fuzz tests; each then repeats its hypothesis search until its share is spent. The number of
inputs tried per target is printed at the end of the run.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, settings

LONG_SECONDS = float(os.environ.get("AIOLLM_FUZZ_SECONDS") or 0)
TRIED: Counter[str] = Counter()
_SHARE = [0.0]

QUICK = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
"""The settings of one hypothesis search (in the long run, of each repeated search)."""
if LONG_SECONDS:
    QUICK = settings(QUICK, max_examples=300, database=None)


def spend(search: Callable[[], None]) -> None:
    """Run a hypothesis search once (quick run), or again and again for its share of the budget."""
    search()
    if LONG_SECONDS:
        deadline = time.monotonic() + _SHARE[0]
        while time.monotonic() < deadline:
            search()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    fuzz = [item for item in items if item.get_closest_marker("fuzz_budget")]
    if fuzz:
        _SHARE[0] = LONG_SECONDS / len(fuzz)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fuzz_budget: a fuzz test that takes a share of the budget")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TRIED:
        counts = ", ".join(f"{name} {n:,}" for name, n in sorted(TRIED.items()))
        terminalreporter.write_line(f"fuzz: {sum(TRIED.values()):,} inputs tried ({counts})")

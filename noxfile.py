"""Developer sessions: ``nox -s tests``, ``lint``, ``typecheck``, ``demo``, ``bench``."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite (warnings are errors)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the package, tests, benchmarks and examples."""
    session.install("ruff")
    session.run("ruff", "check", "aiollm", "tests", "benchmarks", "examples", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install("-e", ".[test]", "mypy")
    session.run("mypy", "--strict", "aiollm")


@nox.session
def demo(session: nox.Session) -> None:
    """Stream a reply from every provider of the embedded emulator (no keys, no network)."""
    session.install("-e", ".")
    session.run("aiollm", "demo", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """The library's own performance figures (each a ratio against a baseline in the same run)."""
    session.install("-e", ".")
    for script in ("bench_framing.py",):
        session.run("python", f"benchmarks/{script}", *session.posargs)

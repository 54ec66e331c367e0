"""Developer sessions: ``tests``, ``lint``, ``typecheck``, ``docs``, ``demo``, ``bench``, ``soak``, ``bench_sdks``, ``external``, ``compat``, ``fuzz``, ``shared_rate``."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite (warnings are errors)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python=["3.10", "3.11", "3.12", "3.13"])
def compat(session: nox.Session) -> None:
    """The test suite on every supported Python this machine has (missing ones are skipped)."""
    session.install("-e", ".[test]")
    session.run("pytest", "-q", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, and the import-linter layer contracts (pyproject.toml)."""
    session.install("ruff", "import-linter")
    paths = ("aiollm", "tests", "benchmarks", "examples", "noxfile.py")
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)
    session.run("lint-imports")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package, and on tests/types_public_api.py (the public API's types)."""
    session.install("-e", ".[test]", "mypy")
    session.run("mypy", "--strict", "aiollm", "tests/types_public_api.py")


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site (mkdocs-material; the API reference from the docstrings) into site/.

    Built strictly: any warning (a broken link, a docstring mkdocstrings cannot read) fails it.
    """
    session.install("-e", ".", "mkdocs-material", "mkdocstrings[python]")
    session.run("mkdocs", "build", "--strict", env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session
def shared_rate(session: nox.Session) -> None:
    """Eight worker processes sharing requests_per_second=20 through Redis for 20 s (the suite
    runs the same test for 4 s); needs redis-server."""
    session.install("-e", ".[test]")
    session.run(
        "pytest",
        "-s",
        "tests/test_shared_workers.py::test_eight_workers_share_requests_per_second",
        *session.posargs,
        env={"AIOLLM_SHARED_RATE_SECONDS": "20"},
    )


@nox.session
def fuzz(session: nox.Session) -> None:
    """The fuzz tests (tests/fuzz) for a long run: ``nox -s fuzz`` (600 s), ``nox -s fuzz -- 120``.

    The budget in seconds is shared by the fuzz tests; the number of inputs tried is printed.
    """
    seconds = session.posargs[0] if session.posargs else "600"
    session.install("-e", ".[test]")
    session.run(
        "pytest", "tests/fuzz", "-q", "-p", "no:cacheprovider", env={"AIOLLM_FUZZ_SECONDS": seconds}
    )


@nox.session
def demo(session: nox.Session) -> None:
    """Stream a reply from every provider of the embedded emulator (no keys, no network)."""
    session.install("-e", ".")
    session.run("aiollm", "demo", *session.posargs)


BENCHMARKS = (
    "bench_framing.py",
    "bench_stream_throughput.py",
    "bench_request_overhead.py",
    "bench_concurrent.py",
    "bench_import.py",
    "bench_layers.py",
    "bench_otel.py",
    "bench_shared_limits.py",
    "bench_emulator.py",
)


@nox.session
def bench(session: nox.Session) -> None:
    """The library's own performance figures (each a ratio against a baseline in the same run).

    ``nox -s bench`` runs every script in ``benchmarks/``; ``nox -s bench -- bench_concurrent.py
    --runs 5`` runs one script with its own options.
    """
    session.install("-e", ".[otel,redis]", "opentelemetry-sdk")
    if session.posargs and session.posargs[0].endswith(".py"):
        script, *args = session.posargs
        session.run("python", f"benchmarks/{script}", *args)
        return
    for script in BENCHMARKS:
        session.run("python", f"benchmarks/{script}", *session.posargs)


@nox.session
def soak(session: nox.Session) -> None:
    """Thousands of calls per provider against the emulator with injected faults (not in CI).

    ``nox -s soak -- --calls 500 --fault-rate 0.05`` changes the load; see benchmarks/soak.py.
    """
    session.install("-e", ".")
    session.run("python", "benchmarks/soak.py", *session.posargs)


@nox.session
def bench_sdks(session: nox.Session) -> None:
    """aiollm vs the official dashscope, qianfan and openai SDKs on the same local workloads."""
    session.install("-e", ".", "openai", "dashscope", "qianfan")
    session.run("python", "benchmarks/bench_sdks.py", *session.posargs)


@nox.session
def external(session: nox.Session) -> None:
    """The ``openai`` provider end to end against the LiteLLM proxy's mock models (offline, CPU)."""
    session.install("-e", ".[test]", "litellm[proxy]==1.106.2")
    session.run(
        "pytest", "tests/test_openai_external.py", *session.posargs, env={"AIOLLM_EXTERNAL": "1"}
    )

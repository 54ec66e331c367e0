"""Other load generators against the cadence server: ``aiollm bench``, AIPerf and guidellm.

Each runs as its own command (AIPerf and guidellm from their own virtualenvs under a cache
directory, installed from PyPI on first use, never in this environment), at one concurrency,
and each one's own result file is read: its TTFT, ITL and end-to-end median and p99. The CPU
time of the command and its children (``RUSAGE_CHILDREN``) is measured around it. They need a
tokenizer: a small word-level one is written into a local Hugging Face cache, and
``HF_HUB_OFFLINE=1`` / ``TRANSFORMERS_OFFLINE=1`` keep them from downloading anything.

ITL is each tool's own definition: ``aiollm bench`` and AIPerf (``inter_chunk_latency``) report
every gap between two tokens; guidellm's ``inter_token_latency_ms`` is per request, the mean gap
from its first token to its last. The server truth is computed the same way for each.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiollm

PACKAGES = {"aiperf": "aiperf", "guidellm": "guidellm"}
TOKENIZER = "aiollm/cadence-tokenizer"
_REVISION = "0" * 40

_MAKE_TOKENIZER = """
import json, sys
from pathlib import Path
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
words = "[UNK] [PAD] <s> </s> tok the of and to a in is you that it he was for on are as with his \
they i at be this have from or one had by word but not what all were we when your can said there \
use an each which she do how their if will up other about out many then them these so some her \
would make like him into time has look two more write go see number no way could people my than \
first water been call who oil its now find long down day did get come made may part".split()
tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(dict.fromkeys(words))}, "[UNK]"))
tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
tok.decoder = decoders.WordPiece()  # words joined by spaces
tok.save(str(out / "tokenizer.json"))
special = {"unk_token": "[UNK]", "pad_token": "[PAD]", "bos_token": "<s>", "eos_token": "</s>"}
config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 1000000, **special,
          "chat_template": "{% for m in messages %}{{ m['content'] }} {% endfor %}"}
(out / "tokenizer_config.json").write_text(json.dumps(config))
(out / "special_tokens_map.json").write_text(json.dumps(special))
(out / "config.json").write_text(json.dumps({"model_type": "gpt2", "vocab_size": len(words)}))
"""


@dataclass
class ToolRun:
    """One tool's figures (ms) at one level, from its own result file, and its CPU seconds."""

    tool: str
    concurrency: int
    ttft: tuple[float, float]
    itl: tuple[float, float]
    e2el: tuple[float, float]
    itl_kind: str  # "gap": every gap; "request": each request's mean gap
    tokens: int
    cpu: float
    warmup: int  # requests the tool did not count (the server's first ones)


class Tools:
    """The tools' virtualenvs and tokenizer under ``cache``; runs them against ``url``."""

    def __init__(self, cache: Path, url: str, workdir: Path) -> None:
        self.cache = cache
        self.url = url
        self.workdir = workdir
        self.hub = cache / "hf" / "hub"

    def env(self, tool: str) -> dict[str, str]:
        """The environment of a tool's process: offline, with the local tokenizer cache."""
        env = dict(os.environ)
        if tool == "aiollm":  # the aiollm this script measures, pointed at the server
            tree = str(Path(aiollm.__file__).resolve().parent.parent)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [tree, env.get("PYTHONPATH")]))
            env.update(OPENAI_BASE_URL=self.url + "/v1", OPENAI_API_KEY="k")
        env.update(
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            HF_HUB_CACHE=str(self.hub),
            HF_HUB_DISABLE_TELEMETRY="1",
            DO_NOT_TRACK="1",
            NO_COLOR="1",
        )
        return env

    def bin(self, tool: str) -> Path:
        """The tool's virtualenv ``bin`` directory (made and installed on first use)."""
        venv = self.cache / tool
        exe = venv / "bin" / tool
        if not exe.exists():
            print(f"installing {PACKAGES[tool]} into {venv} (once) ...", flush=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(venv / "bin" / "pip"), "install", "-q", PACKAGES[tool]], check=True)
        return venv / "bin"

    def version(self, tool: str) -> str:
        """The installed version of ``tool``."""
        code = f"import importlib.metadata as m; print(m.version({PACKAGES[tool]!r}))"
        out = subprocess.run(
            [str(self.bin(tool) / "python"), "-c", code], capture_output=True, text=True
        )
        return out.stdout.strip() or "?"

    def tokenizer(self, python: Path) -> None:
        """Write the word-level tokenizer into the local cache as ``aiollm/cadence-tokenizer``."""
        repo = self.hub / ("models--" + TOKENIZER.replace("/", "--"))
        snapshot = repo / "snapshots" / _REVISION
        if (snapshot / "tokenizer.json").exists():
            return
        subprocess.run([str(python), "-c", _MAKE_TOKENIZER, str(snapshot)], check=True)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(_REVISION)

    # -- running ---------------------------------------------------------------------------
    def run(self, tool: str, concurrency: int, requests: int, workers: int = 0) -> ToolRun:
        """Run ``tool`` at ``concurrency`` for ``requests`` requests; its own figures.

        ``workers``: ``aiollm bench --workers`` (0: its default)."""
        out = self.workdir / f"{tool}-{concurrency}"
        out.mkdir(parents=True, exist_ok=True)
        warmup = concurrency  # one request per connection first, where the tool has a warm-up
        if tool == "aiollm":
            cmd = self._aiollm(out, concurrency, requests, warmup, workers)
        elif tool == "aiperf":
            cmd = self._aiperf(out, concurrency, requests, warmup)
        else:
            cmd = self._guidellm(out, concurrency, requests)
            warmup = 0  # its warm-up is a time window, not whole requests: none
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run(cmd, env=self.env(tool), capture_output=True, text=True, cwd=out)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        (out / "output.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise RuntimeError(f"{tool} failed ({proc.returncode}):\n{textwrap.indent(tail, '  ')}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        read = {"aiollm": _read_aiollm, "aiperf": _read_aiperf, "guidellm": _read_guidellm}
        figures = read[tool](out)
        return ToolRun(tool=tool, concurrency=concurrency, cpu=cpu, warmup=warmup, **figures)

    def _aiollm(
        self, out: Path, concurrency: int, requests: int, warmup: int, workers: int
    ) -> list[str]:
        cmd = [sys.executable, "-m", "aiollm", "bench", "--model", "openai/cadence"]
        cmd += ["--concurrency", str(concurrency), "--requests", str(requests)]
        cmd += ["--warmup", str(warmup), "--max-tokens", "64", "--no-progress"]
        cmd += ["--output", str(out / "result.json")]
        if workers:
            cmd += ["--workers", str(workers)]
        return cmd

    def _aiperf(self, out: Path, concurrency: int, requests: int, warmup: int) -> list[str]:
        bin_ = self.bin("aiperf")
        self.tokenizer(bin_ / "python")
        return [
            str(bin_ / "aiperf"), "profile", "--model", "cadence", "--url", self.url,
            "--endpoint-type", "chat", "--streaming", "--tokenizer", TOKENIZER,
            "--concurrency", str(concurrency), "--request-count", str(requests),
            "--warmup-request-count", str(warmup), "--isl", "32", "--osl", "64",
            "--artifact-dir", str(out / "artifacts"), "--ui", "none", "--no-gpu-telemetry",
        ]  # fmt: skip

    def _guidellm(self, out: Path, concurrency: int, requests: int) -> list[str]:
        bin_ = self.bin("guidellm")
        self.tokenizer(bin_ / "python")
        backend = {"kind": "openai_http", "target": self.url, "model": "cadence", "http2": False}
        spec = {
            "backend": backend,
            "profile": {"kind": "concurrent", "streams": concurrency},
            "constraints": [{"kind": "max_requests", "count": requests}],
            "tokenizer": {"kind": "huggingface_auto", "model": TOKENIZER},
            "data": [{"kind": "synthetic_text", "prompt_tokens": 32, "output_tokens": 64}],
            "outputs": [{"kind": "json", "path": str(out / "benchmarks.json")}],
        }
        scenario = out / "scenario.json"
        scenario.write_text(json.dumps({"metadata": {"name": "cadence"}, "spec": spec}))
        return [str(bin_ / "guidellm"), "run", "--config", str(scenario), "--disable-console"]


def _read_aiollm(out: Path) -> dict[str, Any]:
    run = json.loads((out / "result.json").read_text())  # one run: one flat dict
    pair = lambda m: (run[f"median_{m}_ms"], run[f"p99_{m}_ms"])  # noqa: E731
    return {
        "ttft": pair("ttft"),
        "itl": pair("itl"),
        "e2el": pair("e2el"),
        "itl_kind": "gap",
        "tokens": int(run["total_output_tokens"]),
    }


def _read_aiperf(out: Path) -> dict[str, Any]:
    data = json.loads((out / "artifacts" / "profile_export_aiperf.json").read_text())
    pair = lambda m: (data[m]["p50"], data[m]["p99"])  # noqa: E731
    return {
        "ttft": pair("time_to_first_token"),
        "itl": pair("inter_chunk_latency"),
        "e2el": pair("request_latency"),
        "itl_kind": "gap",
        "tokens": int(data["total_output_tokens"]["avg"]),
    }


def _read_guidellm(out: Path) -> dict[str, Any]:
    (bench,) = json.loads((out / "benchmarks.json").read_text())["benchmarks"]
    metrics = bench["metrics"]

    def pair(name: str, scale: float = 1.0) -> tuple[float, float]:
        stats = metrics[name]["successful"]
        return (stats["median"] * scale, stats["percentiles"]["p99"] * scale)

    return {
        "ttft": pair("time_to_first_token_ms"),
        "itl": pair("inter_token_latency_ms"),
        "e2el": pair("request_latency", 1000.0),  # seconds
        "itl_kind": "request",
        "tokens": int(metrics["output_token_count"]["successful"]["total_sum"]),
    }

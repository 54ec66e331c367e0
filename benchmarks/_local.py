"""Shared pieces of the benchmarks: wire bodies, the local server process, bare readers, output.

The local server (``benchmarks/local_server.py``) runs in its own process, so the client under
test has its event loop (and, on a 2-core machine, a core) to itself. It serves pre-built
bodies — OpenAI ``chat.completion.chunk`` frames, Qianfan sentence frames, DashScope
incremental ``id:/event:/:HTTP_STATUS/data:`` events — written in 256 KiB writes, so the server
is never the bottleneck. The model name says how many frames: ``frames-200000``.

The baseline ("bare") readers are what a hand-written client does at least: aiohttp
``iter_any()``, split on blank lines, and one ``msgspec`` decode per frame into a Struct with
only the fields read; they read to the end of the body, so their connection is kept.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

HERE = Path(__file__).resolve().parent
if importlib.util.find_spec("aiollm") is None:  # not installed and not on PYTHONPATH: this checkout
    sys.path.insert(0, str(HERE.parent))

TOKENS = [
    "tok",
    " the",
    " quick",
    " brown",
    " fox",
    "ing",
    ",",
    " 你好",
    " jumps",
    "\n",
    " über",
    " 42",
    '"',
    " lazy",
    " dog",
    ".",
]

API_KEY = "bench-key"
ACCESS_TOKEN = "bench-access-token"
CHAT_PATH = "/v1/chat/completions"
QIANFAN_PATH = "/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/"
DASHSCOPE_PATH = "/api/v1/services/aigc/text-generation/generation"


def token(i: int) -> str:
    """The text of frame ``i`` (16 varied tokens, ASCII, CJK, escapes)."""
    return TOKENS[i % len(TOKENS)]


def frames_of(name: str | None, default: int = 16) -> int:
    """``frames-2000`` → 2000 (the workload size travels in the model name)."""
    if name and name.startswith("frames-"):
        try:
            return int(name[7:])
        except ValueError:
            pass
    return default


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def openai_body(frames: int) -> bytes:
    """An OpenAI stream: ``frames`` content chunks, a finish chunk, a usage chunk, ``[DONE]``."""
    head = '{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[{"index":0,"delta":{"content":'
    tail = '},"finish_reason":null}]}'
    parts = [f"data: {head}{_dumps(token(i))}{tail}\n\n" for i in range(frames)]
    parts.append(
        'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,'
        '"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    )
    usage = {"prompt_tokens": 8, "completion_tokens": frames, "total_tokens": frames + 8}
    parts.append(
        'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,'
        f'"model":"m","choices":[],"usage":{_dumps(usage)}}}\n\n'
    )
    parts.append("data: [DONE]\n\n")
    return "".join(parts).encode()


def qianfan_body(frames: int) -> bytes:
    """A Qianfan stream: ``frames`` sentence frames, the last with ``is_end: true``."""
    parts = []
    for i in range(frames):
        end = "true" if i == frames - 1 else "false"
        parts.append(
            'data: {"id":"as-bench","object":"chat.completion","created":1680166793,'
            f'"sentence_id":{i},"is_end":{end},"is_truncated":false,"result":{_dumps(token(i))},'
            '"need_clear_history":false,"finish_reason":"normal","usage":{"prompt_tokens":8,'
            f'"completion_tokens":{i + 1},"total_tokens":{i + 9}}}}}\n\n'
        )
    return "".join(parts).encode()


def dashscope_body(frames: int, result_format: str = "text") -> bytes:
    """A DashScope incremental stream (``text`` or ``message`` result format)."""
    parts = []
    for i in range(frames):
        finish = "stop" if i == frames - 1 else "null"
        text = _dumps(token(i))
        if result_format == "message":
            output = (
                f'{{"choices":[{{"finish_reason":"{finish}","message":'
                f'{{"role":"assistant","content":{text}}}}}]}}'
            )
        else:
            output = f'{{"finish_reason":"{finish}","text":{text}}}'
        parts.append(
            f"id:{i + 1}\nevent:result\n:HTTP_STATUS/200\ndata:"
            f'{{"output":{output},"usage":{{"total_tokens":{i + 9},"input_tokens":8,'
            f'"output_tokens":{i + 1}}},"request_id":"bench-{frames}"}}\n\n'
        )
    return "".join(parts).encode()


# -- the server process ---------------------------------------------------------------------
@contextmanager
def local_server() -> Iterator[str]:
    """Start ``local_server.py`` in a subprocess; yields its origin, e.g. ``http://127.0.0.1:PORT``."""
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "local_server.py")],
        stdout=subprocess.PIPE,
        stdin=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"the local server did not start: {line!r}")
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        if proc.stdin is not None:
            proc.stdin.close()  # the server exits when its stdin closes
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait(5)


def aiollm_settings(origin: str) -> dict[str, dict[str, Any]]:
    """``aiollm.Client(providers=...)`` pointed at the local server."""
    return {
        "openai": {"base_url": f"{origin}/v1", "api_key": API_KEY},
        "qianfan": {"access_token": ACCESS_TOKEN, "base_url": origin},
        "dashscope": {"api_key": API_KEY, "base_url": origin},
    }


MESSAGES = [{"role": "user", "content": "hello"}]


# -- bare readers: aiohttp iter_any + split + msgspec ----------------------------------------
class _Delta(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    delta: _Delta | None = None


class _Chunk(msgspec.Struct):
    choices: list[_Choice] = []


class _Sentence(msgspec.Struct):
    result: str = ""
    is_end: bool = False


class _DSOutput(msgspec.Struct):
    text: str | None = None


class _DSFrame(msgspec.Struct):
    output: _DSOutput | None = None


_decode_chunk = msgspec.json.Decoder(_Chunk).decode
_decode_sentence = msgspec.json.Decoder(_Sentence).decode
_decode_ds = msgspec.json.Decoder(_DSFrame).decode


def bare_request(origin: str, fmt: str, frames: int) -> tuple[str, dict[str, str], bytes]:
    """URL, headers and body of one streamed request in format ``fmt``."""
    model = f"frames-{frames}"
    if fmt == "openai":
        body = {"model": model, "messages": MESSAGES, "stream": True}
        return origin + CHAT_PATH, {"Authorization": f"Bearer {API_KEY}"}, json.dumps(body).encode()
    if fmt == "qianfan":
        url = f"{origin}{QIANFAN_PATH}{model}?access_token={ACCESS_TOKEN}"
        return url, {}, json.dumps({"messages": MESSAGES, "stream": True}).encode()
    body = {
        "model": model,
        "input": {"messages": MESSAGES},
        "parameters": {"incremental_output": True},
    }
    headers = {"Authorization": f"Bearer {API_KEY}", "X-DashScope-SSE": "enable"}
    return origin + DASHSCOPE_PATH, headers, json.dumps(body).encode()


async def bare_stream(session: Any, origin: str, fmt: str, frames: int) -> int:
    """Stream one response the minimal way; returns the number of text deltas."""
    url, headers, body = bare_request(origin, fmt, frames)
    headers = {**headers, "Content-Type": "application/json"}
    deltas = 0
    rest = b""
    done = False
    async with session.post(url, data=body, headers=headers) as resp:
        resp.raise_for_status()
        # Read to the end of the body (past the last frame too), so that aiohttp keeps the
        # connection for the next request.
        async for chunk in resp.content.iter_any():
            if done:
                continue
            parts = (rest + chunk).split(b"\n\n")
            rest = parts.pop()
            if fmt == "openai":
                for frame in parts:
                    data = frame[6:]
                    if data == b"[DONE]":
                        done = True
                        break
                    choices = _decode_chunk(data).choices
                    if choices:
                        delta = choices[0].delta
                        if delta is not None and delta.content:
                            deltas += 1
            elif fmt == "qianfan":
                for frame in parts:
                    sentence = _decode_sentence(frame[6:])
                    if sentence.result:
                        deltas += 1
                    if sentence.is_end:
                        done = True
                        break
            else:
                for frame in parts:
                    data = frame[frame.index(b"\ndata:") + 6 :]
                    output = _decode_ds(data).output
                    if output is not None and output.text:
                        deltas += 1
    return deltas


async def aiollm_stream(client: Any, fmt: str, frames: int) -> int:
    """Stream one response through aiollm; returns the number of text deltas."""
    from aiollm import TextDelta

    deltas = 0
    async with client.stream(f"{fmt}/frames-{frames}", MESSAGES) as stream:
        async for event in stream:
            if type(event) is TextDelta:
                deltas += 1
    return deltas


# -- measuring and printing ------------------------------------------------------------------
async def timed(fn: Callable[[], Awaitable[int]]) -> tuple[float, int]:
    """Seconds ``fn`` took, and what it returned."""
    t0 = time.perf_counter()
    n = await fn()
    return time.perf_counter() - t0, n


def best(times: list[float]) -> float:
    """The fastest run (the least disturbed by other load on the machine)."""
    return min(times)


def median(times: list[float]) -> float:
    """The median run."""
    return statistics.median(times)


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo (or the platform's guess)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_line() -> str:
    """nproc, CPU, Python, load average: printed at the top of every benchmark."""
    try:
        load = "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:
        load = "load n/a"
    spec = importlib.util.find_spec("aiollm")
    tree = Path(spec.origin).parent.parent if spec and spec.origin else "?"
    return (
        f"machine: {os.cpu_count()} CPUs, {cpu_model()}, Python {platform.python_version()} "
        f"({platform.python_implementation()}), {load}; aiollm from {tree}"
    )


def verdict(ok: bool) -> str:
    """``met`` / ``MISSED`` for a target line."""
    return "met" if ok else "MISSED"


def instructions(code: str, args: list[str], tree: Path | None) -> int:
    """User-space instructions of ``python -c code *args``, counted by valgrind's callgrind:
    ``tree`` on ``PYTHONPATH`` (else the installed ``aiollm``), ``/`` as working directory (so
    no checkout comes first on ``sys.path``), ``PYTHONHASHSEED`` fixed."""
    env = dict(os.environ, PYTHONHASHSEED="0")
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    valgrind = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    done = subprocess.run(
        [*valgrind, sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd="/",
    )
    match = re.search(r"Collected : (\d+)", done.stderr)
    assert match, done.stderr[-500:]
    return int(match.group(1))

"""A cadence server for ``bench_accuracy.py``: an OpenAI-compatible stream on a fixed timetable.

``POST /v1/chat/completions`` (streamed) answers at once with the response head, then sends
the first token ``FIRST`` seconds after the request arrived and one every ``STEP`` seconds,
``TOKENS`` tokens, the last one in the same write as a finish frame with usage and ``[DONE]``
(chunked, kept alive), so that the reply ends at its last token for every client. Each
request's log: when its last byte was read (``received``), when each token frame was handed to
the socket (``sent``), and the end of the reply (``end``, the last of them), all ``time.perf_counter``
(CLOCK_MONOTONIC, the same clock in every process on Linux). ``GET /log`` returns the log
since the last call and clears it; ``GET /v1/models`` lists the one model; ``stream: false``
gets a whole completion at once (not logged).

It is a bare asyncio protocol — one timer callback per frame, frames encoded once — so that it
costs little: on a 2-core machine it shares the CPU with the client under test.

    python benchmarks/cadence_server.py PORT_FILE   # writes its port there, serves until killed
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

FIRST = 0.200
STEP = 0.020
TOKENS = 64
MODEL = "cadence"
LOG: list[dict[str, Any]] = []


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _frame(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


TOKEN_FRAME = _chunk(
    _frame(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "model": MODEL,
            "choices": [{"index": 0, "delta": {"content": " tok"}, "finish_reason": None}],
        }
    )
)
USAGE = {"prompt_tokens": 8, "completion_tokens": TOKENS, "total_tokens": TOKENS + 8}
LAST_FRAMES = (
    _chunk(
        _frame(
            {
                "id": "c",
                "object": "chat.completion.chunk",
                "model": MODEL,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                "usage": USAGE,
            }
        )
        + b"data: [DONE]\n\n"
    )
    + b"0\r\n\r\n"
)
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


def _json_response(obj: Any, status: str = "200 OK") -> bytes:
    body = json.dumps(obj).encode()
    return b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        status.encode(),
        len(body),
        body,
    )


class CadenceServer(asyncio.Protocol):
    """One connection: HTTP/1.1 requests one after another, each streamed on the timetable."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        received = time.perf_counter()
        self.buffer += data
        while self.timer is None:  # one request at a time per connection
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = self.buffer[:end].decode("latin-1").split("\r\n")
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            method, path = lines[0].split(" ")[:2]
            self.handle(method, path, body, received)

    def handle(self, method: str, path: str, body: bytes, received: float) -> None:
        assert self.transport is not None
        if method == "GET" and path == "/log":
            self.transport.write(_json_response(LOG))
            LOG.clear()
        elif method == "GET" and path.startswith("/v1/models"):
            self.transport.write(
                _json_response({"object": "list", "data": [{"id": MODEL, "object": "model"}]})
            )
        elif method == "POST" and path.startswith("/v1/chat/completions"):
            request = json.loads(body)
            if not request.get("stream"):
                message = {"role": "assistant", "content": " tok" * TOKENS}
                choice = {"index": 0, "message": message, "finish_reason": "stop"}
                self.transport.write(_json_response({"id": "c", "choices": [choice]}))
                return
            content = request["messages"][-1]["content"]
            entry = {"key": content if isinstance(content, str) else json.dumps(content)}
            entry.update(received=received, sent=[])
            self.transport.write(STREAM_HEAD)
            loop = asyncio.get_running_loop()
            # perf_counter and the loop's clock are both CLOCK_MONOTONIC on Linux
            due = loop.time() - time.perf_counter() + received + FIRST
            self.timer = loop.call_at(due, self.send, entry, due)
        elif method == "GET":
            self.transport.write(_json_response({}))
        else:
            self.transport.write(_json_response({"error": "not found"}, "404 Not Found"))

    def send(self, entry: dict[str, Any], due: float) -> None:
        if self.transport is None:
            return
        sent: list[float] = entry["sent"]
        if len(sent) < TOKENS - 1:
            self.transport.write(TOKEN_FRAME)
            sent.append(time.perf_counter())
            self.timer = asyncio.get_running_loop().call_at(
                due + STEP, self.send, entry, due + STEP
            )
            return
        self.transport.write(TOKEN_FRAME + LAST_FRAMES)  # the end comes with the last token
        sent.append(time.perf_counter())
        entry["end"] = sent[-1]
        LOG.append(entry)
        self.timer = None
        if self.buffer:  # a request that arrived meanwhile (pipelined)
            self.data_received(b"")


async def main(port_file: str) -> None:
    """Serve on a free loopback port; write the port to ``port_file``."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(CadenceServer, "127.0.0.1", 0, backlog=1024)
    Path(port_file).write_text(str(server.sockets[0].getsockname()[1]))
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))

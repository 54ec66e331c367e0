"""The event-stream rules hold through the Stream: real bodies over loopback, every legal shape.

A local aiohttp server (127.0.0.1) serves OpenAI-, Qianfan- and DashScope-format streams written
as the WHATWG rules allow: pretty-printed JSON over several ``data:`` lines, JSON split over two
``data:`` lines, CR and CRLF line ends, comments and unknown fields between data lines,
``event:``/``id:``/``retry:`` lines, a BOM, and frames with no blank line between them; each body
is written whole, a byte at a time and 7 bytes at a time. The text must be exact every time.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

import aiollm
from aiollm import Client, Finish, TextDelta

pytestmark = pytest.mark.anyio

TOKENS = ["Hel", "lo", ", 世界", "! ", "\n", "“quoted”", " end"]
TEXT = "".join(TOKENS)


# -- frames of each format --------------------------------------------------------------------
def openai_frames() -> list[Any]:
    frames: list[Any] = [
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": None}],
        }
        for t in TOKENS
    ]
    frames.append({"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    frames.append({"id": "c1", "choices": [], "usage": {"prompt_tokens": 1, "total_tokens": 8}})
    return [*frames, "[DONE]"]


def qianfan_frames() -> list[Any]:
    return [
        {"id": "as-1", "sentence_id": i, "is_end": i == len(TOKENS) - 1, "result": t}
        for i, t in enumerate(TOKENS)
    ]


def dashscope_frames() -> list[Any]:
    frames: list[Any] = [
        {"output": {"text": t, "finish_reason": "null"}, "request_id": "r-1"} for t in TOKENS
    ]
    usage = {"input_tokens": 1, "output_tokens": 7, "total_tokens": 8}
    frames.append({"output": {"text": "", "finish_reason": "stop"}, "usage": usage})
    return frames


FRAMES: dict[str, Callable[[], list[Any]]] = {
    "openai": openai_frames,
    "qianfan": qianfan_frames,
    "dashscope": dashscope_frames,
}
EVENT_TYPE = {"openai": "message", "qianfan": "message", "dashscope": "result"}


# -- the ways to write them -------------------------------------------------------------------
def data_lines(text: str) -> str:
    return "".join(f"data: {line}\n" for line in text.split("\n"))


def compact(frame: Any) -> str:
    return frame if isinstance(frame, str) else json.dumps(frame, ensure_ascii=False)


def pretty(fmt: str, frames: list[Any]) -> str:
    # One field value over several data: lines: joined with LF, it is the same JSON.
    return "".join(
        data_lines(f if isinstance(f, str) else json.dumps(f, ensure_ascii=False, indent=2)) + "\n"
        for f in frames
    )


def split_in_two(fmt: str, frames: list[Any]) -> str:
    out = []
    for f in frames:
        text = compact(f)
        cut = text.find(', "')  # between two members: the LF that joins the lines is whitespace
        if cut < 0:
            out.append(f"data: {text}\n\n")
        else:
            out.append(f"data: {text[: cut + 1]}\ndata: {text[cut + 1 :]}\n\n")
    return "".join(out)


def with_comments_and_unknown_fields(fmt: str, frames: list[Any]) -> str:
    out = []
    for f in frames:
        text = compact(f)
        cut = text.find(', "')
        if cut < 0:
            out.append(f": keep-alive\ndata: {text}\nfoo: bar\n\n")
        else:
            head, tail = text[: cut + 1], text[cut + 1 :]
            out.append(f"data: {head}\n: a comment\nunknown-field: x\nnocolon\ndata: {tail}\n\n")
    return "".join(out)


def with_event_id_retry(fmt: str, frames: list[Any]) -> str:
    kind = EVENT_TYPE[fmt]
    status = ":HTTP_STATUS/200\n" if fmt == "dashscope" else ""
    return "".join(
        f"id: {i + 1}\nevent: {kind}\nretry: 3000\n{status}data: {compact(f)}\n\n"
        for i, f in enumerate(frames)
    )


def crlf(fmt: str, frames: list[Any]) -> str:
    return pretty(fmt, frames).replace("\n", "\r\n")


def cr(fmt: str, frames: list[Any]) -> str:
    return split_in_two(fmt, frames).replace("\n", "\r")


def bom(fmt: str, frames: list[Any]) -> str:
    return "\ufeff" + with_event_id_retry(fmt, frames)


def no_blank_lines(fmt: str, frames: list[Any]) -> str:
    return "".join(f"data: {compact(f)}\n" for f in frames)


SHAPES: dict[str, Callable[[str, list[Any]], str]] = {
    "pretty": pretty,
    "split_in_two": split_in_two,
    "comments_unknown_fields": with_comments_and_unknown_fields,
    "event_id_retry": with_event_id_retry,
    "crlf": crlf,
    "cr": cr,
    "bom": bom,
    "no_blank_lines": no_blank_lines,
}
CHUNKS = [0, 1, 7]  # 0: the whole body in one write


# -- the server -------------------------------------------------------------------------------
Body = tuple[bytes, int]


def make_app(bodies: dict[str, Body]) -> web.Application:
    async def serve(request: web.Request, key: str) -> web.StreamResponse:
        body, chunk = bodies[key]
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        step = chunk or len(body)
        for i in range(0, len(body), step):
            await resp.write(body[i : i + step])
        await resp.write_eof()
        return resp

    async def openai(request: web.Request) -> web.StreamResponse:
        return await serve(request, (await request.json())["model"])

    async def qianfan(request: web.Request) -> web.StreamResponse:
        return await serve(request, request.match_info["model"])

    async def dashscope(request: web.Request) -> web.StreamResponse:
        return await serve(request, (await request.json())["model"])

    app = web.Application()
    app.router.add_post("/v1/chat/completions", openai)
    app.router.add_post("/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/{model}", qianfan)
    app.router.add_post("/api/v1/services/aigc/text-generation/generation", dashscope)
    return app


BODIES: dict[str, Body] = {}
CASES = [(fmt, shape, chunk) for fmt in FRAMES for shape in SHAPES for chunk in CHUNKS]
for _fmt, _shape, _chunk in CASES:
    _body = SHAPES[_shape](_fmt, FRAMES[_fmt]()).encode()
    BODIES[f"{_fmt}-{_shape}-{_chunk}"] = (_body, _chunk)


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def client() -> AsyncIterator[Client]:
    runner = web.AppRunner(make_app(BODIES))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    origin = f"http://127.0.0.1:{port}"
    providers = {
        "openai": {"base_url": origin + "/v1", "api_key": "k"},
        "qianfan": {"base_url": origin, "access_token": "t"},
        "dashscope": {"base_url": origin, "api_key": "k"},
    }
    try:
        async with Client(providers=providers, env={}, max_retries=0) as c:
            yield c
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(("fmt", "shape", "chunk"), CASES)
async def test_text_is_exact_through_the_stream(
    client: Client, fmt: str, shape: str, chunk: int
) -> None:
    model = f"{fmt}/{fmt}-{shape}-{chunk}"
    async with client.stream(model, [{"role": "user", "content": "hi"}]) as stream:
        events = [event async for event in stream]
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == TEXT
    assert events[-1] == Finish("stop")
    completion = stream.completion
    assert completion.text == TEXT and completion.finish_reason == "stop"
    if fmt != "qianfan":
        assert completion.usage is not None and completion.usage.total_tokens == 8
    assert [type(e) for e in events].count(aiollm.Finish) == 1

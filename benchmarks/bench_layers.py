"""Where a streamed frame's time goes, layer by layer, per provider format (microseconds/frame).

Sans-IO layers are timed on the pre-built bodies cut into 64 KiB chunks (no network, no event
loop): the bare reader's split + msgspec decode, aiollm's ``SSEDecoder`` alone as the response
decoder builds it, and the provider's whole response decoder (sniffing, framing, mapping)
exactly as the Stream feeds it. The full ``Stream`` is then timed against the local server
(its own process), next to the bare aiohttp reader. Best of ``--runs``.

    python benchmarks/bench_layers.py [--frames 50000] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable

import aiohttp
from _local import (
    _decode_chunk,
    _decode_ds,
    _decode_sentence,
    aiollm_settings,
    aiollm_stream,
    bare_stream,
    dashscope_body,
    local_server,
    machine_line,
    openai_body,
    qianfan_body,
    timed,
)

from aiollm import Client, TextDelta
from aiollm.framing import SSEDecoder
from aiollm.providers import Call, ResponseDecoder

BODIES = {"openai": openai_body, "qianfan": qianfan_body, "dashscope": dashscope_body}


def chunked(body: bytes, size: int = 64 * 1024) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)]


def best_of(runs: int, fn: Callable[[], int]) -> tuple[float, int]:
    best = float("inf")
    n = 0
    for _ in range(runs):
        t0 = time.perf_counter()
        n = fn()
        best = min(best, time.perf_counter() - t0)
    return best, n


def bare(chunks: list[bytes], fmt: str) -> int:
    rest = b""
    n = 0
    for chunk in chunks:
        parts = (rest + chunk).split(b"\n\n")
        rest = parts.pop()
        for frame in parts:
            if fmt == "openai":
                data = frame[6:]
                if data != b"[DONE]":
                    choices = _decode_chunk(data).choices
                    if choices and choices[0].delta and choices[0].delta.content:
                        n += 1
            elif fmt == "qianfan":
                n += bool(_decode_sentence(frame[6:]).result)
            else:
                output = _decode_ds(frame[frame.index(b"\ndata:") + 6 :]).output
                n += bool(output is not None and output.text)
    return n


def response_decoder(client: Client, fmt: str) -> ResponseDecoder:
    provider = client.provider(fmt)
    call = Call(op="chat", model="m", stream=True, messages=[{"role": "user", "content": "hi"}])
    return provider.decoder(provider.prepare(call), 200, {"Content-Type": "text/event-stream"})


def framing(client: Client, fmt: str, chunks: list[bytes]) -> int:
    decoder = response_decoder(client, fmt)
    decoder.feed(chunks[0][:1])  # the response decoder builds its SSEDecoder: use the same one
    sse = decoder._sse
    assert isinstance(sse, SSEDecoder)
    return sum(len(sse.feed_raw(c)) for c in [chunks[0][1:], *chunks[1:]])


def decoder_events(client: Client, fmt: str, chunks: list[bytes]) -> tuple[int, int]:
    decoder = response_decoder(client, fmt)
    deltas = events = 0
    for chunk in chunks:  # as the Stream does, a chunk at a time
        out = decoder.feed(chunk)
        events += len(out)
        deltas += sum(type(event) is TextDelta for event in out)
    out = decoder.end()
    return deltas, events + len(out)


async def measure(
    fmt: str, frames: int, runs: int, origin: str, session: aiohttp.ClientSession, client: Client
) -> None:
    """Print one format's row."""
    chunks = chunked(BODIES[fmt](frames))
    t_bare, _ = best_of(runs, lambda: bare(chunks, fmt))
    t_frame, _ = best_of(runs, lambda: framing(client, fmt, chunks))
    t_codec, _ = best_of(runs, lambda: decoder_events(client, fmt, chunks)[0])
    deltas, events = decoder_events(client, fmt, chunks)
    assert deltas == frames, deltas
    await bare_stream(session, origin, fmt, frames)  # warm up
    await aiollm_stream(client, fmt, frames)
    e2e_bare = e2e_ours = float("inf")
    for _ in range(runs):
        e2e_bare = min(
            e2e_bare, (await timed(lambda: bare_stream(session, origin, fmt, frames)))[0]
        )
        e2e_ours = min(e2e_ours, (await timed(lambda: aiollm_stream(client, fmt, frames)))[0])
    us = 1e6 / frames
    print(
        f"{fmt:<11}{t_bare * us:>13.2f}{t_frame * us:>12.2f}{t_codec * us:>9.2f}"
        f"{events / frames:>14.2f}{e2e_bare * us:>10.2f}{e2e_ours * us:>12.2f}"
    )


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=50_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    frames = args.frames
    print(f"per-frame cost by layer, {frames:,}-frame streams, best of {args.runs}")
    print(machine_line())
    print(
        f"\n{'format':<11}{'bare sans-IO':>13}{'SSEDecoder':>12}{'decoder':>9}{'events/frame':>14}"
        f"{'bare e2e':>10}{'Stream e2e':>12}   (us per frame)"
    )
    with local_server() as origin:
        async with (
            aiohttp.ClientSession() as session,
            Client(providers=aiollm_settings(origin), env={}) as client,
        ):
            for fmt in BODIES:
                await measure(fmt, frames, args.runs, origin, session, client)
    print(
        "\n'decoder' is the provider's response decoder (SSEDecoder included); 'Stream e2e' adds"
        " the transport, the event loop and one async iteration per event."
    )


if __name__ == "__main__":
    asyncio.run(main())

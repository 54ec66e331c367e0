"""Feeding a provider's response decoder a body, as the Stream does: bytes in, events out."""

from __future__ import annotations

from collections.abc import Iterable

from aiollm.errors import APIError
from aiollm.events import Event, ResponseInfo
from aiollm.providers import ResponseDecoder


def decoded(
    decoder: ResponseDecoder,
    chunks: Iterable[bytes | str],
    *,
    end: bool = True,
    info: bool = False,
) -> list[Event]:
    """The events ``decoder`` yields for a body arriving as ``chunks`` (and its end, if ``end``).

    Feeding stops at the terminal frame; an error the decoder kept after returning the events
    before it is raised. ``info``: keep the :class:`ResponseInfo` events (dropped otherwise).
    """
    out: list[Event] = []
    for chunk in chunks:
        out += decoder.feed(chunk.encode() if isinstance(chunk, str) else chunk)
        if decoder.error is not None:
            raise decoder.error
        if decoder.finished:
            break
    if end:
        out += decoder.end()
        if decoder.error is not None:
            raise decoder.error
    return out if info else [e for e in out if type(e) is not ResponseInfo]


def http_failure(decoder: ResponseDecoder, body: bytes) -> APIError:
    """The error a non-2xx response with ``body`` stands for."""
    decoder.feed(body)
    try:
        decoder.end()
    except APIError as exc:
        return exc
    raise AssertionError("the decoder did not raise an APIError")

"""Feeding a codec an event-stream body: event by event as text, or as the Stream does.

A test module opts in with ``pytestmark = pytest.mark.usefixtures("sse_feed_mode")`` (the
fixture is in ``conftest.py``): each of its tests then runs in both modes.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiollm.events import Event
from aiollm.framing import SSEDecoder
from aiollm.providers._base import Codec

RAW_BATCHES = False
"""The mode :func:`feed_codec` uses: set by the ``sse_feed_mode`` fixture."""


def feed_codec(
    codec: Codec, chunks: Iterable[bytes], *, end: bool = True, **modes: bool
) -> list[Event]:
    """The events ``codec`` yields for a body arriving as ``chunks`` (and its end, if ``end``).

    As the Stream does (``RAW_BATCHES``): raw data, one ``on_sse_batch`` per chunk. Else one
    ``on_sse`` per decoded text event. Feeding stops at the terminal frame.
    """
    decoder = SSEDecoder(raw_data=RAW_BATCHES, **modes)
    out: list[Event] = []
    for chunk in [*chunks, None]:
        if RAW_BATCHES:
            codec.on_sse_batch(decoder.close() if chunk is None else decoder.feed_raw(chunk), out)
        else:
            for event in decoder.close() if chunk is None else decoder.feed(chunk):
                out += codec.on_sse(event)
                if codec.done:
                    break
        if codec.done:
            return out + codec.on_end() if end else out
    return out + codec.on_end() if end else out

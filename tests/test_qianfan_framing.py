"""SSEDecoder(json_line_events=True): bare JSON lines inside an event stream."""

from __future__ import annotations

from aiollm.framing import ServerSentEvent, SSEDecoder

ERR = b'{"error_code":110,"error_msg":"Access token invalid or no longer valid"}'


def parse(body: bytes, **kw: bool) -> list[ServerSentEvent]:
    """Parse ``body`` whole and byte by byte; both must agree."""

    def run(chunks: list[bytes]) -> list[ServerSentEvent]:
        dec = SSEDecoder(**kw)
        out: list[ServerSentEvent] = []
        for chunk in chunks:
            out += dec.feed(chunk)
        return out + dec.close()

    whole = run([body])
    assert run([body[i : i + 1] for i in range(len(body))]) == whole
    return whole


def test_off_by_default_the_line_is_an_ignored_field() -> None:
    assert parse(ERR + b"\n\n") == []
    assert parse(b"data: a\n" + ERR + b"\n", data_line_events=True) == [ServerSentEvent(data="a")]


def test_bare_line_is_its_own_event_in_both_modes() -> None:
    for data_line_events in (False, True):
        events = parse(
            b"data: a\n\n" + ERR + b"\n\ndata: b\n\n",
            data_line_events=data_line_events,
            json_line_events=True,
        )
        assert [e.data for e in events] == ["a", ERR.decode(), "b"]


def test_bare_line_without_line_end_at_close() -> None:
    for data_line_events in (False, True):
        events = parse(
            b"data: a\n\n" + ERR, data_line_events=data_line_events, json_line_events=True
        )
        assert [e.data for e in events] == ["a", ERR.decode()]


def test_data_lines_still_take_the_fast_path() -> None:
    body = b"".join(b'data: {"n":%d}\n' % i for i in range(50))
    events = parse(body, data_line_events=True, json_line_events=True)
    assert [e.data for e in events] == [f'{{"n":{i}}}' for i in range(50)]

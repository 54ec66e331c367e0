"""Bare JSON lines inside an event stream (Qianfan writes its errors so): rule 2 of SSEDecoder."""

from __future__ import annotations

from aiollm.framing import ServerSentEvent, SSEDecoder

ERR = b'{"error_code":110,"error_msg":"Access token invalid or no longer valid"}'


def parse(body: bytes) -> list[ServerSentEvent]:
    """Parse ``body`` whole and byte by byte; both must agree."""

    def run(chunks: list[bytes]) -> list[ServerSentEvent]:
        dec = SSEDecoder()
        out: list[ServerSentEvent] = []
        for chunk in chunks:
            out += dec.feed(chunk)
        return out + dec.close()

    whole = run([body])
    assert run([body[i : i + 1] for i in range(len(body))]) == whole
    return whole


def test_bare_line_is_its_own_event() -> None:
    events = parse(b"data: a\n\n" + ERR + b"\n\ndata: b\n\n")
    assert [e.data for e in events] == ["a", ERR.decode(), "b"]


def test_bare_line_after_a_frame_without_blank_line() -> None:
    frame = b'data: {"result":"x","is_end":false}\n'
    events = parse(frame + ERR + b"\n")
    assert [e.data for e in events] == [frame[6:-1].decode(), ERR.decode()]


def test_bare_line_without_line_end_at_close() -> None:
    events = parse(b"data: a\n\n" + ERR)
    assert [e.data for e in events] == ["a", ERR.decode()]


def test_data_lines_still_take_the_fast_lane() -> None:
    body = b"".join(b'data: {"n":%d}\n' % i for i in range(50))
    events = parse(body)
    assert [e.data for e in events] == [f'{{"n":{i}}}' for i in range(50)]
    assert parse(body.replace(b"\n", b"\n\n")) == events

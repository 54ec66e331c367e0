"""When bytes arrived, by the kernel's clock: receive timestamps of a plain TCP socket (Linux).

A read stamped when the event loop gets to the socket is late by however long the loop was
busy (other streams, garbage collection, another process on the core). With ``SO_TIMESTAMPNS``
the kernel notes when each packet arrived, and ``recvmsg`` hands that time over with the bytes:
the time of the newest packet the read returned, whatever the loop was doing meanwhile.

:func:`install` replaces the read callback of one asyncio selector transport (the one
``_SelectorSocketTransport`` sets for a plain ``Protocol``) by the same steps done with
``recvmsg``, and passes each read's arrival time (``time.perf_counter`` scale) to ``note``
just before ``data_received``. Where that is not possible — not Linux, TLS, uvloop, a
buffered protocol, an asyncio without these internals — it installs nothing and returns False.
A later ``set_protocol`` puts asyncio's own callback back.
"""

from __future__ import annotations

import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["arrival", "install"]

_SO_TIMESTAMPNS: int = getattr(socket, "SO_TIMESTAMPNS", 35)  # 35 on Linux, not always exported
_SOL_SOCKET = socket.SOL_SOCKET
_CMSG_SPACE = socket.CMSG_SPACE(16) if hasattr(socket, "CMSG_SPACE") else 0
_TIMESPEC = struct.Struct("@qq")
_NEEDS = ("_sock", "_conn_lost", "_protocol", "_fatal_error", "_read_ready__on_eof", "max_size")


def arrival(ancdata: list[tuple[int, int, bytes]]) -> float | None:
    """The receive time in ``ancdata`` as ``time.perf_counter`` time (None when absent)."""
    for level, kind, data in ancdata:
        if level == _SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = _TIMESPEC.unpack_from(data)
            age: float = time.time() - (
                sec + nsec * 1e-9
            )  # realtime, read now: immune to clock steps
            if 0.0 <= age < 60.0:
                return time.perf_counter() - age
            return None
    return None


def install(transport: Any, note: Callable[[float], None]) -> bool:
    """Read ``transport``'s socket with kernel receive times passed to ``note``; True if done."""
    if sys.platform != "linux" or not _CMSG_SPACE:
        return False
    if any(not hasattr(transport, name) for name in _NEEDS):
        return False
    plain = getattr(transport, "_read_ready__data_received", None)
    if plain is None or getattr(transport, "_read_ready_cb", None) != plain:
        return False
    sock = transport._sock
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    except (OSError, AttributeError):
        return False
    recvmsg = sock.recvmsg
    size = transport.max_size

    def read_ready() -> None:  # asyncio's _read_ready__data_received, with recvmsg
        if transport._conn_lost:
            return
        try:
            data, ancdata, _flags, _addr = recvmsg(size, _CMSG_SPACE)
        except (BlockingIOError, InterruptedError):
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            transport._fatal_error(exc, "Fatal read error on socket transport")
            return
        if not data:
            transport._read_ready__on_eof()
            return
        at = arrival(ancdata)
        if at is not None:
            note(at)
        try:
            transport._protocol.data_received(data)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            transport._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")

    transport._read_ready_cb = read_ready
    return True

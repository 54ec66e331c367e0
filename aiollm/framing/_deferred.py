"""The rule every framer keeps for an error found after frames completed in the same chunk:
the frames are returned, and the error is raised by the next call."""

from __future__ import annotations

from collections.abc import Sized

from ..errors import ProtocolError

__all__ = ["DeferredError"]


class DeferredError:
    """A framer's kept error (:meth:`_fail` keeps it, :meth:`_raise_pending` raises it)."""

    _closed: bool
    _error: ProtocolError | None

    def _fail(self, exc: ProtocolError, done: Sized) -> None:
        """``exc`` closes the framer: it is raised now when nothing completed (``done`` is
        empty), else kept for the next call."""
        self._closed = True
        if not done:
            raise exc
        self._error = exc

    def _raise_pending(self) -> None:
        """Raise the kept error, once."""
        error = self._error
        if error is not None:
            self._error = None
            raise error

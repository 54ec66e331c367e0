"""What to check, added to an HTTP error: the URL that was requested and the setting to fix.

Sans-IO helpers the providers call from :meth:`Provider.explain
<aiollm.providers.Provider.explain>`; the URL shown carries no query string and no user info,
and the request's secrets are masked.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

from .._redact import redact_text
from ..errors import APIError, AuthenticationError, NotFoundError

__all__ = ["openai_compatible_hint", "shown_url"]


def shown_url(url: str, secrets: Iterable[str] = ()) -> str:
    """``url`` fit for a message: scheme, host, port and path only, secrets masked."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return redact_text(urlunsplit((parts.scheme, host, parts.path, "", "")), secrets)


def openai_compatible_hint(
    exc: APIError,
    url: str,
    secrets: Iterable[str] = (),
    *,
    base_url: str = "the base_url setting or OPENAI_BASE_URL",
    api_key: str = "the api_key setting or OPENAI_API_KEY",
) -> APIError:
    """Name the requested URL on a 404 (hinting at ``/v1``) and the key to check on a 401."""
    if isinstance(exc, NotFoundError) and exc.status == 404:
        shown = shown_url(url, secrets)
        hint = f"requested {shown}"
        if "/v1/" not in urlsplit(url).path + "/":
            hint += (
                f"; OpenAI-compatible servers serve under /v1: check that {base_url} ends in /v1"
            )
        exc.message = f"{exc.message} ({hint})"
    elif isinstance(exc, AuthenticationError):
        exc.message = f"{exc.message} (check {api_key})"
    return exc

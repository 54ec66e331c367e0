"""Raw HTTP against the emulator: what it sends, byte for byte, without aiollm's client."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import anyio

from aiollm.testing import Emulator

MSGS = [{"role": "user", "content": "hi"}]


@dataclass
class Raw:
    """One answer as received."""

    status: int
    headers: dict[str, str]
    body: bytes
    error: BaseException | None = None
    chunks: list[bytes] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.body)

    def events(self) -> list[dict[str, Any]]:
        """The body's SSE events: ``{"data": str, "event": str | None, "comments": [...]}``.

        Frames end at a blank line, or at each ``data:`` line when the body has no blank lines.
        """
        text = self.body.decode()
        blank = "\n\n" in text
        out: list[dict[str, Any]] = []
        cur: dict[str, Any] = {"data": [], "event": None, "comments": []}
        for line in text.split("\n"):
            if line:
                if line.startswith(":"):
                    cur["comments"].append(line[1:])
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "data":
                    cur["data"].append(value)
                elif name == "event":
                    cur["event"] = value
                if not (name == "data" and not blank):
                    continue
            if cur["data"] or cur["comments"] or cur["event"]:
                out.append(cur)
                cur = {"data": [], "event": None, "comments": []}
        for ev in out:
            ev["data"] = "\n".join(ev["data"])
        return out

    def datas(self) -> list[Any]:
        """The JSON of every data frame (``[DONE]`` left out)."""
        return [json.loads(e["data"]) for e in self.events() if e["data"] not in ("", "[DONE]")]


class Wire:
    """Send provider requests to an emulator with aiohttp and keep the raw answers."""

    def __init__(self, emu: Emulator, session: aiohttp.ClientSession) -> None:
        self.emu = emu
        self.session = session

    async def qianfan_token(self) -> str:
        emu = self.emu
        query = {
            "grant_type": "client_credentials",
            "client_id": emu.qianfan_ak,
            "client_secret": emu.qianfan_sk,
        }
        async with self.session.post(f"{emu.url}/oauth/2.0/token", params=query) as resp:
            token: str = (await resp.json())["access_token"]
        return token

    async def gateway_token(self) -> str:
        emu = self.emu
        query = {"appid": emu.gateway_appid, "secret": emu.gateway_secret}
        url = f"{emu.url}/api/v1/ability_sub/external/getToken"
        async with self.session.get(url, params=query) as resp:
            token: str = (await resp.json())["data"]["accessToken"]
        return token

    async def request(
        self,
        provider: str,
        *,
        stream: bool = True,
        model: str = "m",
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        read_timeout: float | None = None,
    ) -> Raw:
        """One chat request to ``provider``; ``params`` are DashScope parameters or extra fields."""
        emu = self.emu
        headers: dict[str, str] = {}
        query: dict[str, str] = {}
        if provider == "openai":
            url = f"{emu.url}/v1/chat/completions"
            headers["Authorization"] = f"Bearer {emu.openai_key}"
            payload = {"model": model, "messages": MSGS, "stream": stream, **(params or {})}
        elif provider == "gateway":
            url = f"{emu.url}/{emu.gateway_ability}/v1/chat/completions"
            query["accessToken"] = await self.gateway_token()
            payload = {"model": model, "messages": MSGS, "stream": stream, **(params or {})}
        elif provider == "dashscope":
            url = f"{emu.url}/api/v1/services/aigc/text-generation/generation"
            headers["Authorization"] = f"Bearer {emu.api_key}"
            if stream:
                headers["X-DashScope-SSE"] = "enable"
            payload = {"model": model, "input": {"messages": MSGS}, "parameters": params or {}}
        else:
            url = f"{emu.url}/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/{model}"
            query["access_token"] = await self.qianfan_token()
            payload = {"messages": MSGS, "stream": stream, **(params or {})}
        if body is not None:
            payload = body
        chunks: list[bytes] = []
        error: BaseException | None = None
        async with self.session.post(url, json=payload, headers=headers, params=query) as resp:
            try:
                with anyio.fail_after(read_timeout) if read_timeout else _nothing():
                    async for chunk in resp.content.iter_any():
                        chunks.append(chunk)
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = exc
            return Raw(resp.status, dict(resp.headers), b"".join(chunks), error, chunks)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None

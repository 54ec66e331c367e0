"""``aiollm chat``: one streamed reply, or an interactive multi-turn session.

The session keeps the conversation's history and streams each reply as it arrives. At the
prompt: ``/reset`` forgets the history, ``/history`` shows it, ``/help`` lists the commands,
Ctrl-C stops the reply being streamed (the session goes on), Ctrl-D (or ``/exit``) leaves.

The event loop runs in a background thread (an anyio blocking portal) so that the main
thread can read lines with :func:`input` and take Ctrl-C as a plain ``KeyboardInterrupt``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from typing import Any

import anyio
from anyio.from_thread import BlockingPortal, start_blocking_portal

from .client import Client
from .errors import AiollmError, InvalidRequestError
from .stream import Stream

__all__ = ["Conversation", "params_from_args", "parse_param", "run_chat"]

COMMANDS = {
    "/reset": "forget the conversation so far",
    "/history": "show the conversation so far",
    "/help": "list these commands",
    "/exit": "leave (or Ctrl-D)",
}
PROMPT = "> "


def parse_param(text: str) -> tuple[str, Any]:
    """``key=value`` for ``-p``: the value as JSON when it parses (``0.5``, ``true``), else text."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected key=value, e.g. top_p=0.8 (got {text!r})")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip(), value


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


class Conversation:
    """One model's conversation: the history and how each turn is sent.

    A model that refuses messages but takes a prompt (DashScope's ``chatyuan-large-v2``) is
    sent each input as the whole prompt, without history (``prompt_only``).
    """

    def __init__(
        self, client: Client, model: str, *, system: str | None = None, **params: Any
    ) -> None:
        self.client = client
        self.model = model
        self.system = system
        self.params = params
        self.history: list[dict[str, str]] = []
        self.prompt_only: bool | None = None
        """None until the first turn finds out."""
        self._scope: anyio.CancelScope | None = None
        self._stop_requested = False

    def reset(self) -> None:
        """Forget the conversation so far."""
        self.history.clear()

    async def detect(self) -> bool:
        """Find out (without sending anything) whether the model takes a prompt only."""
        if self.prompt_only is None:
            self.prompt_only = await self._takes_prompt_only()
        return self.prompt_only

    async def _takes_prompt_only(self) -> bool:
        try:
            stream = self.client.stream(
                self.model, [{"role": "user", "content": "?"}], **self.params
            )
        except InvalidRequestError:
            try:
                stream = self.client.stream(self.model, prompt="?", **self.params)
            except AiollmError:
                return False  # the real call reports what is wrong
            await stream.aclose()
            return True
        await stream.aclose()
        return False

    def _stream(self, text: str) -> Stream:
        if self.prompt_only:
            return self.client.stream(self.model, prompt=text, **self.params)
        messages = [{"role": "system", "content": self.system}] if self.system else []
        messages += [*self.history, {"role": "user", "content": text}]
        return self.client.stream(self.model, messages, **self.params)

    async def reply(self, text: str, write: Callable[[str], None] = _write) -> str:
        """Stream the reply to ``text`` through ``write``; the history keeps what was shown.

        :meth:`stop` ends the reply early (the part shown so far is kept).
        """
        await self.detect()
        parts: list[str] = []
        with anyio.CancelScope() as scope:
            self._scope = scope
            if self._stop_requested:
                scope.cancel()
            try:
                async with self._stream(text) as stream:
                    async for delta in stream.text_deltas():
                        parts.append(delta)
                        write(delta)
            finally:
                self._scope = None
                if parts and not self.prompt_only:
                    reply = "".join(parts)
                    self.history += [
                        {"role": "user", "content": text},
                        {"role": "assistant", "content": reply},
                    ]
        return "".join(parts)

    def request_stop(self, requested: bool = True) -> None:
        """Stop the reply being streamed (call from the event loop's thread)."""
        self._stop_requested = requested
        if requested and self._scope is not None:
            self._scope.cancel()


@asynccontextmanager
async def open_client(emulator: bool) -> AsyncIterator[Client]:
    """A client from the environment, or one for an embedded emulator started here."""
    if not emulator:
        async with Client() as client:
            yield client
        return
    from .testing import Cadence, Emulator

    async with Emulator(cadence=Cadence(0.1, 0.03)) as emu, emu.client() as client:
        yield client


def _say(text: str) -> None:
    _write(text + "\n")


def _ask(portal: BlockingPortal, conversation: Conversation, text: str) -> None:
    """Stream one reply; Ctrl-C stops it and the session goes on."""
    portal.call(conversation.request_stop, False)
    future = portal.start_task_soon(conversation.reply, text)
    try:
        future.result()
    except KeyboardInterrupt:
        portal.call(conversation.request_stop)
        try:
            future.result()
        except AiollmError:
            pass
        _say("\n[stopped]")
        return
    except AiollmError as exc:
        sys.stderr.write(f"\nerror: {exc}\n")
        sys.stderr.flush()
        return
    _say("")


def interactive(portal: BlockingPortal, conversation: Conversation, banner: str) -> int:
    """Read lines and stream replies until Ctrl-D or ``/exit``."""
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:  # pragma: no cover - not on every platform
        pass
    _say(banner)
    if portal.call(conversation.detect):
        _say(
            f"{conversation.model} takes a prompt only: each input is sent as the whole "
            "prompt, in the model's own convention, without history"
            + (" (and without --system)." if conversation.system else ".")
        )
    _say("/help lists the commands; Ctrl-C stops a reply, Ctrl-D exits.")
    while True:
        try:
            line = input(PROMPT)
        except EOFError:
            _say("")
            return 0
        except KeyboardInterrupt:
            _say("")
            continue
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return 0
        if text == "/reset":
            conversation.reset()
            _say("(history cleared)")
        elif text == "/history":
            for message in conversation.history:
                _say(f"{message['role']}: {message['content']}")
            turns = len(conversation.history) // 2
            _say(f"({turns} turn{'' if turns == 1 else 's'})")
        elif text == "/help":
            for command, what in COMMANDS.items():
                _say(f"  {command:<9} {what}")
        elif text.startswith("/") and text.split()[0] not in COMMANDS and " " not in text:
            _say(f"unknown command {text}; /help lists the commands")
        else:
            _ask(portal, conversation, text)


@contextmanager
def _event_loop_thread() -> Iterator[BlockingPortal]:
    """A blocking portal whose thread never takes SIGINT: Ctrl-C reaches the main thread."""
    can_mask = hasattr(signal, "pthread_sigmask")
    with ExitStack() as stack:
        if can_mask:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            portal = stack.enter_context(start_blocking_portal())  # the thread inherits the mask
        finally:
            if can_mask:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        yield portal


def params_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The provider parameters given on the command line (``-p`` last wins)."""
    params: dict[str, Any] = {}
    if args.temperature is not None:
        params["temperature"] = args.temperature
    if args.max_tokens is not None:
        params["max_tokens"] = args.max_tokens
    params.update(args.param or [])
    return params


def run_chat(args: argparse.Namespace) -> int:
    """``aiollm chat``: one reply to ``args.prompt``, else an interactive session."""
    params = params_from_args(args)
    with _event_loop_thread() as portal:
        try:
            with portal.wrap_async_context_manager(open_client(args.emulator)) as client:
                conversation = Conversation(client, args.model, system=args.system, **params)
                if args.prompt is not None:
                    if args.system and portal.call(conversation.detect):
                        sys.stderr.write(
                            f"note: {args.model} takes a prompt only; --system is not sent\n"
                        )
                    portal.call(conversation.reply, args.prompt)
                    _say("")
                    return 0
                where = (
                    "the embedded emulator" if args.emulator else "settings from the environment"
                )
                return interactive(portal, conversation, f"aiollm chat: {args.model} ({where})")
        except AiollmError as exc:
            sys.stderr.write(f"error: {exc}\n")
            return 1

"""``aiollm chat`` as a person uses it: the real command on a pseudo-terminal, and its parts.

Timeouts are generous (the machine may be busy); nothing asserts how fast a reply comes.
"""

from __future__ import annotations

import codecs
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aiollm._chat import Conversation, params_from_args, parse_param
from aiollm.cli import build_parser
from aiollm.testing import Emulator

AIOLLM = str(Path(sys.executable).parent / "aiollm")
WAIT = 90.0
# Make the pseudo-terminal the command's controlling terminal, so that Ctrl-C is a SIGINT.
CONTROLLING_TTY = (
    "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def reply_to(prompt: str) -> str:
    """The emulator's reply to ``prompt`` (deterministic)."""
    return "".join(Emulator().reply_tokens_for(prompt))


class Terminal:
    """A command running on a pseudo-terminal: ``send`` keys, ``expect`` output."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        master, slave = os.openpty()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CONTROLLING_TTY, AIOLLM, *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            env={**os.environ, "TERM": "dumb", **(env or {})},
        )
        os.close(slave)
        self.master = master
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.pending = ""

    def expect(self, text: str, timeout: float = WAIT) -> str:
        """Wait for ``text``; return the output up to and including it."""
        deadline = time.monotonic() + timeout
        while text not in self.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {text!r} within {timeout}s; got {self.pending[-1500:]!r}")
            ready, _, _ = select.select([self.master], [], [], remaining)
            if not ready:
                continue
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the command ended and closed the terminal
                data = b""
            if not data:
                raise AssertionError(f"the command ended before {text!r}: {self.pending[-1500:]!r}")
            self.pending += self.decoder.decode(data).replace("\r\n", "\n")
        end = self.pending.index(text) + len(text)
        seen, self.pending = self.pending[:end], self.pending[end:]
        return seen

    def line_after(self, text: str) -> str:
        """The rest of the line that follows ``text``."""
        self.expect(text)
        return self.expect("\n").strip()

    def send(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def ctrl_c_at_prompt(self) -> None:
        """Ctrl-C at the prompt, after a person's pause; pressed again if nothing happened.

        (A SIGINT that lands between the interpreter printing the prompt and starting to read
        is only seen at the next key: the pause keeps out of that window, the retry covers it.)
        """
        for _ in range(5):
            time.sleep(0.5)
            self.send("\x03")
            try:
                self.expect("\n> ", timeout=15)
                return
            except AssertionError:
                continue
        raise AssertionError("Ctrl-C at the prompt gave no fresh prompt")

    def wait(self, timeout: float = WAIT) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(WAIT)
        os.close(self.master)


@pytest.fixture
def terminals() -> Iterator[list[Terminal]]:
    opened: list[Terminal] = []
    yield opened
    for term in opened:
        term.close()


def test_interactive_session_keeps_history_resets_and_exits_on_ctrl_d(
    terminals: list[Terminal],
) -> None:
    term = Terminal("chat", "--emulator", "openai/any-model")
    terminals.append(term)
    term.expect("Ctrl-D exits.")
    term.expect("> ")
    term.send("hello there\r")
    assert reply_to("hello there") in term.expect("\n> ")
    term.send("and then?\r")
    assert reply_to("and then?") in term.expect("\n> ")
    term.send("/history\r")
    shown = term.expect("(2 turns)\n> ")
    assert "user: hello there" in shown and "user: and then?" in shown
    assert f"assistant: {reply_to('hello there')}" in shown
    term.ctrl_c_at_prompt()  # a fresh prompt, not the end
    term.send("/reset\r")
    term.expect("(history cleared)\n> ")
    term.send("/history\r")
    term.expect("(0 turns)\n> ")  # keys like Ctrl-D wait for the prompt, as a person does
    term.send("\x04")  # Ctrl-D
    assert term.wait() == 0


def test_ctrl_c_stops_the_reply_and_the_session_goes_on(terminals: list[Terminal]) -> None:
    # A separate emulator, one token a second, pointed at by the environment it prints.
    server = Terminal("emulator", "--port", "0", "--per-token", "1")
    terminals.append(server)
    server.expect("export OPENAI_BASE_URL=")
    base_url = server.expect("\n").strip()
    env = {"OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": server.line_after("OPENAI_API_KEY=")}

    term = Terminal("chat", "openai/any-model", env=env)
    terminals.append(term)
    term.expect("> ")
    full = reply_to("tell me a long story")
    first_word = full.split()[0]
    term.send("tell me a long story\r")
    term.expect(first_word)
    term.send("\x03")
    shown = term.expect("[stopped]")
    assert full not in shown  # cut short: 24 tokens would take 23 s more
    term.expect("> ")
    term.send("/history\r")
    history = term.expect("(1 turn)\n> ")
    assert "user: tell me a long story" in history
    term.send("\x04")
    assert term.wait() == 0


def test_one_shot_reply_and_prompt_only_models() -> None:
    env = {**os.environ}
    out = subprocess.run(
        [AIOLLM, "chat", "--emulator", "openai/m", "hi", "--temperature", "0.2", "-p", "top_p=0.5"],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == reply_to("hi")
    prompt = "用户：你好\n小元："
    out = subprocess.run(
        [AIOLLM, "chat", "--emulator", "dashscope/chatyuan-large-v2", prompt],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == reply_to(prompt)


def test_help_shows_defaults_and_no_markup() -> None:
    for command in ([], ["chat"], ["demo"], ["emulator"]):
        out = subprocess.run(
            [AIOLLM, *command, "--help"], capture_output=True, text=True, timeout=WAIT
        )
        assert out.returncode == 0
        assert "``" not in out.stdout and ":class:" not in out.stdout, command
    out = subprocess.run([AIOLLM, "demo", "--help"], capture_output=True, text=True, timeout=WAIT)
    assert "emulated time to first token (default: 0.12)" in out.stdout


# -- the parts, in process ---------------------------------------------------------------------
def test_params_from_the_command_line() -> None:
    params = ["-p", "top_p=0.8", "-p", "enable_search=true", "-p", 'stop=["\\n"]', "-p", "user=ann"]
    args = build_parser().parse_args(
        ["chat", "openai/m", "--temperature", "0.3", "--max-tokens", "9", *params]
    )
    assert params_from_args(args) == {
        "temperature": 0.3,
        "max_tokens": 9,
        "top_p": 0.8,
        "enable_search": True,
        "stop": ["\n"],
        "user": "ann",
    }
    assert args.prompt is None
    assert parse_param("k==x") == ("k", "=x")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["chat", "openai/m", "-p", "novalue"])


@pytest.mark.anyio
async def test_the_conversation_sends_system_history_and_params() -> None:
    shown: list[str] = []
    async with Emulator() as emu, emu.client() as client:
        chat = Conversation(client, "openai/m", system="be brief", temperature=0.2, top_p=0.5)
        first = await chat.reply("one", shown.append)
        await chat.reply("two", shown.append)
        body: Any = emu.stats.bodies[-1]
    assert "".join(shown) == first + reply_to("two")
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": first},
        {"role": "user", "content": "two"},
    ]
    assert body["temperature"] == 0.2 and body["top_p"] == 0.5


@pytest.mark.anyio
async def test_a_prompt_only_model_gets_each_input_as_the_prompt() -> None:
    async with Emulator() as emu, emu.client() as client:
        chat = Conversation(client, "dashscope/chatyuan-large-v2")
        assert await chat.detect()
        await chat.reply("用户：你好\n小元：", lambda _text: None)
        body: Any = emu.stats.bodies[-1]
        assert not await Conversation(client, "dashscope/qwen-turbo").detect()
    assert body["input"] == {"prompt": "用户：你好\n小元："}
    assert chat.history == []

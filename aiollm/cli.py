"""The ``aiollm`` command: ``demo``, ``chat``, ``emulator`` and ``bench``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

import anyio

from ._chat import parse_param
from .errors import AiollmError
from .events import TextDelta, Usage

DEMO_MODELS = (
    "dashscope/baichuan2-turbo",
    "qianfan/llama_2_7b",
    "gateway/llama-2-7b-chat",
    "openai/gpt-4o-mini",
)
DEMO_PROMPT = "用一句话介绍一下杭州。"
DEMO_REPLY = "杭州是浙江省省会，以西湖闻名，历史悠久、风景秀丽。 Hangzhou is known for West Lake and Longjing tea."


def _print(text: str = "", end: str = "\n") -> None:
    sys.stdout.write(text + end)
    sys.stdout.flush()


async def _stream_one(client: Any, model: str, prompt: str) -> dict[str, Any]:
    """Stream one reply to stdout; return its timings."""
    start = time.perf_counter()
    ttft: float | None = None
    chunks = 0
    usage: Usage | None = None
    async with client.stream(model, messages=[{"role": "user", "content": prompt}]) as stream:
        async for event in stream:
            if type(event) is TextDelta:
                if ttft is None:
                    ttft = time.perf_counter() - start
                chunks += 1
                _print(event.text, end="")
            elif type(event) is Usage:
                usage = event
    total = time.perf_counter() - start
    _print()
    tokens = usage.output_tokens if usage and usage.output_tokens is not None else chunks
    return {"model": model, "tokens": tokens, "chunks": chunks, "ttft": ttft, "total": total}


async def run_demo(models: Sequence[str], first_token: float, per_token: float) -> int:
    """Start the emulator, stream from each model, print a summary; returns an exit code."""
    from .testing import Cadence, Emulator

    rows: list[dict[str, Any]] = []
    failures = 0
    async with Emulator(cadence=Cadence(first_token, per_token), reply=DEMO_REPLY) as emu:
        _print(f"aiollm demo: embedded emulator at {emu.url} (no keys, no network)\n")
        async with emu.client() as client:
            for model in models:
                _print(f"── {model} ──")
                try:
                    rows.append(await _stream_one(client, model, DEMO_PROMPT))
                except AiollmError as exc:
                    failures += 1
                    _print(f"\n  error: {exc}")
                    rows.append({"model": model, "error": type(exc).__name__})
                _print()
    _print(f"{'model':<28} {'tokens':>6} {'chunks':>6} {'TTFT ms':>8} {'total ms':>9}")
    for row in rows:
        if "error" in row:
            _print(f"{row['model']:<28} {'failed: ' + row['error']:>32}")
            continue
        ttft = f"{row['ttft'] * 1000:.0f}" if row["ttft"] is not None else "-"
        _print(
            f"{row['model']:<28} {row['tokens']:>6} {row['chunks']:>6} {ttft:>8} "
            f"{row['total'] * 1000:>9.0f}"
        )
    return 1 if failures else 0


class HelpFormatter(argparse.HelpFormatter):
    """Help that shows each option's default (when it has one) and keeps multi-line text as is."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        unset = default is None or default is False or default == [] or default is argparse.SUPPRESS
        if action.option_strings and not unset and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="aiollm",
        description="Async streaming client for DashScope, Qianfan and OpenAI-compatible APIs.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__} (aiollm-client)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="stream a reply from every provider of the embedded emulator",
        description="Start the embedded emulator, stream a reply from each provider and "
        "print the timings (no keys, no network).",
        formatter_class=HelpFormatter,
    )
    demo.add_argument(
        "--model", action="append", metavar="PROVIDER/MODEL", help="model to stream (repeatable)"
    )
    demo.add_argument(
        "--first-token", type=float, default=0.12, metavar="S", help="emulated time to first token"
    )
    demo.add_argument(
        "--per-token", type=float, default=0.02, metavar="S", help="emulated time per token"
    )

    chat = sub.add_parser(
        "chat",
        help="chat with MODEL: one reply to PROMPT, or an interactive session",
        description="Stream a reply to PROMPT, or with no PROMPT open an interactive session "
        "that keeps the conversation (/reset forgets it, Ctrl-C stops a reply, Ctrl-D exits). "
        "Settings come from the environment (e.g. OPENAI_BASE_URL and OPENAI_API_KEY); "
        "--emulator needs none.",
        epilog="examples:\n"
        "  aiollm chat --emulator openai/any-model\n"
        "  aiollm chat dashscope/qwen-turbo 'Say hello' --temperature 0.3 -p top_p=0.8\n"
        "  aiollm chat dashscope/chatyuan-large-v2 $'用户：你好\\n小元：'",
        formatter_class=HelpFormatter,
    )
    chat.add_argument("model", metavar="MODEL", help="provider/model, e.g. openai/gpt-4o-mini")
    chat.add_argument("prompt", metavar="PROMPT", nargs="?", help="reply to this and exit")
    chat.add_argument("--system", metavar="TEXT", help="a system message before the conversation")
    chat.add_argument("--temperature", type=float, metavar="T", help="sampling temperature")
    chat.add_argument("--max-tokens", type=int, metavar="N", help="longest reply, in tokens")
    chat.add_argument(
        "-p",
        "--param",
        action="append",
        type=parse_param,
        metavar="KEY=VALUE",
        help="any provider parameter (repeatable); VALUE is read as JSON when it parses, "
        "e.g. -p top_p=0.8 -p enable_search=true",
    )
    chat.add_argument(
        "--emulator", action="store_true", help="talk to the embedded emulator (no keys needed)"
    )

    from .testing._cli import add_arguments as add_emulator_arguments

    add_emulator_arguments(
        sub.add_parser(
            "emulator",
            help="serve the emulator of every provider",
            description="Serve every provider's wire format on HOST:PORT and print the "
            "environment that points a client (or aiollm chat / aiollm bench) at it.",
            formatter_class=HelpFormatter,
        )
    )

    from .bench._cli import add_arguments as add_bench_arguments

    bench = sub.add_parser(
        "bench", help="benchmark models under concurrent load (emulator default)"
    )
    add_bench_arguments(bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``aiollm`` console script."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            return anyio.run(run_demo, args.model or DEMO_MODELS, args.first_token, args.per_token)
        if args.command == "chat":
            from ._chat import run_chat

            return run_chat(args)
        if args.command == "emulator":
            from .testing._cli import run as run_emulator

            return run_emulator(args)
        if args.command == "bench":
            from .bench._cli import run_cli

            return run_cli(args)
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

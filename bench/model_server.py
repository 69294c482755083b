"""The fake OpenAI (tests/fakes) in a process of its own, as OpenAI is remote: its CPU time and memory are not
counted as the bot's. Every ``POST /v1/responses`` gets the same scripted reply (time to first token, chunking).

``python -m bench.model_server --ttft 0.02`` prints the base URL, then serves until stdin closes. ``--stamps FILE``
writes, when it ends, one line per ``POST /v1/responses``: when it arrived (``time.monotonic``, CLOCK_MONOTONIC,
comparable across processes), a tab, and the text of its first input.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCRIPTED = 200_000  # replies queued up front; the fake falls back to its default reply after that


async def _serve(args: argparse.Namespace) -> None:
    from aiohttp import web

    from tests.fakes import spec
    from tests.fakes.openai_server import FakeOpenAI, Recorded, Reply

    spec.validator()  # load the spec before the first timed request
    stamps: list[str] = []

    class Stamped(FakeOpenAI):
        async def _record(self, request: web.Request) -> Recorded:
            at = time.monotonic()
            recorded = await super()._record(request)
            if args.stamps and recorded.path == "/v1/responses":
                stamps.append(f"{at!r}\t{_first_text(recorded.json)}")
            return recorded

    fake = Stamped()
    fake.conversation_latency = args.conversation_latency
    base_url = await fake.start()
    reply = Reply(text=args.text, ttft=args.ttft, token_interval=args.token_interval, chunk=args.chunk)
    fake.script(*([reply] * SCRIPTED))
    print(base_url, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
    await fake.close()
    if args.stamps:
        await asyncio.to_thread(Path(args.stamps).write_text, "".join(f"{line}\n" for line in stamps))


def _first_text(body: Any) -> str:
    try:
        return " ".join(str(body["input"][0]["content"][0]["text"]).split())
    except (KeyError, IndexError, TypeError):
        return ""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ttft", type=float, default=0.0)
    parser.add_argument("--token-interval", type=float, default=0.0)
    parser.add_argument("--chunk", type=int, default=4)
    parser.add_argument("--text", default=None, help="the answer (default: the fake's quoting answer)")
    parser.add_argument("--stamps", default=None, help="write the arrival of each model request here at the end")
    parser.add_argument("--conversation-latency", type=float, default=0.0, help="seconds per conversation write")
    asyncio.run(_serve(parser.parse_args(argv)))


@asynccontextmanager
async def model_server(
    *,
    ttft: float,
    token_interval: float = 0.0,
    chunk: int = 4,
    text: str | None = None,
    stamps: Path | None = None,
    conversation_latency: float = 0.0,
) -> AsyncIterator[str]:
    """Run the fake OpenAI in a child process; yields its base URL. ``stamps``: see the module docstring (the file is
    written once the context has exited)."""
    args = ["--ttft", str(ttft), "--token-interval", str(token_interval), "--chunk", str(chunk)]
    if text is not None:
        args += ["--text", text]
    if stamps is not None:
        args += ["--stamps", str(stamps)]
    if conversation_latency:
        args += ["--conversation-latency", str(conversation_latency)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.model_server",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
        if not line:
            raise RuntimeError("the fake OpenAI process exited before printing its URL")
        yield line.decode().strip()
    finally:
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), timeout=5)
        except TimeoutError:
            proc.kill()
            await proc.wait()


if __name__ == "__main__":
    main()

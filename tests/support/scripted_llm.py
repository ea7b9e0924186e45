"""An OpenAI-compatible server with scripted replies, served in the test process.

Conversations are told apart by their first user message (the run's input), and the
reply is chosen by how many assistant turns the conversation already has, so many runs
can talk to it at once and a resumed run picks up where it left off. Hiccups a retry
should get past (`hiccups`) are served once each, before the script, whatever the turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config

from services.devstack.demo_llm import Reply, create_llm_app


class ScriptedLLM:
    def __init__(self) -> None:
        self._scripts: dict[str, list[Reply]] = {}
        self._hiccups: dict[str, list[Reply]] = {}
        self.calls: Counter[str] = Counter()
        self.bodies: list[dict[str, Any]] = []

    def script(self, prompt: str, *replies: Reply) -> None:
        self._scripts[prompt] = list(replies)

    def hiccups(self, prompt: str, *replies: Reply) -> None:
        """The next calls of this conversation get these, one each, before its script."""
        self._hiccups[prompt] = list(replies)

    async def respond(self, body: dict[str, Any]) -> Reply:
        messages = body.get("messages", [])
        prompt = next((str(m.get("content")) for m in messages if m.get("role") == "user"), "")
        self.calls[prompt] += 1
        self.bodies.append(body)
        if self._hiccups.get(prompt):
            return self._hiccups[prompt].pop(0)
        replies = self._scripts.get(prompt)
        if not replies:
            return Reply(content=f"unscripted reply to: {prompt}")
        turn = sum(1 for m in messages if m.get("role") == "assistant")
        return replies[min(turn, len(replies) - 1)]


@contextlib.asynccontextmanager
async def serve_llm(llm: ScriptedLLM) -> AsyncIterator[str]:
    """Serve on an ephemeral port (bound here, handed to hypercorn: no race); yields the
    OpenAI base URL."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    port = sock.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns and closes it from here
    config.accesslog = None
    config.errorlog = None
    stop = asyncio.Event()
    task = asyncio.create_task(
        serve(create_llm_app(llm.respond), config, shutdown_trigger=stop.wait)
    )
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop.set()
        await task

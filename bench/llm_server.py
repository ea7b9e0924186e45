"""The benchmarks' model: the demo model's OpenAI-compatible app, answering at once or
after a fixed delay, asking for tool calls when the run's input says so, and timing its
own work.

The stack benchmarks subtract the model's own time from each step to get what the
platform adds, so the server records, per request, how long it spent between receiving
the request and handing back the response, keyed by the run's input and the turn. It
also counts requests in progress: the concurrency benchmark reads the peak to see how
many model calls one worker really held open at once.

A run whose input contains `tools=N` is answered with one `notes__add` call per turn
for its first N turns, then with a final answer. One whose input contains `words=N`
is answered with N words (streamed a word a chunk when the call streams, `chunk_ms=M`
apart); the wall-clock time its first chunk leaves is kept by prompt (`first_chunks`),
for the time-to-first-token benchmark.

Run: `python -m bench.llm_server --port P [--delay SECONDS]` (the stack starts it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart, Response, g, jsonify, request

from services.devstack.demo_llm import Reply, create_llm_app

TOOL = "notes__add"


def _number(prompt: str, name: str) -> int:
    _, found, rest = prompt.partition(f"{name}=")
    return int(rest.split()[0]) if found else 0


def create_app(delay_seconds: float) -> Quart:
    timings: list[tuple[str, int, float]] = []
    first_chunks: dict[str, float] = {}
    gauge = {"now": 0, "peak": 0, "requests": 0}

    async def responder(body: dict[str, Any]) -> Reply:
        messages = body.get("messages", [])
        prompt = next((str(m.get("content")) for m in messages if m.get("role") == "user"), "")
        turn = sum(1 for m in messages if m.get("role") == "assistant")
        g.bench_key = (prompt, turn)
        if words := _number(prompt, "words"):
            content = " ".join(f"w{n}" for n in range(words))
            delay = _number(prompt, "chunk_ms") / 1000
            # The role chunk leaves as soon as this returns, the first word one delay
            # later: the time of the first text, as near as the server can tell.
            first_chunks[prompt] = time.time() + delay
            return Reply(content=content, completion_tokens=words, chunk_delay_seconds=delay)
        if turn < _number(prompt, "tools"):
            call = {
                "id": f"call_{turn}",
                "type": "function",
                "function": {"name": TOOL, "arguments": json.dumps({"a": turn, "b": 1})},
            }
            return Reply(tool_calls=[call], delay_seconds=delay_seconds)
        return Reply(content="done", delay_seconds=delay_seconds)

    app = create_llm_app(responder)

    @app.before_request
    async def _arrived() -> None:
        g.arrived = time.perf_counter()
        gauge["now"] += 1
        gauge["requests"] += 1
        gauge["peak"] = max(gauge["peak"], gauge["now"])

    @app.after_request
    async def _answered(response: Response) -> Response:
        gauge["now"] -= 1
        key = g.get("bench_key")
        if key is not None:
            timings.append((key[0], key[1], time.perf_counter() - g.arrived))
        return response

    @app.get("/bench/stats")
    async def stats() -> Any:
        """Requests served, the peak in progress at once, and each request's own time;
        `?reset=1` starts counting afresh (the peak is per benchmark phase)."""
        body = jsonify({**gauge, "timings": timings, "first_chunks": first_chunks})
        if request.args.get("reset"):
            timings.clear()
            first_chunks.clear()
            gauge["peak"] = gauge["now"]
            gauge["requests"] = 0
        return body

    return app


async def _serve(port: int, delay_seconds: float) -> None:
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.backlog = 4096  # a worker may open a thousand connections at once
    await serve(create_app(delay_seconds), config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before answering")
    args = parser.parse_args()
    asyncio.run(_serve(args.port, args.delay))


if __name__ == "__main__":
    main()

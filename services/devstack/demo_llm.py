"""A small OpenAI-compatible chat-completions server.

`ferrumdeck dev` serves it as the clearly labelled local demo model, so the demo agent
answers with no provider key and no network; the test suite serves it with scripted
replies. Either way LiteLLM talks to it exactly as it talks to OpenAI.

The demo model echoes what it is told, unless told to call a tool it is offered:
`time.get_current_time {"timezone": "Europe/Paris"}` (a tool's name, then its arguments
as a JSON object) is answered with that call, and the tool's result with a sentence
quoting it. That is all the "reasoning" it has, and enough to show a newcomer a tool
call going through policy and approval without a provider key.

Asked with `"stream": true`, it answers as OpenAI streams: `chat.completion.chunk`
events over SSE, the text a word at a time and each tool call's arguments in pieces,
then a usage chunk when `stream_options.include_usage` asks for one, then `[DONE]`;
`chunk_delay_seconds` spaces the chunks, so a test can see the first arrive before the
model has finished.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from quart import Quart, Response, jsonify, request

DEMO_MODEL = "ferrumdeck-demo"
DEMO_LABEL = "[FerrumDeck local demo model, not a real LLM]"


@dataclass(frozen=True)
class Reply:
    """What the model answers: text, tool calls as OpenAI shapes them, or an HTTP error
    (with `Retry-After`, as rate-limiting providers send it, when `retry_after` is set)."""

    content: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    delay_seconds: float = 0.0
    error_status: int | None = None
    retry_after: str | None = None
    chunk_delay_seconds: float = 0.0


Responder = Callable[[dict[str, Any]], Awaitable[Reply]]


def _count_tokens(text: str) -> int:
    return max(1, len(text.split()))


def _prompt_text(body: dict[str, Any]) -> str:
    return " ".join(str(m.get("content") or "") for m in body.get("messages", []))


async def demo_responder(body: dict[str, Any]) -> Reply:
    """Quotes the conversation's last user message, labelled as a demo; or makes the
    tool call it names, then quotes the tool's result (see the module docstring)."""
    messages = body.get("messages", [])
    if messages and messages[-1].get("role") == "tool":
        return Reply(content=f"{DEMO_LABEL} {_called(messages)} said: {messages[-1]['content']}")
    users = [m for m in messages if m.get("role") == "user"]
    said = str(users[-1].get("content") or "") if users else ""
    call = _tool_call(said, body.get("tools") or [])
    if call is not None:
        return Reply(tool_calls=[call])
    return Reply(content=f"{DEMO_LABEL} You said: {said}")


def _tool_call(said: str, tools: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The call `said` asks for, if it names an offered tool (`server.tool` or the name
    the model is shown, `server__tool`) and its arguments, if any, are a JSON object."""
    name, _, rest = said.strip().partition(" ")
    offered = {t.get("function", {}).get("name") for t in tools}
    function = name.replace(".", "__", 1)
    if function not in offered:
        return None
    try:
        arguments = json.loads(rest) if rest.strip() else {}
    except ValueError:
        return None
    if not isinstance(arguments, dict):
        return None
    return {
        "id": f"call_demo_{len(said)}",
        "type": "function",
        "function": {"name": function, "arguments": json.dumps(arguments)},
    }


def _called(messages: list[dict[str, Any]]) -> str:
    """The tool the last tool message answers, as FerrumDeck names it."""
    answered = messages[-1].get("tool_call_id")
    for message in reversed(messages):
        for call in message.get("tool_calls") or []:
            if call.get("id") == answered:
                return str(call["function"]["name"]).replace("__", ".", 1)
    return "the tool"


def create_llm_app(responder: Responder = demo_responder) -> Quart:
    app = Quart("ferrumdeck-demo-llm")
    ids = itertools.count(1)

    @app.get("/v1/models")
    async def models() -> Any:
        return jsonify({"object": "list", "data": [{"id": DEMO_MODEL, "object": "model"}]})

    @app.post("/v1/chat/completions")
    @app.post("/chat/completions")
    async def chat_completions() -> Any:
        body = await request.get_json(force=True)
        reply = await responder(body)
        if reply.delay_seconds:
            await asyncio.sleep(reply.delay_seconds)
        if reply.error_status is not None:
            error = {"message": reply.content, "type": "invalid_request_error", "code": None}
            headers = {} if reply.retry_after is None else {"Retry-After": reply.retry_after}
            return jsonify({"error": error}), reply.error_status, headers
        prompt_tokens = reply.prompt_tokens or _count_tokens(_prompt_text(body))
        completion_tokens = reply.completion_tokens or _count_tokens(reply.content or "tool")
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        head = {
            "id": f"chatcmpl-{next(ids)}",
            "created": int(time.time()),
            "model": body.get("model", DEMO_MODEL),
        }
        finish = "tool_calls" if reply.tool_calls else "stop"
        if body.get("stream"):
            with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            events = _streamed(reply, head, finish, usage if with_usage else None)
            return Response(events, mimetype="text/event-stream")
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.tool_calls:
            message["tool_calls"] = reply.tool_calls
        return jsonify(
            head
            | {
                "object": "chat.completion",
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": usage,
            }
        )

    return app


async def _streamed(
    reply: Reply, head: dict[str, Any], finish: str, usage: dict[str, int] | None
) -> AsyncIterator[bytes]:
    chunks = [*_deltas(reply), {"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}]
    if usage is not None:
        chunks.append({"choices": [], "usage": usage})
    for n, chunk in enumerate(chunks):
        if n and reply.chunk_delay_seconds:
            await asyncio.sleep(reply.chunk_delay_seconds)
        event = head | {"object": "chat.completion.chunk"} | chunk
        yield f"data: {json.dumps(event)}\n\n".encode()
    yield b"data: [DONE]\n\n"


def _deltas(reply: Reply) -> Iterator[dict[str, Any]]:
    """The reply in the pieces a provider streams it in: the role, the text a word at a
    time, each tool call's id and name, then its arguments in a few pieces."""
    yield {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
    words = reply.content.split(" ") if reply.content else []
    for n, word in enumerate(words):
        piece = word if n == 0 else f" {word}"
        yield {"choices": [{"index": 0, "delta": {"content": piece}}]}
    for index, call in enumerate(reply.tool_calls):
        function = call["function"]
        opening = {
            "index": index,
            "id": call["id"],
            "type": "function",
            "function": {"name": function["name"], "arguments": ""},
        }
        yield {"choices": [{"index": 0, "delta": {"tool_calls": [opening]}}]}
        arguments = function["arguments"]
        step = max(1, len(arguments) // 3)
        for start in range(0, len(arguments), step):
            part = {"index": index, "function": {"arguments": arguments[start : start + step]}}
            yield {"choices": [{"index": 0, "delta": {"tool_calls": [part]}}]}

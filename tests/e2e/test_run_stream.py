"""A run followed as the model writes it (`GET /v1/runs/{id}/stream`), through real
workers, LiteLLM streaming from the scripted model, Redis and the gateway's SSE."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from services.client.async_client import AsyncFerrumDeck
from services.contract.run_stream import RunEnded, StepRecorded, TokenDelta
from services.devstack.demo_llm import Reply
from tests.e2e.conftest import Stack
from tests.e2e.driving import register_agent, unique_prompt, wait_finished

WORDS = 12
DELAY = 0.08


async def _start(stack: Stack, agent: str, text: str) -> str:
    response = await stack.api.post(
        "/v1/runs", json={"agent": agent, "input": text, "stream": True}
    )
    assert response.status_code == 202, response.text
    assert response.json()["stream"] is True
    run_id: str = response.json()["id"]
    return run_id


async def _follow(
    stack: Stack,
    run_id: str,
    *,
    last_event_id: str | None = None,
    stop_after_tokens: int | None = None,
) -> list[tuple[str, str, Any, float]]:
    """The stream's events as (id, name, data, arrival), to its `end` or the
    `stop_after_tokens`th token."""
    headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
    seen: list[tuple[str, str, Any, float]] = []
    async with (
        httpx.AsyncClient(base_url=stack.url, headers=stack.api.headers, timeout=30) as api,
        aconnect_sse(api, "GET", f"/v1/runs/{run_id}/stream", headers=headers) as source,
    ):
        assert source.response.status_code == 200
        async for event in source.aiter_sse():
            seen.append((event.id, event.event, json.loads(event.data), time.monotonic()))
            tokens = sum(1 for _, name, _, _ in seen if name == "token")
            if event.event == "end" or tokens == stop_after_tokens:
                break
    return seen


def _text(events: list[tuple[str, str, Any, float]], step: int) -> str:
    return "".join(d["delta"] for _, name, d, _ in events if name == "token" and d["step"] == step)


def _answer(prompt: str) -> str:
    return " ".join(f"word{n}" for n in range(WORDS)) + f" ({prompt})"


async def test_tokens_arrive_as_the_model_writes_them_and_add_up_to_the_step(
    stack: Stack,
) -> None:
    agent = await register_agent(stack)
    prompt = unique_prompt("Stream me an answer")
    answer = _answer(prompt)
    stack.llm.script(prompt, Reply(content=answer, chunk_delay_seconds=DELAY))
    run_id = await _start(stack, agent, prompt)
    events = await _follow(stack, run_id)

    names = [name for _, name, _, _ in events]
    assert names[0] == "token"
    assert names[-2:] == ["step", "end"]
    first_token = events[0][3]
    step_at = next(at for _, name, _, at in events if name == "step")
    # The model takes WORDS chunks of DELAY to write the answer: the first token came
    # while it was still writing, not with the recorded step.
    assert step_at - first_token >= (WORDS - 3) * DELAY
    step = next(d for _, name, d, _ in events if name == "step")
    assert step["output"]["message"]["content"] == answer
    assert _text(events, step["seq"]) == answer
    run = events[-1][2]
    assert (run["id"], run["status"], run["output"]) == (run_id, "completed", answer)
    # Spaced chunks go out as they come (a batch is at most 30 ms of them).
    assert 1 < names.count("token") <= len(answer.split(" "))


async def test_a_reconnect_with_last_event_id_loses_and_repeats_nothing(stack: Stack) -> None:
    agent = await register_agent(stack)
    prompt = unique_prompt("Stream me in two halves")
    answer = _answer(prompt)
    stack.llm.script(prompt, Reply(content=answer, chunk_delay_seconds=DELAY))
    run_id = await _start(stack, agent, prompt)
    before = await _follow(stack, run_id, stop_after_tokens=2)
    assert [name for _, name, _, _ in before] == ["token", "token"]
    after = await _follow(stack, run_id, last_event_id=before[-1][0])
    ids = [event_id for event_id, _, _, _ in before + after]
    assert len(ids) == len(set(ids)), ids
    assert after[0][1] == "token", "the model was still writing when the client came back"
    assert _text(before + after, 1) == answer
    assert [name for _, name, _, _ in after][-2:] == ["step", "end"]


async def test_a_client_that_comes_after_the_end_gets_the_steps_and_end_at_once(
    stack: Stack,
) -> None:
    agent = await register_agent(stack)
    prompt = unique_prompt("Answer before anyone looks")
    stack.llm.script(prompt, Reply(content="already done"))
    response = await stack.api.post("/v1/runs", json={"agent": agent, "input": prompt})
    run_id = response.json()["id"]
    await wait_finished(stack, run_id)
    started = time.monotonic()
    events = await _follow(stack, run_id)
    assert time.monotonic() - started < 5
    assert [name for _, name, _, _ in events] == ["step", "end"]
    assert events[0][2]["output"]["message"]["content"] == "already done"
    assert events[1][2]["status"] == "completed"
    # Resuming after the step gives only the end; after the end, 204: nothing more.
    rest = await _follow(stack, run_id, last_event_id=events[0][0])
    assert [name for _, name, _, _ in rest] == ["end"]
    assert rest[0][0] == "end"
    over = await stack.api.get(f"/v1/runs/{run_id}/stream", headers={"Last-Event-ID": "end"})
    assert over.status_code == 204


async def test_a_bad_last_event_id_is_refused_clearly(stack: Stack) -> None:
    agent = await register_agent(stack)
    response = await stack.api.post("/v1/runs", json={"agent": agent, "input": "hi"})
    run_id = response.json()["id"]
    refused = await stack.api.get(
        f"/v1/runs/{run_id}/stream", headers={"Last-Event-ID": "yesterday"}
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "invalid_last_event_id"


async def test_the_client_streams_a_run_as_typed_events(stack: Stack) -> None:
    agent = await register_agent(stack)
    prompt = unique_prompt("Stream me through the client")
    answer = _answer(prompt)
    stack.llm.script(prompt, Reply(content=answer, chunk_delay_seconds=0.02))
    key = stack.api.headers["Authorization"].removeprefix("Bearer ")
    async with AsyncFerrumDeck(stack.url, key) as deck:
        run = await deck.create_run(agent, prompt, stream=True)
        items = [item async for item in deck.stream_run(run.id)]
    assert isinstance(items[0], TokenDelta)
    assert "".join(i.delta for i in items if isinstance(i, TokenDelta)) == answer
    (step,) = [i.step for i in items if isinstance(i, StepRecorded)]
    assert step.output["message"]["content"] == answer
    assert isinstance(items[-1], RunEnded)
    assert items[-1].run.output == answer


async def test_a_client_that_comes_after_a_streamed_run_ended_gets_its_tokens_first(
    stack: Stack,
) -> None:
    agent = await register_agent(stack)
    prompt = unique_prompt("Stream before anyone looks")
    answer = _answer(prompt)
    stack.llm.script(prompt, Reply(content=answer, chunk_delay_seconds=0.01))
    run_id = await _start(stack, agent, prompt)
    await wait_finished(stack, run_id)
    events = await _follow(stack, run_id)
    assert [name for _, name, _, _ in events][-2:] == ["step", "end"]
    assert _text(events, 1) == answer

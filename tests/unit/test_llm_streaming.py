"""A streamed model call: its deltas reach the sink as the model writes them, and the
reply put together from them is the one an unstreamed call returns, tool calls and
usage included."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml

from services.contract.model_catalog import ModelCatalog
from services.contract.runs import ModelParams
from services.devstack.demo_llm import Reply
from services.worker.llm import LLM
from services.worker.retry import Backoff
from tests.support.scripted_llm import ScriptedLLM, serve_llm


class _Sink:
    def __init__(self) -> None:
        self.deltas: list[tuple[float, str]] = []
        self.restarts = 0

    def write(self, delta: str) -> None:
        self.deltas.append((time.monotonic(), delta))

    def restart(self) -> None:
        self.restarts += 1
        self.deltas.clear()


def _llm(tmp_path: Path, url: str, price: bool, retries: int = 0) -> LLM:
    params: dict[str, Any] = {"model": "openai/scripted", "api_base": url, "api_key": "k"}
    if price:
        params |= {"input_cost_per_token": 0.001, "output_cost_per_token": 0.002}
    models = tmp_path / "models.yaml"
    models.write_text(
        yaml.safe_dump({"model_list": [{"model_name": "m", "litellm_params": params}]})
    )
    return LLM(ModelCatalog.load(models), 5.0, Backoff(retries, 0.01, 0.02))


async def test_deltas_arrive_before_the_reply_ends_and_add_up_to_it(tmp_path: Path) -> None:
    scripted = ScriptedLLM()
    text = "one two three four five six"
    scripted.script(
        "hi", Reply(content=text, prompt_tokens=7, completion_tokens=6, chunk_delay_seconds=0.05)
    )
    async with serve_llm(scripted) as url:
        llm = _llm(tmp_path, url, price=True)
        sink = _Sink()
        try:
            reply = await llm.complete(
                "m",
                [{"role": "user", "content": "hi"}],
                ModelParams(),
                tools=[],
                max_output_tokens=None,
                tokens=sink,
            )
            ended = time.monotonic()
        finally:
            await llm.aclose()
    assert scripted.bodies[0]["stream"] is True
    assert "".join(d for _, d in sink.deltas) == text == reply.message["content"]
    assert ended - sink.deltas[0][0] >= 0.2  # the first word came long before the last
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (7, 6)
    assert reply.usage.cost_usd is not None
    assert abs(reply.usage.cost_usd - (7 * 0.001 + 6 * 0.002)) < 1e-9


async def test_tool_calls_are_assembled_from_their_deltas(tmp_path: Path) -> None:
    scripted = ScriptedLLM()
    arguments = json.dumps({"title": "groceries", "body": "eggs, milk and a loaf"})
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "notes__write_note", "arguments": arguments},
    }
    scripted.script(
        "hi", Reply(content=None, tool_calls=[call], prompt_tokens=3, completion_tokens=9)
    )
    async with serve_llm(scripted) as url:
        llm = _llm(tmp_path, url, price=False)
        sink = _Sink()
        try:
            reply = await llm.complete(
                "m",
                [{"role": "user", "content": "hi"}],
                ModelParams(),
                tools=[],
                max_output_tokens=None,
                tokens=sink,
            )
        finally:
            await llm.aclose()
    (assembled,) = reply.message["tool_calls"]
    assert assembled["id"] == "call_1"
    assert assembled["function"]["name"] == "notes__write_note"
    assert json.loads(assembled["function"]["arguments"]) == json.loads(arguments)
    assert sink.deltas == []
    assert reply.usage.completion_tokens == 9
    # A model nobody priced costs "unknown", streamed or not.
    assert reply.usage.cost_usd is None


async def test_a_retried_call_starts_its_text_again(tmp_path: Path) -> None:
    scripted = ScriptedLLM()
    scripted.hiccups("hi", Reply(error_status=503))
    scripted.script("hi", Reply(content="all good"))
    async with serve_llm(scripted) as url:
        llm = _llm(tmp_path, url, price=False, retries=2)
        sink = _Sink()
        try:
            reply = await llm.complete(
                "m",
                [{"role": "user", "content": "hi"}],
                ModelParams(),
                tools=[],
                max_output_tokens=None,
                deadline=time.monotonic() + 10,
                tokens=sink,
            )
        finally:
            await llm.aclose()
    assert sink.restarts == 1
    assert "".join(d for _, d in sink.deltas) == "all good" == reply.message["content"]

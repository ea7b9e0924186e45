from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import litellm
import pytest
import yaml

from services.contract.model_catalog import ModelCatalog
from services.devstack.demo_llm import DEMO_LABEL, DEMO_MODEL, Reply, demo_responder
from services.devstack.stack import (
    demo_mcp_servers,
    demo_model,
    provider_models,
    write_models_file,
)
from tests.support.scripted_llm import ScriptedLLM, serve_llm


@pytest.fixture(autouse=True)
def _no_provider_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "GEMINI_API_KEY",
        "FERRUMDECK_DEMO_MODEL",
        "FERRUMDECK_PROVIDER_MODELS",
    ):
        monkeypatch.delenv(name, raising=False)


def test_without_a_provider_key_the_demo_uses_the_local_model() -> None:
    assert demo_model() == DEMO_MODEL


def test_a_provider_key_selects_a_real_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant")
    assert demo_model().startswith("anthropic/")


def test_the_dev_stack_allows_the_providers_whose_keys_are_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Offline, no provider; with a key, that provider, so the demo agent it picks runs."""
    assert provider_models() == ""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant")
    monkeypatch.setenv("GEMINI_API_KEY", "g")
    assert provider_models() == "anthropic,gemini"
    monkeypatch.setenv("FERRUMDECK_PROVIDER_MODELS", "openai")
    assert provider_models() == "openai"


def test_an_explicit_choice_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk")
    monkeypatch.setenv("FERRUMDECK_DEMO_MODEL", "openai/gpt-4o")
    assert demo_model() == "openai/gpt-4o"


def test_models_file_keeps_the_operators_models_and_adds_the_demo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = tmp_path / "own.yaml"
    own.write_text(
        yaml.safe_dump(
            {"model_list": [{"model_name": "fast", "litellm_params": {"model": "openai/x"}}]}
        )
    )
    monkeypatch.setenv("FERRUMDECK_MODELS", str(own))
    catalog = ModelCatalog.load(write_models_file(tmp_path, 9999))
    assert catalog.names() == sorted(["fast", DEMO_MODEL])
    demo = catalog.resolve(DEMO_MODEL)
    assert demo.call_kwargs["api_base"] == "http://127.0.0.1:9999/v1"
    assert demo.price is not None
    assert demo.price.cost(100, 100) == 0


async def test_the_demo_model_calls_a_tool_it_is_offered_and_quotes_the_result() -> None:
    """A newcomer's first tool call needs no provider key: the demo model makes the call
    its input names, then says what the tool answered."""
    offered = [{"type": "function", "function": {"name": "time__get_current_time"}}]
    said = 'time.get_current_time {"timezone": "Europe/Paris"}'
    asked = {"messages": [{"role": "user", "content": said}], "tools": offered}
    (call,) = (await demo_responder(asked)).tool_calls
    assert call["function"] == {
        "name": "time__get_current_time",
        "arguments": '{"timezone": "Europe/Paris"}',
    }
    answered = {
        "messages": [
            {"role": "user", "content": said},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "13:27 in Paris"},
        ],
        "tools": offered,
    }
    reply = await demo_responder(answered)
    assert reply.content == f"{DEMO_LABEL} time.get_current_time said: 13:27 in Paris"


async def test_the_demo_model_echoes_what_names_no_offered_tool() -> None:
    for said, tools in [
        ("time.get_current_time {}", []),
        ("time.get_current_time not json", [{"function": {"name": "time__get_current_time"}}]),
        ("Hello!", [{"function": {"name": "time__get_current_time"}}]),
    ]:
        reply = await demo_responder(
            {"messages": [{"role": "user", "content": said}], "tools": tools}
        )
        assert reply.tool_calls == []
        assert reply.content == f"{DEMO_LABEL} You said: {said}"


def test_the_dev_stack_gives_the_worker_the_time_server_unless_told_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FERRUMDECK_MCP_SERVERS", raising=False)
    path, tools = demo_mcp_servers(tmp_path)
    assert tools == ["time.*"]
    (server,) = json.loads(Path(path).read_text())["mcpServers"].values()
    assert "mcp_server_time" in server["args"]
    monkeypatch.setenv("FERRUMDECK_MCP_SERVERS", "/etc/ours.json")
    assert demo_mcp_servers(tmp_path) == ("/etc/ours.json", [])


async def _both_ways(reply: Reply) -> tuple[Any, Any, float, float]:
    """The reply unstreamed, then streamed through LiteLLM and assembled by its own chunk
    builder, with when the first and the last chunk arrived."""
    scripted = ScriptedLLM()
    scripted.script("stream me", reply)
    messages = [{"role": "user", "content": "stream me"}]
    async with serve_llm(scripted) as url:
        call = {"model": "openai/scripted", "api_base": url, "api_key": "k", "num_retries": 0}
        whole = await litellm.acompletion(messages=messages, **call)
        began = time.perf_counter()
        stream = await litellm.acompletion(
            messages=messages, stream=True, stream_options={"include_usage": True}, **call
        )
        chunks, arrived = [], []
        async for chunk in stream:
            chunks.append(chunk)
            arrived.append(time.perf_counter() - began)
    assembled = litellm.stream_chunk_builder(chunks, messages=messages)
    return whole, assembled, arrived[0], arrived[-1]


async def test_a_streamed_answer_arrives_in_pieces_and_adds_up_to_the_whole() -> None:
    reply = Reply(
        content="one two three four five six",
        prompt_tokens=9,
        completion_tokens=6,
        chunk_delay_seconds=0.05,
    )
    whole, assembled, first, last = await _both_ways(reply)
    # Nine chunks 50 ms apart: the first came long before the model had finished.
    assert last - first > 0.3
    assert assembled.choices[0].message.content == whole.choices[0].message.content
    assert whole.choices[0].message.content == "one two three four five six"
    assert (assembled.usage.prompt_tokens, assembled.usage.completion_tokens) == (9, 6)


async def test_a_streamed_tool_call_is_assembled_as_the_unstreamed_one() -> None:
    arguments = json.dumps({"timezone": "Europe/Paris", "format": "long"})
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "time__get_current_time", "arguments": arguments},
    }
    whole, assembled, _, _ = await _both_ways(Reply(tool_calls=[call]))
    (streamed_call,) = assembled.choices[0].message.tool_calls
    (plain_call,) = whole.choices[0].message.tool_calls
    assert (streamed_call.id, streamed_call.function.name) == ("call_1", "time__get_current_time")
    assert json.loads(streamed_call.function.arguments) == json.loads(plain_call.function.arguments)
    assert assembled.choices[0].finish_reason == "tool_calls"

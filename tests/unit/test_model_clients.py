"""The model call through a shared SDK client: each model's own key and endpoint, and
its price, whatever other model shares the client pool."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import request

from services.contract.model_catalog import ModelCatalog
from services.contract.runs import ModelParams
from services.devstack.demo_llm import Reply, create_llm_app
from services.worker.llm import LLM, LLMReply
from services.worker.retry import Backoff


@contextlib.asynccontextmanager
async def _endpoint(name: str, seen: list[tuple[str, str]]) -> AsyncIterator[str]:
    """A model server that notes which key each call came with."""

    async def respond(body: dict[str, Any]) -> Reply:
        seen.append((name, request.headers.get("Authorization", "")))
        return Reply(content=f"from {name}", prompt_tokens=10, completion_tokens=5)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    port = sock.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    config.errorlog = None
    stop = asyncio.Event()
    task = asyncio.create_task(serve(create_llm_app(respond), config, shutdown_trigger=stop.wait))
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop.set()
        await task


async def _ask(llm: LLM, model: str) -> LLMReply:
    return await llm.complete(
        model, [{"role": "user", "content": "hi"}], ModelParams(), tools=[], max_output_tokens=None
    )


def _entry(name: str, api_base: str, api_key: str, price: float | None) -> dict[str, Any]:
    params: dict[str, Any] = {"model": "openai/scripted", "api_base": api_base, "api_key": api_key}
    if price is not None:
        params |= {"input_cost_per_token": price, "output_cost_per_token": price * 2}
    return {"model_name": name, "litellm_params": params}


async def test_models_sharing_an_endpoint_keep_their_own_keys_and_prices(tmp_path: Path) -> None:
    seen: list[tuple[str, str]] = []
    async with _endpoint("one", seen) as one, _endpoint("two", seen) as two:
        models = tmp_path / "models.yaml"
        entries = [
            _entry("a", one, "key-a", 0.001),
            _entry("b", one, "key-b", None),
            _entry("c", two, "key-a", 0.01),
        ]
        models.write_text(yaml.safe_dump({"model_list": entries}))
        llm = LLM(ModelCatalog.load(models), 5.0, Backoff(0, 0.01, 0.02))
        try:
            replies = {}
            for model in ["a", "b", "c", "a", "c", "b"]:
                replies[model] = await _ask(llm, model)
        finally:
            await llm.aclose()
    assert seen == [
        ("one", "Bearer key-a"),
        ("one", "Bearer key-b"),
        ("two", "Bearer key-a"),
        ("one", "Bearer key-a"),
        ("two", "Bearer key-a"),
        ("one", "Bearer key-b"),
    ]
    assert replies["a"].message["content"] == "from one"
    assert replies["c"].message["content"] == "from two"
    assert replies["a"].usage.cost_usd == pytest.approx(10 * 0.001 + 5 * 0.002)
    assert replies["c"].usage.cost_usd == pytest.approx(10 * 0.01 + 5 * 0.02)
    # A model neither the file nor LiteLLM prices costs "unknown", not 0.
    assert replies["b"].usage.cost_usd is None


async def test_a_model_without_a_configured_endpoint_is_left_to_litellm(tmp_path: Path) -> None:
    """No api_base in the file: LiteLLM finds the endpoint (here OPENAI_BASE_URL) itself."""
    seen: list[tuple[str, str]] = []
    async with _endpoint("env", seen) as url:
        models = tmp_path / "models.yaml"
        entry = {"model_name": "e", "litellm_params": {"model": "openai/scripted", "api_key": "k"}}
        models.write_text(yaml.safe_dump({"model_list": [entry]}))
        llm = LLM(ModelCatalog.load(models), 5.0, Backoff(0, 0.01, 0.02))
        with pytest.MonkeyPatch.context() as env:
            env.setenv("OPENAI_BASE_URL", url)
            env.setenv("OPENAI_API_BASE", url)
            try:
                reply = await _ask(llm, "e")
            finally:
                await llm.aclose()
    assert reply.message["content"] == "from env"
    assert seen == [("env", "Bearer k")]

"""A model call made without a key fails at once: LiteLLM reports some of these as passing
failures (a 500 for OpenAI, a connection error for Gemini), and waiting brings no key.
The calls are real LiteLLM calls; they fail before any request leaves the process."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from services.contract.model_catalog import ModelCatalog
from services.contract.runs import ModelParams
from services.worker.llm import LLM, LLMError
from services.worker.retry import Backoff


@pytest.mark.parametrize(
    ("model", "said"),
    [
        ("openai/gpt-4o-mini", "Missing credentials"),
        ("gemini/gemini-1.5-flash", "Missing Gemini API key"),
        ("anthropic/claude-3-5-haiku-20241022", "Missing Anthropic API Key"),
    ],
)
async def test_a_call_with_no_key_is_not_retried(
    model: str, said: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    models = tmp_path / "models.yaml"
    entry = {"model_name": "nokey", "litellm_params": {"model": model}}
    models.write_text(yaml.safe_dump({"model_list": [entry]}))
    waits: list[float] = []

    def jitter() -> float:
        waits.append(0.0)
        return 0.0

    llm = LLM(ModelCatalog.load(models), 5.0, Backoff(3, 0.01, 0.02, jitter=jitter))
    with pytest.raises(LLMError) as failed:
        await llm.complete(
            "nokey",
            [{"role": "user", "content": "hi"}],
            ModelParams(),
            tools=[],
            max_output_tokens=None,
        )
    assert said in str(failed.value)
    assert "attempts" not in str(failed.value)
    assert waits == []

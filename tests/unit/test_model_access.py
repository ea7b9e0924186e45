"""Which models a project's agents may name: the catalogue first, listed providers next,
never a provider that defaults to a server on the worker's own machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.contract.model_catalog import ModelCatalog
from services.gateway.model_access import ModelAccess


@pytest.fixture
def catalog(tmp_path: Path) -> ModelCatalog:
    path = tmp_path / "models.yaml"
    path.write_text(
        "model_list:\n"
        "  - {model_name: shared, litellm_params: {model: openai/gpt-4o-mini}}\n"
        "  - {model_name: acme-llama, projects: [acme],\n"
        "     litellm_params: {model: ollama_chat/llama3, api_base: 'http://gpu:11434'}}\n"
    )
    return ModelCatalog.load(path)


def test_catalogue_models_are_allowed_to_the_projects_they_are_offered_to(
    catalog: ModelCatalog,
) -> None:
    access = ModelAccess(catalog, frozenset())
    assert access.refusal("shared", "beta") is None
    assert access.refusal("acme-llama", "acme") is None
    refused = access.refusal("acme-llama", "beta")
    assert refused is not None
    assert refused.startswith("unknown model 'acme-llama'")
    assert "acme-llama" not in refused.split(":", 1)[1]  # beta is not told it exists
    assert "(shared)" in refused


@pytest.mark.parametrize(
    "model", ["openai/gpt-4o", "anthropic/claude-3-5-haiku-latest", "gemini/gemini-2.0-flash"]
)
def test_provider_strings_are_refused_unless_the_operator_lists_the_provider(
    catalog: ModelCatalog, model: str
) -> None:
    refused = ModelAccess(catalog, frozenset()).refusal(model, "beta")
    assert refused is not None
    provider = model.split("/")[0]
    assert f"FERRUMDECK_PROVIDER_MODELS={provider}" in refused
    assert ModelAccess(catalog, frozenset({provider})).refusal(model, "beta") is None


@pytest.mark.parametrize(
    "model", ["llamafile/x", "ollama_chat/x", "ollama/llama3", "lemonade/x", "xinference/x"]
)
def test_providers_with_a_local_default_endpoint_are_never_allowed_by_name(
    catalog: ModelCatalog, model: str
) -> None:
    provider = model.split("/")[0]
    refused = ModelAccess(catalog, frozenset({provider})).refusal(model, "acme")
    assert refused is not None
    assert "worker's own machine" in refused
    assert "api_base" in refused


@pytest.mark.parametrize("model", ["gpt-4o", "http://evil.example/v1", "openai/"])
def test_bare_or_url_models_are_unknown(catalog: ModelCatalog, model: str) -> None:
    refused = ModelAccess(catalog, frozenset({"openai"})).refusal(model, "acme")
    assert refused is not None
    assert refused.startswith("unknown model")
    assert "allowed provider (openai)" in refused

from __future__ import annotations

from pathlib import Path

import pytest

from services.contract.model_catalog import ModelCatalog, ModelCatalogError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(text)
    return path


def test_resolves_configured_name_with_endpoint_key_and_prices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INTERNAL_LLM_KEY", "sk-secret")
    catalog = ModelCatalog.load(
        _write(
            tmp_path,
            """
model_list:
  - model_name: fast
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: https://llm.internal/v1
      api_key: os.environ/INTERNAL_LLM_KEY
      input_cost_per_token: 0.000001
      output_cost_per_token: 0.000002
""",
        )
    )
    resolved = catalog.resolve("fast")
    assert resolved.model == "openai/gpt-4o-mini"
    assert resolved.call_kwargs == {"api_base": "https://llm.internal/v1", "api_key": "sk-secret"}
    assert resolved.price is not None
    assert resolved.price.cost(1000, 500) == pytest.approx(0.002)


def test_prices_may_come_from_model_info(tmp_path: Path) -> None:
    catalog = ModelCatalog.load(
        _write(
            tmp_path,
            """
model_list:
  - model_name: m
    litellm_params: {model: openai/x}
    model_info: {input_cost_per_token: 0.5, output_cost_per_token: 1.0}
""",
        )
    )
    price = catalog.resolve("m").price
    assert price is not None
    assert price.cost(2, 3) == pytest.approx(4.0)


def test_a_model_without_prices_has_no_price(tmp_path: Path) -> None:
    catalog = ModelCatalog.load(
        _write(tmp_path, "model_list: [{model_name: m, litellm_params: {model: openai/x}}]")
    )
    assert catalog.resolve("m").price is None


def test_provider_strings_resolve_unconfigured() -> None:
    resolved = ModelCatalog.empty().resolve("openai/gpt-4o-mini")
    assert resolved.model == "openai/gpt-4o-mini"
    assert resolved.call_kwargs == {}


def test_an_entry_scoped_to_projects_is_named_only_to_them(tmp_path: Path) -> None:
    catalog = ModelCatalog.load(
        _write(
            tmp_path,
            "model_list: [{model_name: acme-only, projects: [acme],"
            " litellm_params: {model: openai/x}}, {model_name: shared,"
            " litellm_params: {model: openai/y}}]",
        )
    )
    assert catalog.names("acme") == ["acme-only", "shared"]
    assert catalog.names("beta") == ["shared"]


def test_missing_environment_reference_names_the_variable(tmp_path: Path) -> None:
    catalog = ModelCatalog.load(
        _write(
            tmp_path,
            "model_list: [{model_name: m, litellm_params: "
            "{model: openai/x, api_key: os.environ/FD_TEST_UNSET_VARIABLE}}]",
        )
    )
    with pytest.raises(ModelCatalogError, match="FD_TEST_UNSET_VARIABLE"):
        catalog.resolve("m")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model_list: [{model_name: m}]", "not a LiteLLM model_list"),
        ("model_list: [", "not valid YAML"),
        ("just a string", "not a LiteLLM model_list"),
    ],
)
def test_bad_files_are_rejected_with_the_reason(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ModelCatalogError, match=message):
        ModelCatalog.load(_write(tmp_path, text))


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ModelCatalogError, match="cannot read"):
        ModelCatalog.load(tmp_path / "absent.yaml")

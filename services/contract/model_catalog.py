"""The models an operator offers, read from a file in LiteLLM's proxy `model_list` format.

```yaml
model_list:
  - model_name: fast
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: https://llm.internal/v1
      api_key: os.environ/INTERNAL_LLM_KEY
      input_cost_per_token: 0.00000015
      output_cost_per_token: 0.0000006
```

Agents name a model here by `model_name`, or give a plain provider-prefixed LiteLLM model
string when the operator allows that provider (`services/gateway/model_access.py`). Only
this file can set endpoints and keys: API callers never can. `os.environ/NAME`
references are resolved by the worker when it calls the model, so secrets never pass
through the gateway or the database.

An entry may carry `projects: [acme, beta]` (a FerrumDeck extension, beside LiteLLM's
keys): only agents of those projects may use it, and other projects are never told it
exists. An entry without it is offered to every project.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

PROVIDER_MODEL = re.compile(r"^[a-z0-9_-]+/[A-Za-z0-9._:@/+-]+$")
_ENV_REF = "os.environ/"


class ModelCatalogError(ValueError):
    """The models file is missing, unreadable, or not in `model_list` format."""


class _LiteLLMParams(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    input_cost_per_token: float | None = Field(default=None, ge=0)
    output_cost_per_token: float | None = Field(default=None, ge=0)


class _ModelInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    input_cost_per_token: float | None = Field(default=None, ge=0)
    output_cost_per_token: float | None = Field(default=None, ge=0)


class _Entry(BaseModel):
    model_config = ConfigDict(extra="allow")

    model_name: str = Field(min_length=1)
    litellm_params: _LiteLLMParams
    model_info: _ModelInfo | None = None
    projects: list[str] | None = Field(default=None, min_length=1)

    def offered_to(self, project: str) -> bool:
        return self.projects is None or project in self.projects


class _File(BaseModel):
    model_config = ConfigDict(extra="allow")

    model_list: list[_Entry]


@dataclass(frozen=True)
class Price:
    input_per_token: float
    output_per_token: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return prompt_tokens * self.input_per_token + completion_tokens * self.output_per_token


@dataclass(frozen=True)
class ResolvedModel:
    """What a worker passes to `litellm.acompletion` for one agent's `model`."""

    model: str
    call_kwargs: dict[str, Any]
    price: Price | None


@dataclass(frozen=True)
class ModelCatalog:
    entries: dict[str, _Entry]

    @classmethod
    def empty(cls) -> ModelCatalog:
        return cls({})

    @classmethod
    def load(cls, path: Path | None) -> ModelCatalog:
        if path is None:
            return cls.empty()
        try:
            raw = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise ModelCatalogError(f"cannot read models file {path}: {exc}") from exc
        except yaml.YAMLError as exc:
            raise ModelCatalogError(f"models file {path} is not valid YAML: {exc}") from exc
        try:
            parsed = _File.model_validate(raw)
        except ValidationError as exc:
            raise ModelCatalogError(
                f"models file {path} is not a LiteLLM model_list: {exc}"
            ) from exc
        return cls({entry.model_name: entry for entry in parsed.model_list})

    def names(self, project: str | None = None) -> list[str]:
        """The configured models, or those offered to `project`."""
        return sorted(
            name
            for name, entry in self.entries.items()
            if project is None or entry.offered_to(project)
        )

    def resolve(self, model: str) -> ResolvedModel:
        entry = self.entries.get(model)
        if entry is None:
            return ResolvedModel(model=model, call_kwargs={}, price=None)
        params = entry.litellm_params.model_dump(exclude_none=True)
        target = params.pop("model")
        input_cost = params.pop("input_cost_per_token", None)
        output_cost = params.pop("output_cost_per_token", None)
        if entry.model_info is not None:
            input_cost = (
                input_cost if input_cost is not None else entry.model_info.input_cost_per_token
            )
            output_cost = (
                output_cost if output_cost is not None else entry.model_info.output_cost_per_token
            )
        price = (
            Price(input_cost, output_cost)
            if input_cost is not None and output_cost is not None
            else None
        )
        kwargs = {key: _resolve_env(value) for key, value in params.items()}
        return ResolvedModel(model=target, call_kwargs=kwargs, price=price)


def _resolve_env(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_ENV_REF):
        name = value.removeprefix(_ENV_REF)
        try:
            return os.environ[name]
        except KeyError:
            raise ModelCatalogError(
                f"the models file refers to environment variable {name}, which is not set"
            ) from None
    return value

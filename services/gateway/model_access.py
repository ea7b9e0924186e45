"""Which models a project's agents may use: the operator's catalogue first.

A model string reaches the operator's network and accounts: `llamafile/x` made a worker
POST to `127.0.0.1:8080` and return the reply as the run's output, and `openai/gpt-4o`
ran on the worker's own `OPENAI_API_KEY` for any project, outside the priced catalogue.
So an agent's model must be, by default, a `model_name` of the models file offered to
its project. A plain provider string (`anthropic/claude-…`) is accepted only for a
provider the operator lists (`FERRUMDECK_PROVIDER_MODELS`), and never for a provider
whose default endpoint is on the worker's own machine or network: such a model is
reachable only through a catalogue entry that names its `api_base`, the operator's
decision.

The gateway asks when an agent is registered (422) and again when a run of it is claimed,
so an agent whose model the operator has since withdrawn fails its next run with the
reason instead of running on.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.contract.model_catalog import PROVIDER_MODEL, ModelCatalog

# LiteLLM providers that, given no `api_base`, call a server on localhost (or whatever
# the worker's environment points them at): a tenant must not choose them by name.
LOCAL_DEFAULT_PROVIDERS = frozenset(
    {
        "a2a",
        "docker_model_runner",
        "hosted_vllm",
        "langflow",
        "langgraph",
        "lemonade",
        "llamafile",
        "lm_studio",
        "ollama",
        "ollama_chat",
        "oobabooga",
        "openai_like",
        "custom_openai",
        "triton",
        "vllm",
        "xinference",
    }
)


@dataclass(frozen=True)
class ModelAccess:
    catalog: ModelCatalog
    providers: frozenset[str]
    """Providers whose plain model strings any project may use."""

    def refusal(self, model: str, project: str) -> str | None:
        """Why agents of `project` may not use `model`, saying how to allow it; None
        when they may."""
        entry = self.catalog.entries.get(model)
        if entry is not None and entry.offered_to(project):
            return None
        if entry is None and PROVIDER_MODEL.match(model):
            provider = model.split("/", 1)[0]
            if provider in LOCAL_DEFAULT_PROVIDERS:
                return (
                    f"model {model!r}: provider {provider!r} defaults to a server on the "
                    "worker's own machine, so it is usable only through an entry of the "
                    "models file (FERRUMDECK_MODELS) that names its api_base"
                )
            if provider in self.providers:
                return None
            return (
                f"model {model!r}: provider {provider!r} is not allowed; an operator allows "
                f"it with FERRUMDECK_PROVIDER_MODELS={provider} or adds the model to the "
                "models file (FERRUMDECK_MODELS)"
            )
        offered = ", ".join(self.catalog.names(project)) or "none configured"
        text = f"unknown model {model!r}: use a configured model ({offered})"
        if self.providers:
            allowed = ", ".join(sorted(self.providers))
            text += f" or 'provider/model' for an allowed provider ({allowed})"
        return text

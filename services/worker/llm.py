"""The LiteLLM adapter: one chat completion, with usage and cost.

Cost comes from the operator's configured prices when the models file gives them, else
from LiteLLM's bundled price map (read locally: `LITELLM_LOCAL_MODEL_COST_MAP`, set by
the package, `services/worker/__init__.py`, so no network fetch at import). A model
neither knows has cost `None` — unknown, never 0. LiteLLM prices every reply itself as
it makes the call, so configured prices are passed to it (its failing path for a model
it has no price for is a sixth of a call's CPU) and its figure is read back rather than
computed a second time.

A call that fails for a reason that passes (rate limit, overload, a provider's 5xx, a
lost connection, a timeout) is made again with backoff (`retry.Backoff`), within the
run's time budget; anything else (a bad key, a bad request, a prompt too long, content
refused) would fail the same way again, so it fails at once with the provider's message.
A missing or refused credential is such a failure even where LiteLLM reports it as a
passing one (an OpenAI model with no key comes as a 500 `InternalServerError`, a Gemini
one as an `APIConnectionError`): waiting brings no key.
LiteLLM's own retries stay off (`num_retries=0`): they know neither the budget nor the
lease, and their waits would hide in one long call.

A call whose tokens someone follows is made streamed (`tokens`): each text delta goes to
the sink as it arrives, usage comes in the stream's last chunk (`include_usage`), and the
reply is put together by LiteLLM's own chunk builder, tool calls included, so the step
records what an unstreamed call would have returned.
"""

from __future__ import annotations

import re
import time
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Protocol

import litellm
from litellm import exceptions as provider

from services.contract.model_catalog import ModelCatalog, ModelCatalogError, ResolvedModel
from services.contract.runs import ModelParams, Usage
from services.worker import metrics
from services.worker.model_clients import ModelClients
from services.worker.provider_errors import provider_message
from services.worker.retry import Backoff, retry_after_seconds

litellm.suppress_debug_info = True

# What LiteLLM raises for failures that pass. Its connection errors come as
# InternalServerError, and Timeout covers 408 and 504 as well as its own timeouts.
_TRANSIENT: tuple[type[Exception], ...] = (
    provider.RateLimitError,
    provider.APIConnectionError,
    provider.Timeout,
    provider.InternalServerError,
    provider.ServiceUnavailableError,
    provider.BadGatewayError,
)
# Statuses LiteLLM has no class for but that mean "later" (529: Anthropic is overloaded).
_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504, 529})
_CREDENTIALS_REFUSED: tuple[type[Exception], ...] = (
    provider.AuthenticationError,
    provider.PermissionDeniedError,
)
# How providers' SDKs say no key was given before any request was made.
_NO_CREDENTIALS = re.compile(
    r"missing credentials|missing [\w ]{0,40}api[ _-]?key"
    r"|api[ _-]?key (?:client option )?must be set"
    r"|no api[ _-]?key",
    re.IGNORECASE,
)


class TokenSink(Protocol):
    """Where a streamed call's text deltas go as they arrive (`token_stream`)."""

    def write(self, delta: str) -> None: ...

    def restart(self) -> None:
        """The call is made again from the start."""


class LLMError(Exception):
    """The model call failed; the message is the provider's, for the operator to read."""


@dataclass(frozen=True)
class CallPlan:
    """What a call will cost at most, for the gateway's budget check before it is made."""

    prompt_tokens: int
    max_output_tokens: int | None
    input_cost_per_token: float | None
    output_cost_per_token: float | None


@dataclass(frozen=True)
class LLMReply:
    message: dict[str, Any]
    usage: Usage
    model: str
    seconds: float


def transient(exc: Exception) -> bool:
    """Whether the same call may well succeed a little later."""
    if credentials_missing_or_refused(exc):
        return False
    if isinstance(exc, _TRANSIENT):
        return True
    return getattr(exc, "status_code", None) in _TRANSIENT_STATUS


def credentials_missing_or_refused(exc: Exception) -> bool:
    """The provider refused the key (401/403), or there was no key to send."""
    if isinstance(exc, _CREDENTIALS_REFUSED):
        return True
    if getattr(exc, "status_code", None) in (401, 403):
        return True
    return bool(_NO_CREDENTIALS.search(str(exc)))


class LLM:
    def __init__(self, catalog: ModelCatalog, timeout_seconds: float, backoff: Backoff) -> None:
        self._catalog = catalog
        self._timeout = timeout_seconds
        self._backoff = backoff
        self._clients = ModelClients()

    async def aclose(self) -> None:
        await self._clients.aclose()

    def plan(
        self,
        model: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        params: ModelParams,
        *,
        count_prompt: bool,
    ) -> CallPlan:
        """`count_prompt`: whether the budget needs the prompt's size
        (`budget.reads_prompt_size`); when not, `prompt_tokens` is 0."""
        resolved = self._resolve(model)
        prompt_tokens = (
            litellm.token_counter(
                model=resolved.model,
                messages=messages,
                tools=tools or None,  # type: ignore[arg-type]  # OpenAI tool dicts, as LiteLLM sends them
            )
            if count_prompt
            else 0
        )
        info = _model_info(resolved.model)
        max_output = params.max_tokens or info.get("max_output_tokens")
        if resolved.price is not None:
            input_cost: float | None = resolved.price.input_per_token
            output_cost: float | None = resolved.price.output_per_token
        else:
            input_cost = info.get("input_cost_per_token")
            output_cost = info.get("output_cost_per_token")
        return CallPlan(prompt_tokens, max_output, input_cost, output_cost)

    def _resolve(self, model: str) -> ResolvedModel:
        try:
            return self._catalog.resolve(model)
        except ModelCatalogError as exc:
            raise LLMError(str(exc)) from exc

    async def complete(
        self,
        model: str,
        messages: list[dict[str, Any]],
        params: ModelParams,
        *,
        tools: list[dict[str, Any]],
        max_output_tokens: int | None,
        deadline: float | None = None,
        tokens: TokenSink | None = None,
    ) -> LLMReply:
        """The model's reply; transient failures are retried until `deadline` (on the
        `time.monotonic` clock: the end of the run's time budget), if there is one.
        With `tokens` the call is streamed into it."""
        resolved = self._resolve(model)
        call_params = params.model_dump(exclude_none=True)
        if max_output_tokens is not None:
            call_params["max_tokens"] = max_output_tokens
        if tools:
            call_params["tools"] = tools
        if resolved.price is not None:
            call_params["input_cost_per_token"] = resolved.price.input_per_token
            call_params["output_cost_per_token"] = resolved.price.output_per_token
        response, seconds = await self._call(
            model, resolved, messages, call_params, deadline, tokens
        )
        prompt = int(getattr(response.usage, "prompt_tokens", 0) or 0)
        completion = int(getattr(response.usage, "completion_tokens", 0) or 0)
        if resolved.price is not None:
            cost: float | None = resolved.price.cost(prompt, completion)
        else:
            cost = _litellm_cost(response)
        choice = response.choices[0]
        message = choice.message.model_dump(exclude_none=True)
        usage = Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            cost_usd=cost,
        )
        metrics.llm_call(model, seconds, usage)
        return LLMReply(
            message={"role": "assistant", "content": message.get("content")}
            | ({"tool_calls": message["tool_calls"]} if message.get("tool_calls") else {}),
            usage=usage,
            model=resolved.model,
            seconds=seconds,
        )

    async def _call(
        self,
        model: str,
        resolved: ResolvedModel,
        messages: list[dict[str, Any]],
        call_params: dict[str, Any],
        deadline: float | None,
        tokens: TokenSink | None,
    ) -> tuple[Any, float]:
        """The response of the first attempt that succeeds, and how long that one took."""
        attempt = 0
        while True:
            started = time.perf_counter()
            if tokens is not None and attempt > 0:
                tokens.restart()
            try:
                response = await litellm.acompletion(
                    model=resolved.model,
                    messages=messages,
                    timeout=self._timeout,
                    num_retries=0,
                    **self._clients.call_kwargs(resolved),
                    **call_params,
                    **(_STREAMED if tokens is not None else {}),
                )
                if tokens is not None:
                    response = await _gathered(
                        response, messages, tokens, price=resolved.price is None
                    )
            except Exception as exc:
                metrics.llm_call(model, time.perf_counter() - started, None)
                failure = provider_message(exc)
                attempt += 1
                if transient(exc) and await self._backoff.wait(
                    attempt,
                    kind="llm",
                    deadline=deadline,
                    failure=failure,
                    retry_after=_retry_after(exc),
                ):
                    continue
                if attempt > 1:
                    failure = f"{failure} (after {attempt} attempts)"
                raise LLMError(failure) from exc
            return response, time.perf_counter() - started


_STREAMED: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}}


async def _gathered(
    stream: Any, messages: list[dict[str, Any]], tokens: TokenSink, *, price: bool
) -> Any:
    """The whole reply of a streamed call, its text deltas written to `tokens` as they
    come; with `price`, priced by LiteLLM as an unstreamed reply is (the chunk builder
    does not)."""
    chunks = []
    async for chunk in stream:
        chunks.append(chunk)
        if chunk.choices and (delta := chunk.choices[0].delta.content):
            tokens.write(delta)
    response = litellm.stream_chunk_builder(chunks, messages=messages)
    if response is None:
        raise LLMError("the model's stream ended without a reply")
    if price:
        with suppress(Exception):  # a model LiteLLM has no price for: the cost is unknown
            response._hidden_params["response_cost"] = litellm.completion_cost(response)
    return response


def _retry_after(exc: Exception) -> float | None:
    headers = getattr(exc, "litellm_response_headers", None)
    if headers is None:
        headers = getattr(getattr(exc, "response", None), "headers", None)
    return retry_after_seconds(headers)


def _model_info(model: str) -> dict[str, Any]:
    """LiteLLM's knowledge of a model: limits and prices, or nothing for unmapped ones."""
    # get_model_info raises a bare Exception subclass for unmapped models.
    try:
        info: dict[str, Any] = dict(litellm.get_model_info(model))
    except Exception:
        return {}
    return {k: v for k, v in info.items() if v is not None}


def _litellm_cost(response: Any) -> float | None:
    """What LiteLLM priced the reply at as it made the call; `None` when its price map
    has no price for the model."""
    cost = getattr(response, "_hidden_params", {}).get("response_cost")
    return float(cost) if isinstance(cost, int | float) else None

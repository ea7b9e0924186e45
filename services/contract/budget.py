"""What a run's budget still allows: computed by the worker before each model call.

The gateway hands the worker what the run has spent so far with the claim grant and with
every step's ack (`Spent`). Only the holder of the run's lease writes its usage (every
write is fenced by the lease epoch), so between two answers the figures change only by
what that worker reports itself: they are exact, and asking the gateway before every
model call would cost a round trip for nothing. The gateway remains the authority: it
checks what was really spent when it records each step, and ends the run if it is over.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, Field

from services.contract.runs import Budget, Usage


class Spent(BaseModel):
    """A run's usage and age, as of the answer that carries it."""

    usage: Usage
    elapsed_seconds: float = Field(ge=0, description="Since the run started, by the database.")


@dataclass(frozen=True)
class Allowance:
    """How much the next model call may generate (None: no limit), or why it may not be
    made at all (`breach`: the run ends `budget_exceeded` with this as its error)."""

    max_output_tokens: int | None
    breach: str | None = None


def steps_or_time_breach(budget: Budget, seq: int, elapsed_seconds: float) -> str | None:
    """Why step `seq` may not start, after `elapsed_seconds` of the run, if it may not.
    `seq` counts what the step budget counts: the run's calls, not its notes (a worker's
    word that a tool is missing must not cost the run a step)."""
    if seq > budget.max_steps:
        return f"step budget exceeded: max_steps is {budget.max_steps}"
    if budget.max_seconds is not None and elapsed_seconds > budget.max_seconds:
        return f"time budget exceeded: {elapsed_seconds:.1f}s > max_seconds {budget.max_seconds}"
    return None


def reads_prompt_size(budget: Budget) -> bool:
    """Whether `model_call_allowance` needs the next prompt's token count: only a token
    or cost limit reads it, and counting tokenises the whole conversation."""
    return budget.max_tokens is not None or budget.max_cost_usd is not None


def model_call_allowance(
    budget: Budget,
    used: Usage,
    *,
    seq: int,
    elapsed_seconds: float,
    prompt_tokens: int,
    max_output_tokens: int | None = None,
    input_cost_per_token: float | None = None,
    output_cost_per_token: float | None = None,
) -> Allowance:
    """Allow model call `seq` with its output capped so that its worst case fits what is
    left, given the estimate of its prompt and the model's prices; or refuse it.

    Rather than refusing a call whose theoretical maximum output exceeds the budget, the
    cap is the largest that still fits (tokens left after the prompt, and what the money
    left buys at the output price): spend can only overshoot by the prompt estimate's
    error. A cost budget cannot be enforced without prices, so such a call is refused.
    """
    common = steps_or_time_breach(budget, seq, elapsed_seconds)
    if common is not None:
        return Allowance(None, common)
    limit = max_output_tokens
    if budget.max_tokens is not None:
        left = budget.max_tokens - used.prompt_tokens - used.completion_tokens - prompt_tokens
        if left < 1:
            return Allowance(
                None,
                f"token budget exceeded: max_tokens is {budget.max_tokens} and the next call's "
                f"prompt alone needs ~{prompt_tokens} of what is left",
            )
        limit = left if limit is None else min(limit, left)
    if budget.max_cost_usd is not None:
        spent = used.cost_usd
        if spent is None or input_cost_per_token is None or output_cost_per_token is None:
            return Allowance(
                None,
                f"cost budget cannot be enforced: max_cost_usd is {budget.max_cost_usd} "
                "but this model's price is unknown",
            )
        left_usd = budget.max_cost_usd - spent - prompt_tokens * input_cost_per_token
        affordable = int(left_usd / output_cost_per_token) if output_cost_per_token > 0 else None
        if left_usd <= 0 or (affordable is not None and affordable < 1):
            return Allowance(
                None,
                f"cost budget exceeded: max_cost_usd is {budget.max_cost_usd}, "
                f"${spent:.6f} spent, and the next call cannot fit",
            )
        if affordable is not None:
            limit = affordable if limit is None else min(limit, affordable)
    return Allowance(limit)


def overspent(budget: Budget, spent: Spent) -> str | None:
    """Why a run that has `spent` this is over its budget, if it is: what the gateway
    checks when it records a step, with what was really used."""
    usage = spent.usage
    tokens = usage.prompt_tokens + usage.completion_tokens
    if budget.max_tokens is not None and tokens > budget.max_tokens:
        return f"token budget exceeded: {tokens} tokens used, max_tokens is {budget.max_tokens}"
    cost = usage.cost_usd
    if budget.max_cost_usd is not None and cost is not None and cost > budget.max_cost_usd:
        return f"cost budget exceeded: ${cost:.6f} spent, max_cost_usd is {budget.max_cost_usd}"
    elapsed = spent.elapsed_seconds
    if budget.max_seconds is not None and elapsed > budget.max_seconds:
        return f"time budget exceeded: {elapsed:.1f}s, max_seconds is {budget.max_seconds}"
    return None

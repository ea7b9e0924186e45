"""The budget checks (`contract.budget`): the worker's before each model call, and the
gateway's on what a recorded step really spent."""

from __future__ import annotations

from typing import Any

import pytest

from services.contract.budget import (
    Allowance,
    Spent,
    model_call_allowance,
    overspent,
    steps_or_time_breach,
)
from services.contract.runs import Budget, Usage

PRICES: dict[str, Any] = {"input_cost_per_token": 0.0001, "output_cost_per_token": 0.0002}


def used(prompt: int = 0, completion: int = 0, cost: float | None = 0.0) -> Usage:
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cost_usd=cost,
    )


def allowance(
    budget: Budget,
    spent: Usage | None = None,
    *,
    seq: int = 1,
    elapsed: float = 0.0,
    prompt_tokens: int = 10,
    **call: Any,
) -> Allowance:
    return model_call_allowance(
        budget,
        spent or used(),
        seq=seq,
        elapsed_seconds=elapsed,
        prompt_tokens=prompt_tokens,
        **call,
    )


def test_without_limits_the_call_keeps_the_models_own_maximum() -> None:
    assert allowance(Budget()) == Allowance(max_output_tokens=None)
    assert allowance(Budget(), max_output_tokens=4096) == Allowance(max_output_tokens=4096)


def test_the_output_is_capped_to_the_tokens_left_after_the_prompt() -> None:
    budget = Budget(max_tokens=100)
    assert allowance(budget, prompt_tokens=30) == Allowance(70)
    assert allowance(budget, prompt_tokens=30, max_output_tokens=20) == Allowance(20)
    assert allowance(budget, used(20, 10), prompt_tokens=30) == Allowance(40)


def test_a_prompt_that_alone_fills_the_token_budget_is_a_breach() -> None:
    found = allowance(Budget(max_tokens=100), used(40, 40), prompt_tokens=25)
    assert found == Allowance(
        None,
        "token budget exceeded: max_tokens is 100 and the next call's prompt alone needs "
        "~25 of what is left",
    )
    # One token left for the output is still a call.
    assert allowance(Budget(max_tokens=100), used(40, 40), prompt_tokens=19) == Allowance(1)


def test_the_output_is_capped_to_what_the_money_left_buys() -> None:
    budget = Budget(max_cost_usd=0.01)
    # $0.01 less 10 prompt tokens at $0.0001 leaves $0.009: 45 tokens at $0.0002.
    assert allowance(budget, prompt_tokens=10, **PRICES) == Allowance(45)
    assert allowance(budget, prompt_tokens=10, max_output_tokens=30, **PRICES) == Allowance(30)
    assert allowance(budget, used(cost=0.005), prompt_tokens=10, **PRICES) == Allowance(20)


def test_the_smaller_of_the_token_and_cost_caps_applies() -> None:
    budget = Budget(max_tokens=40, max_cost_usd=0.01)
    assert allowance(budget, prompt_tokens=10, **PRICES) == Allowance(30)
    assert allowance(Budget(max_tokens=1000, max_cost_usd=0.01), **PRICES) == Allowance(45)


def test_a_call_the_money_left_cannot_pay_is_a_breach() -> None:
    found = allowance(Budget(max_cost_usd=0.01), prompt_tokens=100, **PRICES)
    assert found == Allowance(
        None,
        "cost budget exceeded: max_cost_usd is 0.01, $0.000000 spent, and the next call cannot fit",
    )
    over = allowance(Budget(max_cost_usd=0.01), used(cost=0.0099), prompt_tokens=1, **PRICES)
    assert over.breach is not None
    assert "$0.009900 spent" in over.breach


def test_free_output_is_not_capped_by_money_but_a_spent_budget_still_refuses() -> None:
    free: dict[str, Any] = {"input_cost_per_token": 0.0001, "output_cost_per_token": 0.0}
    assert allowance(Budget(max_cost_usd=0.01), prompt_tokens=10, **free) == Allowance(None)
    spent = allowance(Budget(max_cost_usd=0.01), used(cost=0.01), prompt_tokens=10, **free)
    assert spent.breach is not None


@pytest.mark.parametrize(
    ("spent", "prices"),
    [
        (used(), {}),
        (used(), {"input_cost_per_token": 0.0001}),
        (used(), {"output_cost_per_token": 0.0002}),
        (used(cost=None), PRICES),  # an earlier step had no price: the spend is unknown
    ],
)
def test_a_cost_budget_cannot_be_enforced_without_prices(
    spent: Usage, prices: dict[str, Any]
) -> None:
    found = allowance(Budget(max_cost_usd=1.0), spent, **prices)
    assert found == Allowance(
        None,
        "cost budget cannot be enforced: max_cost_usd is 1.0 but this model's price is unknown",
    )


def test_unknown_prices_do_not_matter_without_a_cost_budget() -> None:
    assert allowance(Budget(max_tokens=100), used(cost=None)) == Allowance(90)


def test_the_step_budget_allows_steps_up_to_max_steps() -> None:
    budget = Budget(max_steps=3)
    assert allowance(budget, seq=3).breach is None
    assert allowance(budget, seq=4) == Allowance(None, "step budget exceeded: max_steps is 3")


def test_the_time_budget_is_breached_once_the_run_is_older() -> None:
    budget = Budget(max_seconds=0.3)
    assert allowance(budget, elapsed=0.3).breach is None
    assert allowance(budget, elapsed=0.46) == Allowance(
        None, "time budget exceeded: 0.5s > max_seconds 0.3"
    )


def test_steps_and_time_are_checked_before_tokens_and_money() -> None:
    budget = Budget(max_steps=1, max_tokens=10, max_cost_usd=1.0)
    found = allowance(budget, seq=2, prompt_tokens=50)
    assert found.breach == "step budget exceeded: max_steps is 1"


def test_tool_calls_share_the_step_and_time_check() -> None:
    budget = Budget(max_steps=2, max_seconds=10)
    assert steps_or_time_breach(budget, 2, 9.9) is None
    assert steps_or_time_breach(budget, 3, 0.0) == "step budget exceeded: max_steps is 2"
    assert steps_or_time_breach(budget, 1, 12.0) == "time budget exceeded: 12.0s > max_seconds 10.0"


@pytest.mark.parametrize(
    ("spent", "breach"),
    [
        (Spent(usage=used(60, 40), elapsed_seconds=1), None),
        (
            Spent(usage=used(60, 41), elapsed_seconds=1),
            "token budget exceeded: 101 tokens used, max_tokens is 100",
        ),
        (
            Spent(usage=used(1, 1, cost=0.02), elapsed_seconds=1),
            "cost budget exceeded: $0.020000 spent, max_cost_usd is 0.01",
        ),
        (Spent(usage=used(1, 1, cost=None), elapsed_seconds=1), None),
        (
            Spent(usage=used(1, 1), elapsed_seconds=12),
            "time budget exceeded: 12.0s, max_seconds is 10.0",
        ),
    ],
)
def test_what_was_really_spent_is_checked_against_every_limit(
    spent: Spent, breach: str | None
) -> None:
    """Reaching a limit exactly is within it; an unknown cost cannot breach a cost limit
    (the allowance already refused to spend without prices)."""
    budget = Budget(max_tokens=100, max_cost_usd=0.01, max_seconds=10.0)
    assert overspent(budget, spent) == breach

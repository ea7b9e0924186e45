"""The worker's Prometheus metrics.

Labels stay bounded: models are the agents' configured model names, tools only the
names in this worker's catalogue (anything a model invents is `unknown`), outcomes and
kinds come from fixed sets. Run ids never become labels; they are in the logs.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from services.contract.runs import Usage

RUNS_IN_FLIGHT = Gauge("ferrumdeck_worker_runs_in_flight", "Jobs this worker is handling now.")
LOOP_LAG = Gauge(
    "ferrumdeck_worker_loop_lag_seconds",
    "How late the event loop runs what is due, smoothed; above the limit, no new jobs are read.",
)
READS_DEFERRED = Counter(
    "ferrumdeck_worker_reads_deferred_total",
    "Times the worker waited before reading more jobs: `full` (max_in_flight reached), "
    "`busy` (its event loop is behind) or `claiming` (enough jobs read wait for their "
    "claim).",
    ["reason"],
)
CLAIMS = Counter(
    "ferrumdeck_worker_claims_total",
    "Claim attempts: `granted`, `refused` (finished, parked or leased elsewhere), or "
    "`retried` (the gateway could not be reached or failed).",
    ["outcome"],
)
STEPS = Counter(
    "ferrumdeck_worker_steps_total",
    "Steps this worker settled, by kind (`llm_call`, `tool_call`) and outcome.",
    ["kind", "outcome"],
)
LLM_DURATION = Histogram(
    "ferrumdeck_llm_request_duration_seconds",
    "Time for one model call, failed ones included.",
    ["model"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160),
)
LLM_TOKENS = Counter(
    "ferrumdeck_llm_tokens_total",
    "Tokens used, by `type` (`prompt`, `completion`).",
    ["model", "type"],
)
LLM_COST = Counter(
    "ferrumdeck_llm_cost_usd_total",
    "Spend on model calls whose price is known (unpriced calls add nothing here).",
    ["model"],
)
TOOL_CALLS = Counter(
    "ferrumdeck_tool_calls_total",
    "Tool calls the model asked for, by the gateway's verdict (`execute`, `denied`, `parked`).",
    ["tool", "verdict"],
)
TOOL_DURATION = Histogram(
    "ferrumdeck_tool_call_duration_seconds", "Time for one executed tool call.", ["tool"]
)
RETRIES = Counter(
    "ferrumdeck_worker_retries_total",
    "Calls made again after a transient failure, by `kind` (`llm`, `tool`).",
    ["kind"],
)
DEAD_LETTERS = Counter(
    "ferrumdeck_worker_dead_letters_total",
    "Stream entries set aside in the dead-letter stream, by `reason` (`malformed`: not a "
    "readable job; `max_deliveries`: delivered too often without finishing).",
    ["reason"],
)


def claim(outcome: str) -> None:
    CLAIMS.labels(outcome=outcome).inc()


def step(kind: str, outcome: str) -> None:
    STEPS.labels(kind=kind, outcome=outcome).inc()


def llm_call(model: str, seconds: float, usage: Usage | None) -> None:
    LLM_DURATION.labels(model=model).observe(seconds)
    if usage is None:
        return
    LLM_TOKENS.labels(model=model, type="prompt").inc(usage.prompt_tokens)
    LLM_TOKENS.labels(model=model, type="completion").inc(usage.completion_tokens)
    if usage.cost_usd is not None:
        LLM_COST.labels(model=model).inc(usage.cost_usd)


def tool_verdict(tool: str, verdict: str) -> None:
    TOOL_CALLS.labels(tool=tool, verdict=verdict).inc()


def retry(kind: str) -> None:
    RETRIES.labels(kind=kind).inc()


def dead_letter(reason: str) -> None:
    DEAD_LETTERS.labels(reason=reason).inc()

"""The gateway's Prometheus metrics: counters bumped where things happen, gauges the
`/metrics` route (`routes/metrics.py`) fills when scraped.

Request metrics are labelled by route *template* (`/v1/runs/<uuid:run_id>`), never the
raw path, so a scan of random URLs cannot create series. Queue, approval, outbox and run
gauges are read from PostgreSQL and Redis when scraped rather than kept up to date by
every writer: they are shared state, so every gateway reports the same values (take
`max`, not `sum`, across gateways). `/metrics` sits outside authentication, like
`/healthz`; expose it only where Prometheus can reach it.
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram
from quart import Quart, Response, g, request

from services.contract.runs import RunStatus

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

HTTP_REQUESTS = Counter(
    "ferrumdeck_http_requests_total",
    "HTTP requests answered, by route template, method and status code.",
    ["route", "method", "status"],
)
HTTP_DURATION = Histogram(
    "ferrumdeck_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template and method.",
    ["route", "method"],
)
AUTH_FAILURES = Counter(
    "ferrumdeck_auth_failures_total",
    "Requests refused for their API key: `missing` (no or malformed bearer key), "
    "`rejected` (unknown, revoked, wrong plane) or `forbidden` (role not allowed).",
    ["reason"],
)
RUNS_CREATED = Counter(
    "ferrumdeck_runs_created_total", "Runs created (idempotent replays excluded)."
)
RUNS_FINISHED = Counter(
    "ferrumdeck_runs_finished_total", "Runs that reached a terminal status.", ["status"]
)
RUN_STREAMS = Gauge(
    "ferrumdeck_run_streams",
    "Run streams open (`GET /v1/runs/{id}/stream`): each holds a connection to the client "
    "and one to Redis; the gateway refuses more than `max_run_streams`.",
)
RUN_WAITERS = Gauge(
    "ferrumdeck_run_waiters",
    "Requests holding their answer until a run settles (`Prefer: wait`, `?wait=`): each "
    "holds a connection, so watch it against the proxy's and the server's limits.",
)
QUEUE_LAG = Gauge(
    "ferrumdeck_queue_lag",
    "Jobs on the runs stream not yet delivered to any worker (NaN when Redis cannot tell).",
)
QUEUE_PENDING = Gauge(
    "ferrumdeck_queue_pending",
    "Jobs delivered to a worker and not yet acknowledged (being worked on, or orphaned).",
)
QUEUE_DEPTH = Gauge(
    "ferrumdeck_queue_depth", "Entries in the runs stream (XLEN), acknowledged ones included."
)
QUEUE_OLDEST_PENDING_AGE = Gauge(
    "ferrumdeck_queue_oldest_pending_age_seconds",
    "Age of the oldest unacknowledged job since it was published (0 when none).",
)
QUEUE_DEAD_LETTER = Gauge(
    "ferrumdeck_queue_dead_letter",
    "Jobs set aside after too many deliveries, waiting for an operator (the DLQ's length).",
)
STREAM_TRIMMED = Counter(
    "ferrumdeck_stream_trimmed_total",
    "Acknowledged entries this gateway trimmed from the runs stream.",
)
AUDIT_FORGED_EVENTS = Counter(
    "ferrumdeck_audit_forged_events_total",
    "Audit events the chainer found without a valid MAC: rows no gateway wrote. Alert on "
    "any increase; `GET /v1/audit/verify` names each one's seq.",
)
APPROVALS_PENDING = Gauge(
    "ferrumdeck_approvals_pending", "Tool calls waiting for a human decision."
)
OUTBOX_BACKLOG = Gauge(
    "ferrumdeck_outbox_backlog", "Jobs committed in PostgreSQL and not yet published to Redis."
)
RUNS = Gauge("ferrumdeck_runs", "Runs by current status.", ["status"])
SOURCE_UP = Gauge(
    "ferrumdeck_metrics_source_up",
    "Whether the last scrape could read a source (`postgres`, `redis`); its gauges are "
    "stale when 0.",
    ["source"],
)


_AUTH_REASONS = frozenset({"missing", "rejected", "forbidden"})


def auth_failed(reason: str) -> None:
    """An API key was refused: `missing`, `rejected` (unknown, revoked, wrong plane), or
    `forbidden` (its role may not use the route)."""
    AUTH_FAILURES.labels(reason=reason if reason in _AUTH_REASONS else "rejected").inc()


def run_created() -> None:
    RUNS_CREATED.inc()


def run_finished(status: RunStatus) -> None:
    RUNS_FINISHED.labels(status=status.value).inc()


def audit_forged_event() -> None:
    AUDIT_FORGED_EVENTS.inc()


def stream_trimmed(entries: int) -> None:
    STREAM_TRIMMED.inc(entries)


def instrument(app: Quart) -> None:
    """Count and time every request, labelled by the route that answered it."""

    @app.before_request
    async def _start_clock() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    async def _observe(response: Response) -> Response:
        started: float | None = g.get("metrics_started")
        rule = request.url_rule
        route = rule.rule if rule is not None else "unmatched"
        method = request.method if request.method in _METHODS else "other"
        HTTP_REQUESTS.labels(route=route, method=method, status=str(response.status_code)).inc()
        if started is not None:
            HTTP_DURATION.labels(route=route, method=method).observe(time.perf_counter() - started)
        return response

"""`/metrics`: Prometheus exposition, with the shared-state gauges read at scrape time.

Outside key authentication, like `/healthz`: Prometheus has no API key. Its figures are
platform-wide (every project's runs, the queue, worker names), so where more than
Prometheus can reach the gateway, `FERRUMDECK_METRICS_TOKEN` makes it require that bearer
token (compared in constant time). A source that cannot be read leaves its gauges stale
and says so in `ferrumdeck_metrics_source_up`, so the scrape itself never fails."""

from __future__ import annotations

import hmac
import logging

import asyncpg
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from quart import Blueprint, Response, request
from quart_schema import hide
from redis.exceptions import RedisError

from services.contract.runs import RunStatus
from services.gateway import metrics as m
from services.gateway.errors import Unauthorized
from services.gateway.queue_stats import queue_stats
from services.gateway.runtime import runtime
from services.gateway.store.gauges import read_counts

log = logging.getLogger(__name__)

blueprint = Blueprint("metrics", __name__)


async def _read_postgres() -> None:
    async with runtime().pool.acquire(timeout=2) as conn:
        counts = await read_counts(conn)
    m.APPROVALS_PENDING.set(counts.approvals_pending)
    m.OUTBOX_BACKLOG.set(counts.outbox_backlog)
    for status in RunStatus:
        m.RUNS.labels(status=status.value).set(counts.runs_by_status.get(status.value, 0))


async def _read_redis() -> None:
    res = runtime()
    stats = await queue_stats(res.redis, res.settings.streams)
    m.QUEUE_DEPTH.set(stats.depth or 0)
    m.QUEUE_PENDING.set(stats.pending or 0)
    m.QUEUE_LAG.set(float("nan") if stats.lag is None else stats.lag)
    m.QUEUE_OLDEST_PENDING_AGE.set(stats.oldest_pending_seconds or 0.0)
    m.QUEUE_DEAD_LETTER.set(stats.dead_letter or 0)


def _check_token() -> None:
    token = runtime().settings.metrics_token
    if token is None:
        return
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.get_secret_value().encode()
    ):
        raise Unauthorized("send the metrics token as 'Authorization: Bearer …'")


@blueprint.get("/metrics")
@hide
async def metrics() -> Response:
    _check_token()
    try:
        await _read_postgres()
        m.SOURCE_UP.labels(source="postgres").set(1)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
        log.warning("metrics: cannot read PostgreSQL: %s", exc)
        m.SOURCE_UP.labels(source="postgres").set(0)
    try:
        await _read_redis()
        m.SOURCE_UP.labels(source="redis").set(1)
    except (RedisError, OSError) as exc:
        log.warning("metrics: cannot read Redis: %s", exc)
        m.SOURCE_UP.labels(source="redis").set(0)
    return Response(generate_latest(), content_type=CONTENT_TYPE_LATEST)

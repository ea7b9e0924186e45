"""Webhooks and their deliveries in PostgreSQL (migration 0020).

Deliveries are created by a trigger with the run's status change; here they are taken
for sending (`take_due`: a lease, by moving `next_attempt_at` past the attempt's
timeout, so a gateway that dies mid-send leaves the delivery to another), settled after
each attempt, listed, and sent again on request.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

import asyncpg

from services.contract.ids import uuid7
from services.contract.webhooks import (
    Delivery,
    DeliveryStatus,
    Webhook,
    WebhookCreate,
    WebhookEvent,
)
from services.gateway.audit import Actor, record
from services.gateway.errors import NotFound

_WEBHOOK = "id, url, events, created_at"
_DELIVERY = """d.seq, d.id, d.event, d.run_id, d.status, d.attempts, d.next_attempt_at,
    d.last_attempt_at, d.last_status_code, d.last_error, d.created_at, d.delivered_at"""


def _webhook(row: asyncpg.Record) -> Webhook:
    return Webhook(
        id=row["id"],
        url=row["url"],
        events=[WebhookEvent(e) for e in row["events"]],
        created_at=row["created_at"],
    )


def _delivery(row: asyncpg.Record) -> Delivery:
    return Delivery.model_validate(dict(row))


async def create(
    pool: asyncpg.Pool, project: str, body: WebhookCreate, secret: str, actor: Actor
) -> Webhook:
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            f"""INSERT INTO webhooks (id, project, url, events, secret)
                VALUES ($1, $2, $3, $4, $5) RETURNING {_WEBHOOK}""",
            uuid7(),
            project,
            str(body.url),
            [e.value for e in dict.fromkeys(body.events)],
            secret,
        )
        assert row is not None
        await record(
            conn,
            project,
            actor,
            "webhook.created",
            f"webhook:{row['id']}",
            {"url": row["url"], "events": list(row["events"])},
        )
    return _webhook(row)


async def list_webhooks(pool: asyncpg.Pool, project: str) -> list[Webhook]:
    rows = await pool.fetch(
        f"""SELECT {_WEBHOOK} FROM webhooks WHERE project = $1 AND deleted_at IS NULL
            ORDER BY id""",
        project,
    )
    return [_webhook(row) for row in rows]


async def delete(pool: asyncpg.Pool, project: str, webhook_id: uuid.UUID, actor: Actor) -> None:
    """Stops new deliveries and the pending ones; the delivery log stays."""
    async with pool.acquire() as conn, conn.transaction():
        deleted = await conn.fetchval(
            """UPDATE webhooks SET deleted_at = now()
                WHERE project = $1 AND id = $2 AND deleted_at IS NULL RETURNING id""",
            project,
            webhook_id,
        )
        if deleted is None:
            raise NotFound(f"no webhook {webhook_id}")
        await conn.execute(
            """UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL,
                      last_error = coalesce(last_error, 'webhook deleted')
                WHERE webhook_id = $1 AND status = 'pending'""",
            webhook_id,
        )
        await record(conn, project, actor, "webhook.deleted", f"webhook:{webhook_id}")


async def _own(
    conn: asyncpg.Pool | asyncpg.Connection, project: str, webhook_id: uuid.UUID
) -> None:
    found = await conn.fetchval(
        "SELECT 1 FROM webhooks WHERE project = $1 AND id = $2", project, webhook_id
    )
    if found is None:
        raise NotFound(f"no webhook {webhook_id}")


async def deliveries(
    pool: asyncpg.Pool, project: str, webhook_id: uuid.UUID, *, before: int | None, limit: int
) -> list[tuple[int, Delivery]]:
    """Newest first, with each one's position for the cursor."""
    await _own(pool, project, webhook_id)
    rows = await pool.fetch(
        f"""SELECT {_DELIVERY} FROM webhook_deliveries d
             WHERE d.webhook_id = $1 AND ($2::bigint IS NULL OR d.seq < $2)
             ORDER BY d.seq DESC LIMIT $3""",
        webhook_id,
        before,
        limit,
    )
    return [(row["seq"], _delivery(row)) for row in rows]


async def redeliver(
    pool: asyncpg.Pool, project: str, webhook_id: uuid.UUID, delivery_id: uuid.UUID, actor: Actor
) -> Delivery:
    """Send it again from the start of the retry schedule, whatever became of it."""
    async with pool.acquire() as conn, conn.transaction():
        await _own(conn, project, webhook_id)
        row = await conn.fetchrow(
            f"""UPDATE webhook_deliveries d
                   SET status = 'pending', attempts = 0, next_attempt_at = now()
                  FROM webhooks w
                 WHERE d.webhook_id = $1 AND d.id = $2 AND w.id = d.webhook_id
                   AND w.deleted_at IS NULL
             RETURNING {_DELIVERY}""",
            webhook_id,
            delivery_id,
        )
        if row is None:
            raise NotFound(f"no delivery {delivery_id} of a live webhook {webhook_id}")
        await record(
            conn,
            project,
            actor,
            "webhook.redelivered",
            f"webhook:{webhook_id}",
            {"delivery": str(delivery_id)},
        )
    return _delivery(row)


@dataclass(frozen=True)
class DueDelivery:
    id: uuid.UUID
    project: str
    event: WebhookEvent
    run_id: uuid.UUID
    attempts: int
    url: str
    secret: str


async def take_due(pool: asyncpg.Pool, limit: int, lease: timedelta) -> list[DueDelivery]:
    rows = await pool.fetch(
        """UPDATE webhook_deliveries d SET next_attempt_at = now() + $2::interval
             FROM (SELECT seq FROM webhook_deliveries
                    WHERE status = 'pending' AND next_attempt_at <= now()
                    ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) due,
                  webhooks w
            WHERE d.seq = due.seq AND w.id = d.webhook_id
        RETURNING d.id, d.project, d.event, d.run_id, d.attempts, w.url, w.secret""",
        limit,
        lease,
    )
    return [
        DueDelivery(
            id=row["id"],
            project=row["project"],
            event=WebhookEvent(row["event"]),
            run_id=row["run_id"],
            attempts=row["attempts"],
            url=row["url"],
            secret=row["secret"],
        )
        for row in rows
    ]


async def settle_attempt(
    pool: asyncpg.Pool,
    delivery_id: uuid.UUID,
    *,
    status_code: int | None,
    error: str | None,
    retry_in: timedelta | None,
) -> None:
    """Record an attempt: delivered on a 2xx, else due again after `retry_in`, or failed
    for good when the schedule is spent (`retry_in` None)."""
    delivered = error is None and status_code is not None and 200 <= status_code < 300
    if delivered:
        outcome = DeliveryStatus.DELIVERED
    else:
        outcome = DeliveryStatus.PENDING if retry_in is not None else DeliveryStatus.FAILED
    await pool.execute(
        """UPDATE webhook_deliveries
              SET attempts = attempts + 1, last_attempt_at = now(), status = $2,
                  last_status_code = $3, last_error = $4,
                  next_attempt_at = CASE WHEN $2 = 'pending' THEN now() + $5::interval END,
                  delivered_at = CASE WHEN $2 = 'delivered' THEN now() END
            WHERE id = $1 AND status = 'pending'""",
        delivery_id,
        outcome.value,
        status_code,
        error,
        retry_in,
    )

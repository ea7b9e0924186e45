"""Appending to the audit trail, linking the chain, and checking it.

`record` is called inside the transaction of the change it records, so an event exists
exactly when its change committed. It only inserts: appends never wait on each other.
The `AuditChainer` then links committed events into each project's keyed chain, one
chainer at a time across all gateways (an advisory lock), in the order it finds them.
A late-committing event is simply linked later; the chain order is the link order.

Each event is sealed (`services.contract.audit_mac`) by whoever appends it, under the key
its connection carries (`AuditedConnection`); the chainer checks each seal before it
links the event, and reports an event it did not make.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from quart import has_request_context

from services.contract.audit import (
    GENESIS,
    ActorKind,
    AuditEvent,
    ChainCheck,
    Verification,
    event_message_of,
    link_hash,
)
from services.contract.audit_checkpoint import Checkpoint, CheckpointError, CheckpointSigner
from services.contract.audit_keys import AuditKeys
from services.contract.audit_mac import EventSeal, Sealed
from services.gateway import metrics
from services.gateway.background import BackgroundLoop
from services.gateway.settings import GatewaySettings
from services.gateway.store.audit_trail import EVENT_COLUMNS, to_event
from services.telemetry import logs

log = logging.getLogger(__name__)

_CHAIN_LOCK = 0x46_44_41_55_44  # "FDAUD"
_BATCH = 1000


@dataclass(frozen=True)
class Actor:
    """Who did it: a key (by name, and id in the trail), a worker, or a system component."""

    name: str
    kind: ActorKind
    key_id: uuid.UUID | None = None

    @property
    def audited(self) -> str:
        return f"{self.name} ({self.key_id})" if self.key_id else self.name

    @classmethod
    def key(cls, key_id: uuid.UUID, name: str) -> Actor:
        return cls(name, ActorKind.KEY, key_id)

    @classmethod
    def worker(cls, worker_id: str | None, key_id: uuid.UUID | None = None) -> Actor:
        """A worker, by the key it authenticated with; the name it gives itself is a
        label, since any process holding the key can give any name."""
        return cls(worker_id or "unknown worker", ActorKind.WORKER, key_id)

    @classmethod
    def system(cls, component: str) -> Actor:
        return cls(component, ActorKind.SYSTEM)


# How every statement that appends events begins, `record` and the statements that append
# an event in the same statement as the change it records (a round trip saved on the
# hot paths: run creation, dispatch, claim, steps, a run's end).
APPEND = """INSERT INTO audit_events (project, actor, actor_kind, action, target, details,
                          request_id, created_at, mac_key_id, mac)"""


def seal_of(conn: asyncpg.Connection | asyncpg.Pool) -> EventSeal:
    """The seal `conn`'s events are appended under; a connection opened without the audit
    keys refuses to append (its events would read as forged to every verifier)."""
    seal = getattr(conn, "seal", None)
    if not isinstance(seal, EventSeal):
        raise RuntimeError(
            "this database connection cannot append audit events: open it with the audit "
            "keys (create_pool(..., seal=EventSeal(keys)))"
        )
    return seal


def seal(
    conn: asyncpg.Connection,
    project: str,
    actor: Actor,
    action: str,
    target: str,
    details: dict[str, Any],
    request: str | None,
) -> Sealed:
    """The time, key and MAC for an event a statement is about to append."""
    return seal_of(conn).seal(
        project=project,
        actor=actor.audited,
        actor_kind=actor.kind.value,
        action=action,
        target=target,
        details=details,
        request_id=request,
    )


def request_id() -> str | None:
    """The id the request's log lines carry (the caller's `X-Request-Id` when sane, else
    a fresh one), so an audit event and the request's logs join up; None outside one."""
    if not has_request_context():
        return None
    return logs.request_id.get()


async def record(
    conn: asyncpg.Connection,
    project: str,
    actor: Actor,
    action: str,
    target: str,
    details: dict[str, Any] | None = None,
) -> None:
    """Append one event; call it inside the transaction of the change it records."""
    details = details or {}
    rid = request_id()
    sealed = seal(conn, project, actor, action, target, details, rid)
    await conn.execute(
        f"{APPEND} VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        project,
        actor.audited,
        actor.kind.value,
        action,
        target,
        details,
        rid,
        sealed.created_at,
        sealed.key_id,
        sealed.mac,
    )


def chain_keys(settings: GatewaySettings) -> AuditKeys:
    """The configured keys; AuditKeyError (the gateway does not start) without one.

    A gateway once started without a key and linked under one that died with it: in a
    database other gateways share, every later verify of those chains then failed, so a
    forgotten setting looked like tampering. Failing closed names the setting instead."""
    return settings.audit_keys()


def checkpoint_signer(settings: GatewaySettings) -> CheckpointSigner | None:
    """The configured checkpoint key, if any; CheckpointError at start for a bad one,
    or for scheduled checkpoints without one."""
    if settings.audit_signing_key_file is None:
        if settings.audit_checkpoint_dir is not None:
            raise CheckpointError(
                "FERRUMDECK_AUDIT_CHECKPOINT_DIR needs FERRUMDECK_AUDIT_SIGNING_KEY_FILE"
            )
        return None
    return settings.checkpoint_signer()


@dataclass(frozen=True)
class _Linked:
    count: int
    highest_id: int
    sequence_at: int


async def _link(pool: asyncpg.Pool, keys: AuditKeys, batch: int, from_id: int) -> _Linked | None:
    """Link up to `batch` committed, unlinked events with ids from `from_id`; None when
    another chainer holds the lock (then nothing was looked at).

    An event whose MAC does not vouch for it is linked all the same, so the chain does not
    stall behind it and verify names its seq; the chainer says so in an
    `audit.forged_event` event of its own, its log and a metric."""
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _CHAIN_LOCK):
            return None
        where = await conn.fetchrow(
            """SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS sequence_at,
                      (SELECT from_id FROM audit_mac_switch) AS mac_from
                 FROM audit_events_id_seq"""
        )
        rows = await conn.fetch(
            f"""SELECT {EVENT_COLUMNS} FROM audit_events e
                  LEFT JOIN audit_chain c ON c.event_id = e.id
                 WHERE c.event_id IS NULL AND e.id >= $2 ORDER BY e.id LIMIT $1""",
            batch,
            from_id,
        )
        sealer = EventSeal(keys)
        heads: dict[str, tuple[int, str]] = {}
        links = []
        forged: list[tuple[AuditEvent, int, str]] = []
        for row in rows:
            event = to_event(row)
            if event.project not in heads:
                head = await conn.fetchrow(
                    """SELECT seq, hash FROM audit_chain WHERE project = $1
                        ORDER BY seq DESC LIMIT 1""",
                    event.project,
                )
                heads[event.project] = (head["seq"], head["hash"]) if head else (0, GENESIS)
            seq, prev = heads[event.project]
            required = where["mac_from"] is not None and event.id >= where["mac_from"]
            problem = sealer.problem(
                event.mac_key_id, event.mac, event_message_of(event), required=required
            )
            if problem is not None:
                forged.append((event, seq + 1, problem))
            digest = link_hash(keys, prev, event)
            links.append((event.id, event.project, seq + 1, prev, digest, keys.current_id))
            heads[event.project] = (seq + 1, digest)
        await conn.executemany(
            """INSERT INTO audit_chain (event_id, project, seq, prev_hash, hash, key_id)
               VALUES ($1, $2, $3, $4, $5, $6)""",
            links,
        )
        for event, seq, problem in forged:
            await _report_forged(conn, event, seq, problem)
    return _Linked(len(links), links[-1][0] if links else 0, where["sequence_at"])


async def _report_forged(conn: asyncpg.Connection, event: AuditEvent, seq: int, why: str) -> None:
    log.error(
        "audit event %s (%s, seq %s of %s) was not written by a gateway: %s",
        event.id,
        event.action,
        seq,
        event.project,
        why,
    )
    metrics.audit_forged_event()
    await record(
        conn,
        event.project,
        Actor.system("audit-chainer"),
        "audit.forged_event",
        f"audit:{event.id}",
        {"event_id": event.id, "seq": seq, "action": event.action, "reason": why},
    )


async def link_pending(pool: asyncpg.Pool, keys: AuditKeys, *, batch: int = 1000) -> int:
    """Link committed, unlinked events into their projects' chains; returns how many.
    Looks at the whole trail: what the chainer does now and then, and tests at will."""
    linked = await _link(pool, keys, batch, 0)
    return 0 if linked is None else linked.count


class _Window:
    """Where the chainer looks for unlinked events: from `low` on, not from the first.

    Finding them by an anti-join over the whole trail scanned both tables on every poll
    (250 ms at 300,000 events, twice a second). Events commit out of id order, though:
    an id is taken at insert, visible at commit. So `low` only passes ids the sequence
    had handed out `hold_seconds` ago — by then their transactions have ended, unless
    they ran that long — and every `sweep_every` polls the chainer looks at the whole
    trail again, for those. A late event is linked late, never lost.
    """

    def __init__(self, hold_seconds: float, sweep_every: int) -> None:
        self.low = 0
        self._hold_seconds = hold_seconds
        self._sweep_every = sweep_every
        self._polls = 0
        self._samples: deque[tuple[float, int]] = deque()

    def from_id(self) -> int:
        self._polls += 1
        return 0 if (self._polls - 1) % self._sweep_every == 0 else self.low

    def advance(self, linked: _Linked, batch: int) -> None:
        now = time.monotonic()
        self._samples.append((now, linked.sequence_at))
        settled = 0
        while self._samples and self._samples[0][0] <= now - self._hold_seconds:
            settled = self._samples.popleft()[1]
        if settled:
            self._samples.appendleft((now - self._hold_seconds, settled))
        ceiling = linked.highest_id + 1 if linked.count >= batch else settled + 1
        self.low = max(self.low, min(ceiling, settled + 1))


class AuditChainer(BackgroundLoop):
    name = "audit-chainer"

    def __init__(
        self,
        pool: asyncpg.Pool,
        keys: AuditKeys,
        *,
        poll_seconds: float,
        signer: CheckpointSigner | None = None,
        checkpoints: BackgroundLoop | None = None,
        hold_seconds: float = 5.0,
        sweep_every: int = 120,
    ) -> None:
        super().__init__()
        self._pool = pool
        self.keys = keys
        self.signer = signer
        self._checkpoints = checkpoints
        self._poll_seconds = poll_seconds
        self._window = _Window(hold_seconds, sweep_every)

    def start(self) -> None:
        """Linking, and the scheduled checkpoints of what was linked, when configured."""
        super().start()
        if self._checkpoints is not None:
            self._checkpoints.start()

    async def stop(self) -> None:
        if self._checkpoints is not None:
            await self._checkpoints.stop()
        await super().stop()

    async def step(self) -> float:
        try:
            linked = await _link(self._pool, self.keys, _BATCH, self._window.from_id())
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("audit chain linking failed, retrying: %s", exc)
            return self._poll_seconds
        if linked is None:
            return self._poll_seconds
        self._window.advance(linked, _BATCH)
        return 0 if linked.count >= _BATCH else self._poll_seconds


async def verify_project(
    pool: asyncpg.Pool,
    project: str,
    keys: AuditKeys | None,
    *,
    heads: Mapping[int, str] | None = None,
    since: Checkpoint | None = None,
) -> Verification:
    """Walk a project's chain in link order, streamed (constant memory however long),
    and report the first broken link or checkpointed head it lacks. `since`, a
    checkpoint already verified, starts the walk at its head instead of the beginning."""
    heads = dict(heads or {})
    if since is not None:
        heads[since.seq] = since.hash
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        mac_from = await conn.fetchval("SELECT from_id FROM audit_mac_switch")
        check = ChainCheck(keys, heads, mac_from=mac_from)
        start = 1
        if since is not None and await _resume_at(conn, check, since):
            start = since.seq + 1
        async for row in conn.cursor(
            f"""SELECT c.event_id AS linked_id, {EVENT_COLUMNS} FROM audit_chain c
                  LEFT JOIN audit_events e ON e.id = c.event_id
                 WHERE c.project = $1 AND c.seq >= $2 ORDER BY c.seq""",
            project,
            start,
        ):
            if row["id"] is None:
                check.gone(row["linked_id"], row["seq"])
                break
            if not check.add(to_event(row)):
                break
        unchained = await conn.fetchval(
            """SELECT count(*) FROM audit_events e LEFT JOIN audit_chain c ON c.event_id = e.id
                WHERE e.project = $1 AND c.event_id IS NULL""",
            project,
        )
    return check.result(len(heads)).model_copy(update={"unchained": unchained})


async def _resume_at(conn: asyncpg.Connection, check: ChainCheck, since: Checkpoint) -> bool:
    """Start from the checkpointed head when the chain still has it; when it does not,
    the walk from the beginning finds where it went (or that it was cut off)."""
    head = await conn.fetchrow(
        "SELECT hash, key_id FROM audit_chain WHERE project = $1 AND seq = $2",
        since.project,
        since.seq,
    )
    if head is None or head["hash"] != since.hash:
        return False
    check.resume(since.seq, since.hash, keyed=head["key_id"] is not None)
    return True


async def checkpoint(
    pool: asyncpg.Pool,
    project: str,
    keys: AuditKeys,
    signer: CheckpointSigner,
    *,
    since: Checkpoint | None = None,
) -> tuple[Verification, Checkpoint | None]:
    """A signed statement of the project's chain head, once the chain up to it verifies
    (from `since`, a checkpoint already made, when given): a checkpoint of a chain
    already tampered with would vouch for the tamper."""
    head = await pool.fetchrow(
        "SELECT seq, hash, key_id FROM audit_chain WHERE project = $1 ORDER BY seq DESC LIMIT 1",
        project,
    )
    if head is None:
        return Verification(intact=True, events=0, first_broken=None), None
    verification = await verify_project(
        pool, project, keys, heads={head["seq"]: head["hash"]}, since=since
    )
    if not verification.intact:
        return verification, None
    statement = Checkpoint(
        project=project,
        seq=head["seq"],
        hash=head["hash"],
        key_id=head["key_id"],
        created_at=datetime.now(UTC),
        signer=signer.id,
    )
    return verification, signer.sign(statement)

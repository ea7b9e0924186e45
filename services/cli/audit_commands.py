"""`ferrumdeck audit verify|export|checkpoint|public-key`: check a project's chain, write
it out as JSON Lines that the same code verifies offline (`ferrumdeck audit verify --file
export.jsonl`), or sign a checkpoint of its head to keep outside the database.

Checking needs the audit keys the links were made under (the database does not hold
them) and, to hold the chain to checkpoints, the public key that signed them."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterable
from pathlib import Path

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from services.contract.audit import AuditEvent, ChainCheck, Verification
from services.contract.audit_checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointSigner,
    check_signature,
)
from services.contract.audit_keys import AuditKeys
from services.gateway import audit
from services.gateway.db.connections import create_pool
from services.gateway.store.audit_trail import chained_events

Heads = dict[str, dict[int, str]]


def _report(verification: Verification) -> int:
    print(verification.model_dump_json(indent=2))
    return 0 if verification.intact else 1


def checkpoint_heads(paths: Iterable[Path], public: Ed25519PublicKey) -> Heads:
    """Checkpointed heads by project, each checkpoint's signature checked; two that
    disagree about one seq are a fork someone signed, refused outright."""
    heads: Heads = {}
    for path in paths:
        checkpoint = Checkpoint.from_file(path)
        check_signature(checkpoint, public)
        known = heads.setdefault(checkpoint.project, {})
        if known.get(checkpoint.seq, checkpoint.hash) != checkpoint.hash:
            raise CheckpointError(
                f"checkpoints of {checkpoint.project!r} disagree about seq {checkpoint.seq}"
            )
        known[checkpoint.seq] = checkpoint.hash
    return heads


async def _known_project(pool: asyncpg.Pool, project: str) -> bool:
    """Exit 2 for a project that does not exist: "intact, 0 events" for a mistyped name
    read as a clean bill of health."""
    names = [row["name"] for row in await pool.fetch("SELECT name FROM projects ORDER BY name")]
    if project not in names:
        print(
            f"ferrumdeck: no project {project!r}; projects: {', '.join(names) or 'none'}",
            file=sys.stderr,
        )
    return project in names


async def verify_database(
    database_url: str, project: str, keys: AuditKeys, heads: Heads | None = None
) -> int:
    heads = heads or {}
    others = sorted(set(heads) - {project})
    if others:
        print(f"ferrumdeck: checkpoints of {', '.join(others)}, not {project!r}", file=sys.stderr)
        return 2
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        if not await _known_project(pool, project):
            return 2
        return _report(await audit.verify_project(pool, project, keys, heads=heads.get(project)))
    finally:
        await pool.close()


def verify_file(path: Path, keys: AuditKeys, heads: Heads | None = None) -> int:
    """Verify an export offline, streamed: one chain check per project, events taken in
    the order written (chain order, as `audit export` writes them)."""
    heads = heads or {}
    checks: dict[str, ChainCheck] = {p: ChainCheck(keys, h) for p, h in heads.items()}
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                event = AuditEvent.model_validate_json(line)
                check = checks.setdefault(event.project, ChainCheck(keys))
                if check.broken is None and check.checkpoint_failure is None:
                    check.add(event)
    worst = 0
    for project, check in sorted(checks.items()):
        print(f"project {project}:")
        worst = max(worst, _report(check.result(len(heads.get(project, {})))))
    return worst


async def _checkpoint(
    database_url: str, project: str, keys: AuditKeys, signer: CheckpointSigner
) -> tuple[Verification, Checkpoint | None] | None:
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        if not await _known_project(pool, project):
            return None
        return await audit.checkpoint(pool, project, keys, signer)
    finally:
        await pool.close()


def write_checkpoint(
    database_url: str, project: str, keys: AuditKeys, signer: CheckpointSigner, out: Path | None
) -> int:
    made = asyncio.run(_checkpoint(database_url, project, keys, signer))
    if made is None:
        return 2
    verification, checkpoint = made
    if not verification.intact:
        print("ferrumdeck: the chain does not verify; no checkpoint written", file=sys.stderr)
        return _report(verification)
    if checkpoint is None:
        print(f"ferrumdeck: project {project!r} has no linked events yet", file=sys.stderr)
        return 2
    text = checkpoint.model_dump_json(indent=2) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)
        print(f"checkpoint of {project!r} at seq {checkpoint.seq} written to {out}")
    print(f"token (GET /v1/audit/verify?since_checkpoint=): {checkpoint.token()}", file=sys.stderr)
    return 0


async def export(database_url: str, project: str, out: Path | None) -> int:
    pool = await create_pool(database_url, min_size=1, max_size=1)
    target = out.open("w", encoding="utf-8") if out else sys.stdout
    try:
        async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            async for event in chained_events(conn, project):
                target.write(json.dumps(event.model_dump(mode="json")) + "\n")
    finally:
        if out:
            target.close()
        await pool.close()
    return 0

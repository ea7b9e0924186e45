"""`ferrumdeck audit verify|export`: check a project's chain, or write it out as JSON Lines
that the same code verifies offline (`ferrumdeck audit verify --file export.jsonl`).
Both need the audit keys the links were made under: the database does not hold them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from services.contract.audit import AuditEvent, Verification, verify
from services.contract.audit_keys import AuditKeys
from services.gateway.audit import verify_project
from services.gateway.db.connections import create_pool
from services.gateway.store.audit_trail import chained_events


def _report(verification: Verification) -> int:
    print(verification.model_dump_json(indent=2))
    return 0 if verification.intact else 1


async def verify_database(database_url: str, project: str, keys: AuditKeys) -> int:
    """Exit 2 for a project that does not exist: "intact, 0 events" for a mistyped name
    read as a clean bill of health."""
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        known = await pool.fetch("SELECT name FROM projects ORDER BY name")
        names = [row["name"] for row in known]
        if project not in names:
            print(
                f"ferrumdeck: no project {project!r}; projects: {', '.join(names) or 'none'}",
                file=sys.stderr,
            )
            return 2
        return _report(await verify_project(pool, project, keys))
    finally:
        await pool.close()


def verify_file(path: Path, keys: AuditKeys) -> int:
    """Verify an export offline; events of each project are checked as one chain."""
    by_project: dict[str, list[AuditEvent]] = {}
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                event = AuditEvent.model_validate_json(line)
                by_project.setdefault(event.project, []).append(event)
    worst = 0
    for project, events in sorted(by_project.items()):
        print(f"project {project}:")
        worst = max(worst, _report(verify(sorted(events, key=lambda e: e.seq or 0), keys)))
    return worst


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

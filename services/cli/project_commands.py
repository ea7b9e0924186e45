"""`ferrumdeck projects set-quota`: an operator's limits on one project, written straight
to the database (like `keys create`: it is the machine's operator who sets them, not a
project's admin, who can only read them in `GET /v1/queue`)."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from typing import Any

from pydantic import ValidationError

from services.cli.user_input import validation_summary

PROJECT = r"^[a-z0-9][a-z0-9_-]{0,62}$"


def register(commands: Any) -> None:
    projects = commands.add_parser("projects", help="set per-project quotas").add_subparsers(
        dest="projects_command", required=True, metavar="ACTION"
    )
    quota = projects.add_parser(
        "set-quota",
        help="limit a project's queued and running runs and its run creation rate "
        "(options left out: no such limit)",
    )
    quota.add_argument("name", help="the project (created if new)")
    quota.add_argument("--max-queued", type=int, help="runs waiting for a worker at once")
    quota.add_argument("--max-running", type=int, help="runs running at once")
    quota.add_argument("--rate", type=float, help="runs created per second")
    quota.set_defaults(func=_set_quota)


def _set_quota(args: argparse.Namespace) -> int:
    from services.cli.database import database_url, event_seal
    from services.contract.queue import ProjectQuota
    from services.gateway.audit import Actor
    from services.gateway.db.connections import connect
    from services.gateway.store.quotas import set_quota

    if not re.match(PROJECT, args.name):
        print(f"ferrumdeck: {args.name!r} is not a project name", file=sys.stderr)
        return 2
    try:
        quota = ProjectQuota(
            max_queued=args.max_queued, max_running=args.max_running, runs_per_second=args.rate
        )
    except ValidationError as exc:
        print(f"ferrumdeck: {validation_summary(exc)}", file=sys.stderr)
        return 2

    async def run() -> None:
        conn = await connect(database_url(), seal=event_seal())
        try:
            await set_quota(conn, args.name, quota, Actor.system("ferrumdeck projects set-quota"))
        finally:
            await conn.close()

    asyncio.run(run())
    limits = [
        f"{label} {value:g}"
        for label, value in (
            ("max queued", quota.max_queued),
            ("max running", quota.max_running),
            ("runs per second", quota.runs_per_second),
        )
        if value is not None
    ]
    print(f"project {args.name!r}: " + (", ".join(limits) if limits else "no quotas"))
    return 0

"""`/healthz` (the process answers) and `/readyz` (it can do useful work)."""

from __future__ import annotations

from quart import Blueprint
from quart_schema import tag, validate_response

from services.contract.health import Liveness, Readiness, ReadyStatus
from services.gateway.db.migrations import pending
from services.gateway.runtime import runtime

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
@tag(["operations"])
@validate_response(Liveness)
async def healthz() -> Liveness:
    """The process is alive."""
    return Liveness()


@blueprint.get("/readyz")
@tag(["operations"])
@validate_response(Readiness, 200)
@validate_response(Readiness, 503)
async def readyz() -> tuple[Readiness, int]:
    """PostgreSQL reachable with every migration applied, and Redis reachable."""
    res = runtime()
    problems = []
    try:
        async with res.pool.acquire(timeout=2) as conn:
            missing = await pending(conn)
        if missing:
            names = ", ".join(f"{m.version:04d}_{m.name}" for m in missing)
            problems.append(f"database schema lacks {names}: run migrate")
    except Exception as exc:
        problems.append(f"database: {exc}")
    try:
        await res.redis.ping()
    except Exception as exc:
        problems.append(f"redis: {exc}")
    if problems:
        return Readiness(status=ReadyStatus.NOT_READY, problems=problems), 503
    return Readiness(status=ReadyStatus.READY), 200

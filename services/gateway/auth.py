"""Bearer-key authentication and role checks.

Keys look like `fd_<random>`; only their SHA-256 is stored. Keys are 256 bits of
randomness, so a fast hash is enough: there is nothing to brute-force.

A human key belongs to one project and has a role; everything it sees is filtered to its
project, so another project's data is simply not found (404, never 403). Worker keys
belong to no project: they reach only the worker API, and no other key reaches it.
Each blueprint names the roles it admits (`require_role`); a route may narrow them
(`allow`), and a role that may not do something gets 403.

A valid key's identity is remembered for a few seconds (`key_cache`), so most requests
skip the lookup; revocation still takes effect on the next request on every gateway.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import asyncpg
from quart import Blueprint, g, request
from redis.exceptions import RedisError

from services.contract.api import Role
from services.gateway import metrics
from services.gateway.audit import Actor
from services.gateway.client_address import client_address
from services.gateway.errors import Forbidden, TooManyRequests, Unauthorized
from services.gateway.principal import Principal
from services.gateway.runtime import Runtime, runtime

KEY_PREFIX = "fd_"

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


# Where `require_role` and `allow` leave the roles they admit, for `roles_admitted`.
_ROLES = "_ferrumdeck_roles"

READERS = (Role.ADMIN, Role.OPERATOR, Role.INTEGRATION, Role.VIEWER)
RUN_STARTERS = (Role.ADMIN, Role.INTEGRATION)
DECIDERS = (Role.ADMIN, Role.OPERATOR)


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def _principal_for(res: Runtime, secret: str) -> Principal | None:
    """The key's principal: from the cache, or — unless this client is already past the
    failed-authentication limit — from the database. The limit is checked before the
    lookup, not after it, so a client guessing keys stops costing queries (and stops
    being answered, even should a guess be right) once it is past the limit."""
    key_hash = hash_secret(secret)

    async def load() -> Principal | None:
        await _refuse_if_past_limit(res)
        return await _read_principal(res.pool, key_hash)

    return await res.key_cache.principal(key_hash, load)


async def _read_principal(pool: asyncpg.Pool, key_hash: str) -> Principal | None:
    row = await pool.fetchrow(
        """SELECT id, name, role, project FROM api_keys
            WHERE key_hash = $1 AND revoked_at IS NULL""",
        key_hash,
    )
    if row is None:
        return None
    return Principal(row["id"], row["name"], Role(row["role"]), row["project"])


def require_role(blueprint: Blueprint, *roles: Role) -> None:
    """Guard every route of `blueprint`: a valid key, of the right kind, of `roles`."""
    for_workers = Role.WORKER in roles
    setattr(blueprint, _ROLES, frozenset(roles))

    @blueprint.before_request
    async def _authenticate() -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.startswith(KEY_PREFIX):
            metrics.auth_failed("missing")
            await _count_failure()
            raise Unauthorized("send an API key as 'Authorization: Bearer fd_…'")
        principal = await _principal_for(runtime(), secret.strip())
        if principal is None or (principal.role == Role.WORKER) != for_workers:
            metrics.auth_failed("rejected")
            await _count_failure()
            raise Unauthorized("API key is unknown, revoked, or not allowed here")
        if principal.role not in roles:
            metrics.auth_failed("forbidden")
            raise Forbidden(f"{_a(principal.role.value)} key may not use this endpoint")
        g.principal = principal


def _failures_key(res: Runtime) -> str:
    """Where the client's failures are counted, in Redis so every gateway shares them."""
    settings = res.settings
    client = client_address(
        request.remote_addr,
        request.headers.get(settings.client_address_header),
        settings.proxy_networks if settings.trusted_proxies else (),
    )
    return f"{settings.stream_prefix}:authfail:{client}"


def _too_many(res: Runtime) -> TooManyRequests:
    return TooManyRequests(
        "too many failed authentications from this client; wait and retry",
        retry_after=res.settings.auth_failure_window_seconds,
    )


async def _refuse_if_past_limit(res: Runtime) -> None:
    """Refuse a client already past the limit. With Redis away the count cannot be read,
    and valid keys must still work (runs are accepted into the outbox meanwhile), so the
    lookup goes ahead."""
    try:
        failures = await res.redis.get(_failures_key(res))
    except (RedisError, OSError) as exc:
        log.warning("cannot read failed authentications, looking the key up: %s", exc)
        return
    if failures is not None and int(failures) >= res.settings.auth_failure_limit:
        raise _too_many(res)


async def _count_failure() -> None:
    """Count a failed authentication against the client; past the limit, the client is
    told to wait instead of being answered."""
    res = runtime()
    async with res.redis.pipeline(transaction=True) as pipe:
        pipe.incr(_failures_key(res))
        pipe.expire(_failures_key(res), res.settings.auth_failure_window_seconds, nx=True)
        failures, _ = await pipe.execute()
    if failures > res.settings.auth_failure_limit:
        raise _too_many(res)


def allow(*roles: Role) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Narrow one route to `roles` within what its blueprint admits."""

    def decorator(view: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @wraps(view)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            role: Role = g.principal.role
            if role not in roles:
                raise Forbidden(f"{_a(role.value)} key may not do this")
            return await view(*args, **kwargs)

        setattr(guarded, _ROLES, frozenset(roles))
        return guarded

    return decorator


def roles_admitted(blueprint: Blueprint | None, view: Callable[..., Any]) -> frozenset[Role]:
    """The roles whose keys may use `view` of `blueprint` (what the OpenAPI document's
    403s follow)."""
    admitted: frozenset[Role] = getattr(blueprint, _ROLES, frozenset(Role))
    narrowed: frozenset[Role] = getattr(view, _ROLES, admitted)
    return admitted & narrowed


def principal() -> Principal:
    found: Principal = g.principal
    return found


def current_actor() -> Actor:
    """Who the audit trail names for this request."""
    who = principal()
    return Actor.key(who.key_id, who.name)


def project() -> str:
    """The project every query of this request is confined to."""
    scope = principal().project
    assert scope is not None, "worker keys have no project"
    return scope


def _a(word: str) -> str:
    """`word` with its article: "an integration key", "a viewer key"."""
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"

"""Who may do what: every route for every role, project isolation, revocation."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from services.contract.api import Role
from services.gateway.app import create_app
from services.gateway.audit import Actor
from services.gateway.settings import GatewaySettings
from services.gateway.store.keys import create_key
from tests.support.harness import ToolHarness

HUMAN_ROLES = [Role.ADMIN, Role.OPERATOR, Role.INTEGRATION, Role.VIEWER]
EVERYONE = set(HUMAN_ROLES)
ADMIN = {Role.ADMIN}
DECIDE = {Role.ADMIN, Role.OPERATOR}
START = {Role.ADMIN, Role.INTEGRATION}

# Streams that stay open while what they follow goes on: the role matrix cannot read them.
_ENDLESS = {"/v1/events", "/v1/runs/<uuid:run_id>/stream"}

# (method, URL rule) -> roles that may use it. Every /v1 route of the app must be here.
PUBLIC_ROUTES: dict[tuple[str, str], set[Role]] = {
    ("GET", "/v1/agents"): EVERYONE,
    ("POST", "/v1/agents"): ADMIN,
    ("GET", "/v1/agents/<name>"): EVERYONE,
    ("GET", "/v1/runs"): EVERYONE,
    ("GET", "/v1/runs/summary"): EVERYONE,
    ("POST", "/v1/runs"): START,
    ("GET", "/v1/runs/<uuid:run_id>"): EVERYONE,
    ("GET", "/v1/runs/<uuid:run_id>/steps"): EVERYONE,
    ("GET", "/v1/runs/<uuid:run_id>/stream"): EVERYONE,
    ("POST", "/v1/runs/<uuid:run_id>/cancel"): DECIDE,
    ("POST", "/v1/runs/<uuid:run_id>/requeue"): DECIDE,
    ("GET", "/v1/approvals"): EVERYONE,
    ("GET", "/v1/approvals/<uuid:approval_id>"): EVERYONE,
    ("POST", "/v1/approvals/<uuid:approval_id>/approve"): DECIDE,
    ("POST", "/v1/approvals/<uuid:approval_id>/reject"): DECIDE,
    ("POST", "/v1/approvals/decide"): DECIDE,
    ("GET", "/v1/policies"): EVERYONE,
    ("PUT", "/v1/policies"): ADMIN,
    ("POST", "/v1/policies/evaluate"): EVERYONE,
    ("DELETE", "/v1/policies/versions"): ADMIN,
    ("GET", "/v1/tools"): EVERYONE,
    ("GET", "/v1/keys"): ADMIN,
    ("POST", "/v1/keys"): ADMIN,
    ("DELETE", "/v1/keys/<uuid:key_id>"): ADMIN,
    ("GET", "/v1/audit"): EVERYONE,
    ("GET", "/v1/audit/verify"): EVERYONE,
    ("GET", "/v1/queue"): EVERYONE,
    ("GET", "/v1/events"): EVERYONE,
    ("GET", "/v1/threads"): EVERYONE,
    ("POST", "/v1/threads"): START,
    ("GET", "/v1/threads/<uuid:thread_id>"): EVERYONE,
    ("GET", "/v1/threads/<uuid:thread_id>/messages"): EVERYONE,
    ("GET", "/v1/webhooks"): ADMIN,
    ("POST", "/v1/webhooks"): ADMIN,
    ("DELETE", "/v1/webhooks/<uuid:webhook_id>"): ADMIN,
    ("GET", "/v1/webhooks/<uuid:webhook_id>/deliveries"): ADMIN,
    ("POST", "/v1/webhooks/<uuid:webhook_id>/deliveries/<uuid:delivery_id>/redeliver"): ADMIN,
}

# (method, URL rule) -> a URL of it, for the routes outside key authentication: a browser
# loading `/docs`, Prometheus and a load balancer send no key. Every other route of the app
# must be here.
KEYLESS_ROUTES: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): "/healthz",
    ("GET", "/readyz"): "/readyz",
    ("GET", "/metrics"): "/metrics",
    ("GET", "/openapi.json"): "/openapi.json",
    ("GET", "/docs"): "/docs",
    ("GET", "/docs/assets/<name>"): "/docs/assets/swagger-ui-bundle.js",
}


def _all_routes(app: Quart) -> set[tuple[str, str]]:
    """But Quart's own `static`, which serves a folder the gateway does not have."""
    return {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods or ()
        if method not in {"HEAD", "OPTIONS"}
    }


def _routes(app: Quart) -> set[tuple[str, str]]:
    return {r for r in _all_routes(app) if r[1].startswith("/v1/")}


@pytest.fixture(scope="module")
async def role_keys(db: asyncpg.Pool) -> dict[Role, str]:
    keys = {}
    async with db.acquire() as conn:
        for role in HUMAN_ROLES:
            _, secret = await create_key(
                conn, f"matrix-{role.value}", role, "default", Actor.system("tests")
            )
            keys[role] = secret
    return keys


@pytest.fixture(scope="module")
async def other_project_admin(db: asyncpg.Pool) -> str:
    async with db.acquire() as conn:
        _, secret = await create_key(
            conn, "other-admin", Role.ADMIN, f"other-{uuid.uuid4().hex[:6]}", Actor.system("tests")
        )
    return secret


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def _fixtures(harness: ToolHarness) -> dict[str, str]:
    """Real ids for every path parameter: an agent, a parked run with its approval, a key."""
    await harness.policy({"id": "ask", "tool": "notes.*", "effect": "require_approval"})
    run_id, epoch = await harness.running(tools=["notes.*"])
    _, verdict = await harness.authorize(run_id, epoch, 1, "notes.write_note", {"text": "x"})
    key = await (
        await harness.client.post(
            "/v1/keys", json={"name": "spare", "role": "viewer"}, headers=harness.admin
        )
    ).get_json()
    # A public address that needs no DNS, for an event no test run reaches.
    webhook = await (
        await harness.client.post(
            "/v1/webhooks",
            json={"url": "http://8.8.8.8/hook", "events": ["run.budget_exceeded"]},
            headers=harness.admin,
        )
    ).get_json()
    thread = await (
        await harness.client.post("/v1/threads", json={}, headers=harness.admin)
    ).get_json()
    agents = await (await harness.client.get("/v1/agents", headers=harness.admin)).get_json()
    return {
        "name": agents["items"][0]["name"],
        "run_id": run_id,
        "approval_id": verdict["approval_id"],
        "key_id": key["id"],
        "webhook_id": webhook["id"],
        "thread_id": thread["id"],
        # Deliveries and their isolation are tested in test_webhooks.
        "delivery_id": str(uuid.uuid4()),
    }


def _url(rule: str, ids: dict[str, str]) -> str:
    for param, value in ids.items():
        rule = rule.replace(f"<{param}>", value).replace(f"<uuid:{param}>", value)
    return rule


def _body(method: str, rule: str) -> dict[str, Any] | None:
    bodies: dict[str, dict[str, Any]] = {
        "/v1/agents": {"name": f"m-{uuid.uuid4().hex[:6]}", "model": "scripted"},
        "/v1/runs": {"agent": "nobody", "input": "x"},
        "/v1/policies": {"rules": [{"id": "ask", "tool": "notes.*", "effect": "require_approval"}]},
        "/v1/policies/evaluate": {"agent": "a", "tool": "notes.write_note"},
        "/v1/keys": {"name": "k", "role": "viewer"},
        "/v1/threads": {"metadata": {"matrix": True}},
        "/v1/webhooks": {"url": "http://8.8.8.8/hook", "events": ["run.budget_exceeded"]},
        "/v1/approvals/decide": {
            "approval_ids": [str(uuid.uuid4())],
            "approve": False,
            "reason": "matrix",
        },
    }
    if rule.endswith(("/approve", "/reject")):
        return {"reason": "matrix"}
    return bodies.get(rule) if method in {"POST", "PUT"} else None


async def test_every_route_is_classified(app: Any) -> None:
    public = {r for r in _routes(app.app) if not r[1].startswith("/v1/worker/")}
    assert public == set(PUBLIC_ROUTES)
    worker_routes = {r for r in _routes(app.app) if r[1].startswith("/v1/worker/")}
    assert len(worker_routes) >= 8
    assert _all_routes(app.app) - _routes(app.app) == set(KEYLESS_ROUTES)


async def test_role_matrix(
    harness: ToolHarness, client: Client, role_keys: dict[Role, str], app: Any
) -> None:
    covered = 0
    shared = await _fixtures(harness)
    for (method, rule), allowed in sorted(PUBLIC_ROUTES.items()):
        if rule in _ENDLESS:
            continue
        for role in HUMAN_ROLES:
            ids = await _fixtures(harness) if method != "GET" else shared
            response = await client.open(
                _url(rule, ids),
                method=method,
                json=_body(method, rule),
                headers=_bearer(role_keys[role]),
            )
            if role in allowed:
                assert response.status_code not in (401, 403), (method, rule, role)
            else:
                assert response.status_code == 403, (method, rule, role, response.status_code)
                assert (await response.get_json())["error"]["code"] == "forbidden"
            covered += 1
    assert covered == (len(PUBLIC_ROUTES) - len(_ENDLESS)) * len(HUMAN_ROLES)


async def test_every_role_may_follow_a_run_to_its_end(
    harness: ToolHarness, client: Client, role_keys: dict[Role, str]
) -> None:
    """The stream of a run still going never ends, so the matrix above leaves it out:
    here every role follows a run that has ended, and gets to its `end`."""
    run_id, _ = await harness.running()
    await client.post(f"/v1/runs/{run_id}/cancel", headers=harness.admin)
    for role in HUMAN_ROLES:
        response = await client.get(f"/v1/runs/{run_id}/stream", headers=_bearer(role_keys[role]))
        assert response.status_code == 200, role
        assert "event: end" in await response.get_data(as_text=True), role


async def test_keyless_routes_answer_with_a_key_of_any_kind_or_none(
    client: Client, role_keys: dict[Role, str], worker: dict[str, str], other_project_admin: str
) -> None:
    callers = [
        {},
        _bearer("fd_not-a-key"),
        worker,
        _bearer(other_project_admin),
        *(_bearer(secret) for secret in role_keys.values()),
    ]
    for (method, _rule), url in sorted(KEYLESS_ROUTES.items()):
        for headers in callers:
            response = await client.open(url, method=method, json=None, headers=headers)
            assert response.status_code == 200, (url, headers, response.status_code)


async def test_worker_keys_reach_only_the_worker_api(
    client: Client, worker: dict[str, str], app: Any
) -> None:
    for method, rule in sorted(PUBLIC_ROUTES):
        url = _url(
            rule,
            {
                "name": "x",
                "run_id": str(uuid.uuid4()),
                "approval_id": str(uuid.uuid4()),
                "key_id": str(uuid.uuid4()),
                "webhook_id": str(uuid.uuid4()),
                "delivery_id": str(uuid.uuid4()),
                "thread_id": str(uuid.uuid4()),
            },
        )
        response = await client.open(url, method=method, json=_body(method, rule), headers=worker)
        assert response.status_code == 401, (method, rule)


async def test_human_keys_never_reach_the_worker_api(
    client: Client, role_keys: dict[Role, str], app: Any
) -> None:
    worker_routes = sorted(r for r in _routes(app.app) if r[1].startswith("/v1/worker/"))
    for method, rule in worker_routes:
        url = _url(rule, {"run_id": str(uuid.uuid4())})
        for secret in role_keys.values():
            response = await client.open(url, method=method, json={}, headers=_bearer(secret))
            assert response.status_code == 401, (method, rule)


async def test_another_projects_data_is_not_found_anywhere(
    harness: ToolHarness, client: Client, other_project_admin: str, db: asyncpg.Pool
) -> None:
    ids = await _fixtures(harness)
    other = _bearer(other_project_admin)
    for (method, rule), _allowed in sorted(PUBLIC_ROUTES.items()):
        if not any(f"<{p}>" in rule or f"<uuid:{p}>" in rule for p in ids):
            continue
        response = await client.open(
            _url(rule, ids), method=method, json=_body(method, rule), headers=other
        )
        assert response.status_code == 404, (method, rule, response.status_code)
    listings = ("/v1/runs", "/v1/agents", "/v1/approvals", "/v1/keys", "/v1/audit")
    mine = {ids[k] for k in ("run_id", "approval_id", "key_id", "name", "webhook_id", "thread_id")}
    for listing in (*listings, "/v1/webhooks", "/v1/threads"):
        items = (await (await client.get(listing, headers=other)).get_json())["items"]
        assert not any(
            str(item.get("id")) in mine or item.get("name") == ids["name"] for item in items
        ), listing
    evaluated = await (
        await client.post(
            "/v1/policies/evaluate", json={"agent": "a", "tool": "notes.write_note"}, headers=other
        )
    ).get_json()
    assert (evaluated["effect"], evaluated["policy_version"]) == ("deny", 0)
    # Old enough to prune, had their own admin asked; another project's admin cannot.
    await db.execute(
        "UPDATE policies SET created_at = created_at - interval '1 hour' WHERE project = 'default'"
    )
    own = "/v1/policies?limit=200"
    history = (await (await client.get(own, headers=harness.admin)).get_json())["history"]
    pruned = await client.delete(f"/v1/policies/versions?before={2**31 - 1}", headers=other)
    assert (await pruned.get_json())["pruned"] == []
    assert (await (await client.get(own, headers=harness.admin)).get_json())["history"] == history
    run = await client.post("/v1/runs", json={"agent": ids["name"], "input": "x"}, headers=other)
    assert (await run.get_json())["error"]["code"] == "unknown_agent"


async def test_keyless_routes_tell_no_project_from_another(
    client: Client, role_keys: dict[Role, str], other_project_admin: str
) -> None:
    """The same bytes whoever asks, and whether with a key at all: nothing of a project."""
    for (method, _rule), url in sorted(KEYLESS_ROUTES.items()):
        if url == "/metrics":
            continue  # platform-wide figures by design (architecture.md), moving between scrapes
        bodies = set()
        for headers in ({}, _bearer(role_keys[Role.VIEWER]), _bearer(other_project_admin)):
            response = await client.open(url, method=method, json=None, headers=headers)
            bodies.add(await response.get_data())
        assert len(bodies) == 1, url


async def test_a_revoked_key_is_refused_on_its_next_request(
    client: Client, admin: dict[str, str]
) -> None:
    created = await client.post(
        "/v1/keys", json={"name": "temp", "role": "operator"}, headers=admin
    )
    assert created.status_code == 201
    key = await created.get_json()
    assert key["secret"].startswith("fd_")
    listed = await (await client.get("/v1/keys", headers=admin)).get_json()
    assert all("secret" not in k for k in listed["items"])
    assert (await client.get("/v1/runs", headers=_bearer(key["secret"]))).status_code == 200
    assert (await client.delete(f"/v1/keys/{key['id']}", headers=admin)).status_code == 204
    refused = await client.get("/v1/runs", headers=_bearer(key["secret"]))
    assert refused.status_code == 401


async def test_worker_keys_cannot_be_created_over_the_api(
    client: Client, admin: dict[str, str]
) -> None:
    response = await client.post("/v1/keys", json={"name": "w", "role": "worker"}, headers=admin)
    assert response.status_code == 400


async def test_failed_authentications_are_limited_across_gateways(
    settings: GatewaySettings, admin: dict[str, str]
) -> None:
    strict = settings.model_copy(
        update={"auth_failure_limit": 3, "auth_failure_window_seconds": 30}
    )
    async with create_app(strict).test_app() as first, create_app(strict).test_app() as second:
        bad = {"Authorization": "Bearer fd_not-a-key"}
        statuses = [
            (await gateway.test_client().get("/v1/runs", headers=bad)).status_code
            for gateway in (first, second, first, second, first)
        ]
        assert statuses == [401, 401, 401, 429, 429]
        limited = await second.test_client().get("/v1/runs", headers=bad)
        assert limited.headers["Retry-After"] == "30"
        assert (await _error_code(limited)) == "too_many_requests"
        # Checked before the lookup: past the limit, even a right guess is not answered.
        lucky = await first.test_client().get("/v1/runs", headers=admin)
        assert lucky.status_code == 429


async def test_behind_a_trusted_proxy_the_forwarded_client_is_limited_not_the_proxy(
    settings: GatewaySettings, admin: dict[str, str]
) -> None:
    strict = settings.model_copy(
        update={
            "auth_failure_limit": 2,
            "auth_failure_window_seconds": 30,
            "trusted_proxies": ("127.0.0.1", "10.0.0.0/8"),
        }
    )
    guesser = f"203.0.113.{uuid.uuid4().int % 250}"
    async with create_app(strict).test_app() as app:
        client = app.test_client()

        async def via_proxy(headers: dict[str, str]) -> int:
            proxy = {"client": ("127.0.0.1", 40000)}
            return (await client.get("/v1/runs", headers=headers, scope_base=proxy)).status_code

        bad = {"Authorization": "Bearer fd_not-a-key"}
        forwarded = {**bad, "X-Forwarded-For": f"{guesser}, 10.1.2.3"}
        assert [await via_proxy(forwarded) for _ in range(3)] == [401, 401, 429]
        # Another client behind the same proxy is unaffected.
        other = f"198.51.100.{uuid.uuid4().int % 250}"
        assert await via_proxy({**admin, "X-Forwarded-For": other}) == 200
        # What the guesser writes left of the proxy's own entry is never believed.
        assert await via_proxy({**bad, "X-Forwarded-For": f"{other}, {guesser}"}) == 429


async def test_a_forwarding_header_from_an_untrusted_peer_is_ignored(
    settings: GatewaySettings,
) -> None:
    strict = settings.model_copy(
        update={"auth_failure_limit": 2, "auth_failure_window_seconds": 30}
    )
    async with create_app(strict).test_app() as app:
        client = app.test_client()
        statuses = [
            (
                await client.get(
                    "/v1/runs",
                    headers={
                        "Authorization": "Bearer fd_not-a-key",
                        "X-Forwarded-For": f"198.51.100.{n}",
                    },
                )
            ).status_code
            for n in range(3)
        ]
        assert statuses == [401, 401, 429]


async def _error_code(response: Any) -> str:
    return str((await response.get_json())["error"]["code"])

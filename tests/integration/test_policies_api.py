"""`/v1/policies`: versioned rules and the explain endpoint."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from quart.typing import TestClientProtocol as Client

from services.contract.api import Role
from services.gateway.app import create_app
from services.gateway.audit import Actor
from services.gateway.settings import GatewaySettings
from services.gateway.store.keys import create_key
from tests.support.harness import ToolHarness

RULES: list[dict[str, Any]] = [
    {"id": "r1", "agent": "*", "tool": "time.*", "effect": "allow"},
    {"id": "r2", "tool": "notes.write_note", "effect": "require_approval"},
    {
        "id": "r3",
        "tool": "notes.write_note",
        "effect": "deny",
        "when": {"args": {"text": {"regex": "(?i)password"}}},
    },
    {"id": "r4", "tool": "*", "when": {"calls_in_run": {"gt": 20}}, "effect": "deny"},
]


async def test_put_creates_versions_and_get_shows_current_and_history(harness: ToolHarness) -> None:
    first = await harness.policy(*RULES)
    second = await harness.policy(RULES[0])
    assert second == first + 1
    state = await (
        await harness.client.get("/v1/policies?limit=1", headers=harness.admin)
    ).get_json()
    assert state["version"] == second
    assert [r["id"] for r in state["rules"]] == ["r1"]
    assert [v["version"] for v in state["history"]] == [second]
    assert state["history"][0]["created_by"] == "test-admin"
    older = await (
        await harness.client.get(
            f"/v1/policies?limit=1&cursor={state['next_cursor']}", headers=harness.admin
        )
    ).get_json()
    assert [v["version"] for v in older["history"]] == [first]
    assert older["history"][0]["rules"][2]["when"]["args"]["text"]["regex"] == "(?i)password"


async def _evaluate(client: Client, admin: dict[str, str], **call: object) -> dict[str, object]:
    response = await client.post("/v1/policies/evaluate", json=call, headers=admin)
    assert response.status_code == 200, await response.get_json()
    body: dict[str, object] = await response.get_json()
    return body


async def test_evaluate_explains_each_effect(harness: ToolHarness) -> None:
    version = await harness.policy(*RULES)
    allowed = await _evaluate(
        harness.client, harness.admin, agent="bot", tool="time.get_current_time"
    )
    assert (allowed["effect"], allowed["rule"], allowed["policy_version"]) == (
        "allow",
        "r1",
        version,
    )
    parked = await _evaluate(
        harness.client,
        harness.admin,
        agent="bot",
        tool="notes.write_note",
        arguments={"text": "hi"},
    )
    assert (parked["effect"], parked["rule"]) == ("require_approval", "r2")
    denied = await _evaluate(
        harness.client,
        harness.admin,
        agent="bot",
        tool="notes.write_note",
        arguments={"text": "my PASSWORD"},
    )
    assert (denied["effect"], denied["rule"]) == ("deny", "r3")
    assert "r3" in str(denied["explanation"])
    looping = await _evaluate(
        harness.client, harness.admin, agent="bot", tool="time.x", calls_in_run=21
    )
    assert (looping["effect"], looping["rule"]) == ("deny", "r4")
    uncovered = await _evaluate(harness.client, harness.admin, agent="bot", tool="shell.exec")
    assert (uncovered["effect"], uncovered["rule"]) == ("deny", None)


async def test_invalid_rules_name_the_bad_field_and_change_nothing(harness: ToolHarness) -> None:
    version = await harness.policy(*RULES)
    bad = [{"id": "r1", "tool": "x.*", "effect": "allow", "when": {"args": {"t": {"regex": "("}}}}]
    response = await harness.client.put("/v1/policies", json={"rules": bad}, headers=harness.admin)
    assert response.status_code == 400
    error = (await response.get_json())["error"]
    assert "rules.0.when.args.t.regex" in error["message"]
    unknown_effect = [{"id": "r1", "tool": "x.*", "effect": "maybe"}]
    response = await harness.client.put(
        "/v1/policies", json={"rules": unknown_effect}, headers=harness.admin
    )
    assert "rules.0.effect" in (await response.get_json())["error"]["message"]
    state = await (await harness.client.get("/v1/policies", headers=harness.admin)).get_json()
    assert state["version"] == version


async def test_a_number_written_as_a_string_does_not_step_around_a_deny_rule(
    harness: ToolHarness,
) -> None:
    await harness.policy(
        {"id": "allow", "tool": "notes.*", "effect": "allow"},
        {"id": "big", "tool": "notes.add", "when": {"args": {"a": {"gt": 100}}}, "effect": "deny"},
    )
    for a in (1000, "1000"):
        decision = await _evaluate(
            harness.client, harness.admin, agent="bot", tool="notes.add", arguments={"a": a, "b": 1}
        )
        assert (decision["effect"], decision["rule"]) == ("deny", "big"), a
    assert "fails closed" in str(decision["explanation"])
    assert "1000" not in str(decision["explanation"])


async def test_a_regex_re2_cannot_run_is_refused_at_put(harness: ToolHarness) -> None:
    lookahead = {"args": {"t": {"regex": "(?=secret)"}}}
    bad = [{"id": "r1", "tool": "x.*", "effect": "deny", "when": lookahead}]
    response = await harness.client.put("/v1/policies", json={"rules": bad}, headers=harness.admin)
    assert response.status_code == 400
    error = (await response.get_json())["error"]
    assert "rules.0.when.args.t.regex" in error["message"]
    assert "linear time" in error["message"]


@pytest.fixture
async def bounded(
    settings: GatewaySettings, admin: dict[str, str], worker: dict[str, str]
) -> AsyncIterator[ToolHarness]:
    """A gateway whose global body limit (1 MiB) is well above its policy limit."""
    roomy = settings.model_copy(
        update={"max_body_bytes": 1024 * 1024, "policy_max_bytes": 128 * 1024}
    )
    async with create_app(roomy).test_app() as app:
        yield ToolHarness(app.test_client(), admin, worker)


async def _in_force(harness: ToolHarness) -> int:
    state = await (await harness.client.get("/v1/policies", headers=harness.admin)).get_json()
    return int(state["version"])


async def test_a_policy_past_its_byte_limit_is_413_and_changes_nothing(
    bounded: ToolHarness,
) -> None:
    version = await bounded.policy(*RULES)
    wordy = [
        {"id": f"r{n}", "tool": "notes.*", "effect": "allow", "description": "x" * 500}
        for n in range(300)
    ]
    response = await bounded.client.put(
        "/v1/policies", json={"rules": wordy}, headers=bounded.admin
    )
    assert response.status_code == 413
    error = (await response.get_json())["error"]
    assert error["code"] == "policy_too_large"
    assert str(128 * 1024) in error["message"]
    assert await _in_force(bounded) == version


async def test_2000_rules_are_accepted_and_one_more_is_422_naming_the_limit(
    bounded: ToolHarness,
) -> None:
    rules = [{"id": f"r{n}", "effect": "allow"} for n in range(2001)]
    version = await bounded.policy(*rules[:2000])
    response = await bounded.client.put(
        "/v1/policies", json={"rules": rules}, headers=bounded.admin
    )
    assert response.status_code == 422
    error = (await response.get_json())["error"]
    assert error["code"] == "too_many_rules"
    assert "at most 2000 rules" in error["message"]
    assert await _in_force(bounded) == version


async def test_put_warns_about_conditions_no_call_of_a_known_tool_can_meet(
    harness: ToolHarness,
) -> None:
    server = f"w{uuid.uuid4().hex[:8]}"
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string"}, "n": {"type": "integer"}},
        "required": ["a", "n"],
    }
    tool = {"name": f"{server}.add", "server": server, "tool": "add", "input_schema": schema}
    reported = await harness.client.put(
        "/v1/worker/tools", json={"worker_id": server, "tools": [tool]}, headers=harness.worker
    )
    assert reported.status_code < 300
    rules = [
        {"id": "gt-on-string", "tool": f"{server}.add", "effect": "deny",
         "when": {"args": {"a": {"gt": 100}}}},
        {"id": "regex-on-int", "tool": f"{server}.*", "effect": "allow",
         "when": {"args": {"n": {"regex": "^1"}}}},
        {"id": "undeclared", "tool": f"{server}.add", "effect": "require_approval",
         "when": {"args": {"amount": {"lte": 5}}}},
        {"id": "fine", "tool": f"{server}.add", "effect": "deny",
         "when": {"args": {"n": {"gt": 1}, "a": {"glob": "x*"}}}},
        {"id": "unknown-tool", "tool": "nosuch.tool", "effect": "deny",
         "when": {"args": {"a": {"gt": 1}}}},
    ]  # fmt: skip
    response = await harness.client.put(
        "/v1/policies", json={"rules": rules}, headers=harness.admin
    )
    assert response.status_code == 200
    body = await response.get_json()
    warnings = body["warnings"]
    assert [w.split(":")[0] for w in warnings] == [
        "rules[0] (gt-on-string)",
        "rules[1] (regex-on-int)",
        "rules[2] (undeclared)",
    ]
    assert "declares a as string, which 'gt' does not read" in warnings[0]
    assert "fails closed, so the rule applies whatever the value" in warnings[0]
    assert "declares n as integer, which 'regex' does not read" in warnings[1]
    assert "the rule never applies" in warnings[1]
    assert "declares no argument amount" in warnings[2]
    assert await _in_force(harness) == body["version"]


@pytest.fixture
async def own_project(harness: ToolHarness, db: asyncpg.Pool) -> tuple[ToolHarness, str]:
    """A harness whose admin key is the only one of a fresh project, so pruning there
    touches no other test's versions; and the project."""
    project = f"prune-{uuid.uuid4().hex[:6]}"
    async with db.acquire() as conn:
        _, secret = await create_key(conn, "prune-admin", Role.ADMIN, project, Actor.system("t"))
    admin = {"Authorization": f"Bearer {secret}"}
    return ToolHarness(harness.client, admin, harness.worker), project


async def test_pruning_keeps_versions_decisions_name_the_one_in_force_and_recent_ones(
    own_project: tuple[ToolHarness, str], db: asyncpg.Pool
) -> None:
    harness, project = own_project
    first = await harness.policy({"id": "allow", "tool": "notes.*", "effect": "allow"})
    run_id, epoch = await harness.running(tools=["notes.*"])
    status, _ = await harness.authorize(run_id, epoch, 1, "notes.write_note", {"text": "x"})
    assert status == 200
    second = await harness.policy({"id": "ask", "tool": "notes.*", "effect": "require_approval"})
    status, parked = await harness.authorize(run_id, epoch, 2, "notes.write_note", {"text": "y"})
    assert parked["verdict"] == "parked"
    unused = await harness.policy({"id": "deny", "tool": "notes.*", "effect": "deny"})
    replaced = await harness.policy({"id": "allow", "tool": "notes.*", "effect": "allow"})
    await db.execute(
        "UPDATE policies SET created_at = created_at - interval '1 hour' WHERE project = $1",
        project,
    )
    in_force = await harness.policy({"id": "allow", "tool": "time.*", "effect": "allow"})

    response = await harness.client.delete(
        f"/v1/policies/versions?before={in_force + 1}", headers=harness.admin
    )
    assert response.status_code == 200
    assert await response.get_json() == {
        "pruned": [unused],
        "kept": [first, second, replaced, in_force],
    }
    state = await (await harness.client.get("/v1/policies", headers=harness.admin)).get_json()
    assert [v["version"] for v in state["history"]] == [in_force, replaced, second, first]
    audit = await (
        await harness.client.get("/v1/audit?action=policy.pruned", headers=harness.admin)
    ).get_json()
    [event] = audit["items"]
    assert event["details"] == {"before": in_force + 1, "pruned": [unused], "kept": 4}
    assert event["actor"].startswith("prune-admin")
    again = await harness.client.delete("/v1/policies/versions?before=1", headers=harness.admin)
    assert await again.get_json() == {"pruned": [], "kept": []}


async def test_evaluate_takes_the_calls_arguments_as_args_too(harness: ToolHarness) -> None:
    """Rules test `when.args` and the CLI says `--args`: a call described with `args` is
    decided on them, not as a call without arguments."""
    await harness.policy(*RULES)
    call = {"agent": "bot", "tool": "notes.write_note"}
    for name in ("arguments", "args"):
        denied = await _evaluate(
            harness.client, harness.admin, **call, **{name: {"text": "my PASSWORD"}}
        )
        assert (denied["effect"], denied["rule"]) == ("deny", "r3"), name
    both = await harness.client.post(
        "/v1/policies/evaluate",
        json={**call, "arguments": {"text": "hi"}, "args": {"text": "my PASSWORD"}},
        headers=harness.admin,
    )
    assert both.status_code == 400
    assert "as arguments or as args" in (await both.get_json())["error"]["message"]
    spec = await (await harness.client.get("/openapi.json")).get_json()
    body = spec["paths"]["/v1/policies/evaluate"]["post"]["requestBody"]
    documented = body["content"]["application/json"]["schema"]["properties"]
    assert {"arguments", "args"} <= set(documented)

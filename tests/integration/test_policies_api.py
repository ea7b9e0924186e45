"""`/v1/policies`: versioned rules and the explain endpoint."""

from __future__ import annotations

from typing import Any

from quart.typing import TestClientProtocol as Client

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

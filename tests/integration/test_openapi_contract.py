"""The OpenAPI document describes failure as well as success: a client generated from it
knows every error an operation answers, its one shape and its headers, the headers a
route reads, and what the routes that are not JSON send. (The fuzz run holds the live
gateway to it; these hold the document to the role matrix and the error handlers.)"""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator
from quart.typing import TestClientProtocol as Client

from services.contract.events import EventName
from tests.integration.test_access import EVERYONE, PUBLIC_ROUTES

METHODS = {"get", "post", "put", "delete", "patch"}


@pytest.fixture
async def spec(client: Client) -> dict[str, Any]:
    document: dict[str, Any] = await (await client.get("/openapi.json")).get_json()
    return document


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def _resolved(spec: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in response:
        found: dict[str, Any] = spec["components"]["responses"][response["$ref"].split("/")[-1]]
        return found
    return response


def _validator(spec: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator({**schema, "components": spec["components"]})


def _rule_of(path: str) -> str:
    """The Quart rule of an OpenAPI path, as the role matrix names it."""
    for _, rule in PUBLIC_ROUTES:
        if rule.replace("<uuid:", "{").replace("<", "{").replace(">", "}") == path:
            return rule
    raise LookupError(path)


def test_every_key_guarded_operation_documents_its_errors_with_the_one_shape(
    spec: dict[str, Any],
) -> None:
    operations = [op for op in _operations(spec) if op[1].startswith("/v1/")]
    assert len(operations) >= 25
    for method, path, operation in operations:
        responses = operation["responses"]
        for status in ("400", "401", "429", "503"):
            assert status in responses, (method, path, status)
        for status, response in responses.items():
            if status.startswith(("4", "5")):
                schema = _resolved(spec, response)["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, status)
        if "{" in path:
            assert "404" in responses, (method, path)
        if "requestBody" in operation:
            assert operation["requestBody"]["required"] is True
            assert {"413", "415"} <= set(responses), (method, path)
    headers = spec["components"]["responses"]
    assert headers["Unauthorized"]["headers"]["WWW-Authenticate"]["required"] is True
    assert headers["TooManyRequests"]["headers"]["Retry-After"]["required"] is True
    assert headers["ServiceUnavailable"]["headers"]["Retry-After"]["required"] is True


def test_403_is_documented_exactly_where_the_role_matrix_refuses_a_role(
    spec: dict[str, Any],
) -> None:
    for method, path, operation in _operations(spec):
        if not path.startswith("/v1/"):
            continue
        allowed = PUBLIC_ROUTES[(method.upper(), _rule_of(path))]
        assert ("403" in operation["responses"]) == (allowed != EVERYONE), (method, path)


def test_what_a_route_decides_is_documented_on_it(spec: dict[str, Any]) -> None:
    paths = spec["paths"]
    assert {"409", "422"} <= set(paths["/v1/runs"]["post"]["responses"])
    assert "422" in paths["/v1/agents"]["post"]["responses"]
    assert "409" in paths["/v1/runs/{run_id}/cancel"]["post"]["responses"]
    assert "409" in paths["/v1/approvals/{approval_id}/approve"]["post"]["responses"]
    assert {"413", "422"} <= set(paths["/v1/policies"]["put"]["responses"])


async def test_the_documented_error_shape_is_what_the_gateway_sends(
    client: Client, spec: dict[str, Any], admin: dict[str, str]
) -> None:
    error_body = _validator(spec, {"$ref": "#/components/schemas/ErrorBody"})
    answers = [
        await client.get("/v1/runs"),
        await client.get("/v1/runs?limit=0", headers=admin),
        await client.get("/v1/runs/0190f6c8-2b51-7c4e-9a3d-5f1e8b2c4a7d", headers=admin),
        await client.post("/v1/runs", json={"agent": "nobody", "input": "x"}, headers=admin),
    ]
    assert [a.status_code for a in answers] == [401, 400, 404, 422]
    for answer in answers:
        error_body.validate(await answer.get_json())
    assert answers[0].headers["WWW-Authenticate"].startswith("Bearer")


def test_idempotency_key_is_a_declared_header_and_a_created_run_its_location(
    spec: dict[str, Any],
) -> None:
    create = spec["paths"]["/v1/runs"]["post"]
    headers = {p["name"]: p for p in create["parameters"] if p["in"] == "header"}
    assert headers["Idempotency-Key"]["schema"]["maxLength"] == 200
    assert create["responses"]["202"]["headers"]["Location"]["required"] is True
    assert "Idempotent-Replayed" in create["responses"]["202"]["headers"]


def test_the_event_stream_and_the_probes_have_real_responses(spec: dict[str, Any]) -> None:
    events = spec["paths"]["/v1/events"]["get"]["responses"]["200"]["content"]
    stream = events["text/event-stream"]
    live_event = _validator(spec, stream["x-item-schema"])
    documented = {
        variant["properties"]["event"]["const"]
        for variant in spec["components"]["schemas"]["LiveEvent"]["oneOf"]
    }
    assert documented == {name.value for name in EventName}
    live_event.validate({"event": "ready"})
    assert not live_event.is_valid({"event": "run", "data": {"project": "p"}})
    for probe in ("/healthz", "/readyz"):
        operation = spec["paths"][probe]["get"]
        assert "200" in operation["responses"], probe
        assert operation["security"] == [], f"{probe} answers without a key"

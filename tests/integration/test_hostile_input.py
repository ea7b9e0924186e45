"""Hostile input is harmless: a clear 4xx JSON error, never a 500, never a partial write."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest
from quart.typing import TestClientProtocol as Client

from services.contract.api import Role
from services.gateway.audit import Actor
from services.gateway.store.keys import create_key

LISTS = ["/v1/runs", "/v1/agents", "/v1/approvals", "/v1/policies", "/v1/audit"]
UUID_ROUTES = [
    ("GET", "/v1/runs/{}"),
    ("GET", "/v1/runs/{}/steps"),
    ("POST", "/v1/runs/{}/cancel"),
    ("GET", "/v1/approvals/{}"),
    ("POST", "/v1/approvals/{}/approve"),
    ("POST", "/v1/approvals/{}/reject"),
    ("DELETE", "/v1/keys/{}"),
]
BODIES = [
    ("POST", "/v1/agents"),
    ("POST", "/v1/runs"),
    ("PUT", "/v1/policies"),
    ("POST", "/v1/policies/evaluate"),
    ("POST", "/v1/keys"),
]


async def _error(response: Any) -> dict[str, Any]:
    body = await response.get_json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert error["code"]
    assert error["message"]
    return error


async def _rows(db: asyncpg.Pool) -> tuple[int, ...]:
    counts = await db.fetchrow(
        """SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM agents),
                  (SELECT count(*) FROM policies), (SELECT count(*) FROM api_keys)"""
    )
    return tuple(counts)


@pytest.mark.parametrize(
    "payload",
    [
        b"{",
        b"[1, 2",
        b"\xff\xfe",
        b"null",
        b"42",
        b'"a string"',
        b"[]",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    ],
)
async def test_malformed_and_deeply_nested_bodies_write_nothing(
    client: Client, admin: dict[str, str], db: asyncpg.Pool, payload: bytes
) -> None:
    before = await _rows(db)
    for method, path in BODIES:
        # quart's TestClientProtocol.open omits the default QuartClient.open gives `json`.
        response = await client.open(  # type: ignore[call-arg]
            path,
            method=method,
            data=payload,
            headers={**admin, "Content-Type": "application/json"},
        )
        assert response.status_code in (400, 413), (path, response.status_code)
        await _error(response)
    assert await _rows(db) == before


async def test_unknown_fields_long_strings_and_wrong_types_are_named(
    client: Client, admin: dict[str, str], db: asyncpg.Pool
) -> None:
    before = await _rows(db)
    cases: list[tuple[str, str, dict[str, Any], str]] = [
        ("POST", "/v1/agents", {"name": "a", "model": "scripted", "colour": "red"}, "colour"),
        ("POST", "/v1/agents", {"name": "a" * 5000, "model": "scripted"}, "name"),
        ("POST", "/v1/agents", {"name": "a", "model": "scripted", "tools": "time.*"}, "tools"),
        ("POST", "/v1/runs", {"agent": "a", "input": ["x"]}, "input"),
        ("POST", "/v1/runs", {"agent": "a", "input": "x", "metadata": [1]}, "metadata"),
        ("PUT", "/v1/policies", {"rules": [{"id": "x" * 500, "effect": "allow"}]}, "rules.0.id"),
        ("POST", "/v1/policies/evaluate", {"agent": "a", "tool": 5}, "tool"),
        ("POST", "/v1/keys", {"name": "k", "role": "root"}, "role"),
    ]
    for method, path, body, field in cases:
        response = await client.open(path, method=method, json=body, headers=admin)
        assert response.status_code == 400, (path, body)
        assert field in (await _error(response))["message"], (path, field)
    assert await _rows(db) == before


async def test_nul_characters_anywhere_in_a_body_are_refused_by_name(
    client: Client, admin: dict[str, str], db: asyncpg.Pool
) -> None:
    """PostgreSQL cannot store NUL in text or jsonb: a 400 that says so, never a 500."""
    before = await _rows(db)
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/v1/runs", {"agent": "a", "input": "x\x00y"}),
        ("POST", "/v1/runs", {"agent": "a", "input": "x", "metadata": {"deep": [{"k": "\x00"}]}}),
        ("POST", "/v1/runs", {"agent": "a", "input": "x", "metadata": {"\x00": 1}}),
        ("POST", "/v1/agents", {"name": "a", "model": "scripted", "system_prompt": "\x00"}),
    ]
    for method, path, body in cases:
        response = await client.open(path, method=method, json=body, headers=admin)
        assert response.status_code == 400, (path, body, response.status_code)
        error = await _error(response)
        assert error["code"] == "nul_character", error
        assert "NUL" in error["message"]
    escaped = await client.post(
        "/v1/runs", json={"agent": "nobody", "input": "a backslash then \\u0000"}, headers=admin
    )
    assert escaped.status_code == 422  # text that only looks like an escape is fine
    assert await _rows(db) == before


@pytest.mark.parametrize("bad", ["nope", "1234", str(uuid.uuid4()).upper() + "x"])
async def test_bad_ids_are_not_found(client: Client, admin: dict[str, str], bad: str) -> None:
    for method, template in UUID_ROUTES:
        response = await client.open(
            template.format(bad), method=method, json={"reason": "x"}, headers=admin
        )
        assert response.status_code == 404, (template, response.status_code)
        await _error(response)


@pytest.mark.parametrize(
    "query", ["cursor=!!", "cursor=W251bGxd", "limit=-1", "limit=abc", "limit=1e9"]
)
async def test_bad_paging_is_a_bad_request(
    client: Client, admin: dict[str, str], query: str
) -> None:
    for path in LISTS:
        response = await client.get(f"{path}?{query}", headers=admin)
        assert response.status_code == 400, (path, query, response.status_code)
        await _error(response)


async def test_oversized_bodies_are_413(client: Client, admin: dict[str, str]) -> None:
    response = await client.post(
        "/v1/runs",
        data=b'{"agent": "a", "input": "' + b"x" * 200_000 + b'"}',
        headers={**admin, "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    error = await _error(response)
    assert error["code"] == "request_entity_too_large"
    assert "bytes" in error["message"], "the caller learns the limit"
    assert any(ch.isdigit() for ch in error["message"])


async def test_an_unknown_endpoint_says_which_request_found_nothing(
    client: Client, admin: dict[str, str]
) -> None:
    response = await client.get("/v1/rums", headers=admin)
    assert response.status_code == 404
    assert (await _error(response))["message"].startswith("no such endpoint: GET /v1/rums")


async def test_a_role_refused_is_named_in_good_english(client: Client, db: asyncpg.Pool) -> None:
    async with db.acquire() as conn:
        _, secret = await create_key(
            conn, "grammar", Role.INTEGRATION, "default", Actor.system("tests")
        )
    response = await client.post(
        "/v1/agents",
        json={"name": "grammar", "model": "scripted"},
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert response.status_code == 403
    assert (await _error(response))["message"].startswith("an integration key may not")


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (b'{"agent": "a", "input": "x", "metadata": {"k": "\\ud800"}}', "lone surrogate"),
        (b'{"agent": "a", "input": "x", "metadata": {"\\udfff": 1}}', "lone surrogate"),
        (b'{"agent": "a", "input": "\\ud83d"}', "lone surrogate"),
        (b'{"agent": "a", "input": "x", "metadata": {"k": NaN}}', "NaN"),
        (b'{"agent": "a", "input": "x", "metadata": {"k": [Infinity]}}', "Infinity"),
        (b'{"agent": "a", "input": "x", "metadata": {"k": -Infinity}}', "Infinity"),
    ],
)
async def test_json_that_is_not_json_text_is_refused_at_parse_time(
    client: Client, admin: dict[str, str], db: asyncpg.Pool, payload: bytes, says: str
) -> None:
    """Python's parser takes NaN and lone surrogates; PostgreSQL and every other JSON
    reader do not, so they were a 500 after validation had passed."""
    before = await _rows(db)
    for path in ("/v1/runs", "/v1/policies/evaluate"):
        response = await client.post(
            path, data=payload, headers={**admin, "Content-Type": "application/json"}
        )
        assert response.status_code == 400, (path, response.status_code)
        error = await _error(response)
        assert error["code"] == "invalid_json", error
        assert says in error["message"]
    paired = b'{"agent": "nobody", "input": "\\ud83d\\ude00 NaN Infinity"}'
    response = await client.post(
        "/v1/runs", data=paired, headers={**admin, "Content-Type": "application/json"}
    )
    assert response.status_code == 422  # a surrogate pair is an emoji; words are words
    assert await _rows(db) == before


async def test_evaluate_refuses_nan_arguments(client: Client, admin: dict[str, str]) -> None:
    response = await client.post(
        "/v1/policies/evaluate",
        data=b'{"agent": "a", "tool": "x.y", "arguments": {"a": NaN}}',
        headers={**admin, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert (await _error(response))["code"] == "invalid_json"


@pytest.mark.parametrize("path", ["/v1/agents/%00", "/v1/agents/a%00b", "/v1/runs?agent=%00"])
async def test_a_nul_character_in_a_path_or_query_is_refused(
    client: Client, admin: dict[str, str], path: str
) -> None:
    response = await client.get(path, headers=admin)
    assert response.status_code == 400, response.status_code
    assert (await _error(response))["code"] == "nul_character"


async def test_a_json_body_without_its_content_type_is_told_which_header_to_send(
    client: Client, admin: dict[str, str]
) -> None:
    """Valid JSON sent as curl's `-d` sends it (form-encoded), or with no type at all:
    a 415 that names the header, not "Input should be a valid dictionary"."""
    body = b'{"agent": "nobody", "input": "x"}'
    for content_type in (None, "application/x-www-form-urlencoded", "text/plain"):
        headers = dict(admin) if content_type is None else {**admin, "Content-Type": content_type}
        for response in (
            await client.post("/v1/runs", data=body, headers=headers),
            await client.put("/v1/policies", data=body, headers=headers),
        ):
            assert response.status_code == 415, content_type
            error = await _error(response)
            assert error["code"] == "unsupported_media_type"
            assert "Content-Type: application/json" in error["message"]
            assert (content_type or "none") in error["message"]
    sent_as_json = await client.post(
        "/v1/runs", data=body, headers={**admin, "Content-Type": "application/json"}
    )
    assert sent_as_json.status_code == 422, "the same body, said to be JSON, is read"


async def test_a_malformed_id_is_named_as_such_in_the_apis_own_error(
    client: Client, admin: dict[str, str]
) -> None:
    for url, method, noun in (
        ("/v1/runs/nope", "GET", "run"),
        ("/v1/runs/nope/steps", "GET", "run"),
        ("/v1/runs/12345/cancel", "POST", "run"),
        ("/v1/approvals/x/approve", "POST", "approval"),
        ("/v1/keys/k1", "DELETE", "key"),
    ):
        response = await client.open(url, method=method, headers=admin, json=None)
        assert response.status_code == 404, url
        assert response.content_type == "application/json"
        error = await _error(response)
        assert error["code"] == "not_found"
        value = url.split("/")[3]
        assert error["message"].startswith(f"no {noun} {value!r}: a {noun} id is a UUID"), error


async def test_a_method_a_path_does_not_take_is_405_with_the_ones_it_does(
    client: Client, admin: dict[str, str]
) -> None:
    response = await client.delete("/v1/runs", headers=admin)
    assert response.status_code == 405
    assert set(response.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    assert (await _error(response))["code"] == "method_not_allowed"


async def test_a_moment_in_a_query_is_a_date_time_not_a_number(
    client: Client, admin: dict[str, str]
) -> None:
    """pydantic would read `0.0` as 1970: a window nobody asked for, from input the
    document calls invalid."""
    for url in (
        "/v1/runs/summary?until=0",
        "/v1/audit?since=0.0",
        "/v1/audit?until=-63312",
        "/v1/runs?created_after=1e9",
    ):
        response = await client.get(url, headers=admin)
        assert response.status_code == 400, url
        assert "ISO 8601" in (await _error(response))["message"], url
    for url in (
        "/v1/runs/summary?until=2026-01-31T12:00:00Z",
        "/v1/audit?since=2026-01-31T12:00:00Z",
    ):
        assert (await client.get(url, headers=admin)).status_code == 200, url

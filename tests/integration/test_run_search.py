"""`GET /v1/runs?text=&created_after=&created_before=`: finding a run by what it was asked
or answered and when, in the database, instead of in the rows a deck has loaded; and a
search whose cost is bounded however long the project's history."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import asyncpg
import pytest
from quart.typing import TestClientProtocol as Client

from services.contract.api import Role
from services.contract.ids import first_uuid7_at
from services.gateway.audit import Actor
from services.gateway.store import runs as run_store
from services.gateway.store.keys import create_key

_BASE = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
_Row = tuple[int, str, str, str, str | None]
"""A run to insert: minute, agent, status, input, output."""


async def _project(db: asyncpg.Pool, client: Client) -> tuple[str, dict[str, str]]:
    name = f"search-{uuid.uuid4().hex[:6]}"
    async with db.acquire() as conn:
        _, secret = await create_key(conn, "search", Role.ADMIN, name, Actor.system("t"))
    admin = {"Authorization": f"Bearer {secret}"}
    for agent in ("alpha", "beta"):
        created = await client.post(
            "/v1/agents", json={"name": agent, "model": "scripted"}, headers=admin
        )
        assert created.status_code == 201
    return name, admin


def _id_at(minute: int) -> uuid.UUID:
    """Of that minute, random within it: ids are unique across the tests' projects."""
    return uuid.UUID(
        int=first_uuid7_at(_BASE + timedelta(minutes=minute)).int | secrets.randbits(62)
    )


async def _insert(
    db: asyncpg.Pool,
    project: str,
    runs: list[_Row],
) -> dict[int, str]:
    """(minute, agent, status, input, output) each; answers each run's id by minute."""
    ids = {minute: _id_at(minute) for minute, *_ in runs}
    await db.execute(
        """INSERT INTO runs (id, project, agent_name, agent_version, status, input, output)
           SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::integer[],
                                $5::text[], $6::text[], $7::text[])""",
        [ids[r[0]] for r in runs],
        [project] * len(runs),
        [r[1] for r in runs],
        [1] * len(runs),
        [r[2] for r in runs],
        [r[3] for r in runs],
        [r[4] for r in runs],
    )
    return {minute: str(run_id) for minute, run_id in ids.items()}


async def _all_pages(client: Client, admin: dict[str, str], query: str) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor = ""
    while True:
        response = await client.get(f"/v1/runs?{query}{cursor}", headers=admin)
        assert response.status_code == 200, await response.get_data()
        page = await response.get_json()
        pages.append([r["id"] for r in page["items"]])
        if page["next_cursor"] is None:
            return pages
        cursor = f"&cursor={page['next_cursor']}"


async def test_text_is_found_in_input_or_output_in_any_case_with_the_other_filters(
    client: Client, db: asyncpg.Pool
) -> None:
    project, admin = await _project(db, client)
    ids = await _insert(
        db,
        project,
        [
            (1, "alpha", "completed", "refund order 1881", "Refund issued"),
            (2, "beta", "completed", "weather in Oslo", "It rains; no REFUND needed"),
            (3, "alpha", "failed", "Refund order 1990", None),
            (4, "alpha", "completed", "weather in Rome", "sunny"),
            (5, "beta", "queued", "REFUNDS policy?", None),
        ],
    )
    pages = await _all_pages(client, admin, "text=refund&limit=2")
    assert [run for page in pages for run in page] == [ids[5], ids[3], ids[2], ids[1]]
    assert all(len(page) <= 2 for page in pages)

    only_alpha = await _all_pages(client, admin, "text=ReFund&agent=alpha")
    assert only_alpha == [[ids[3], ids[1]]]
    completed = await _all_pages(client, admin, "text=refund&status=completed")
    assert completed == [[ids[2], ids[1]]]
    assert await _all_pages(client, admin, "text=rains%3B%20no") == [[ids[2]]]
    assert await _all_pages(client, admin, "text=%25") == [[]]  # no LIKE pattern


async def test_a_time_window_lists_the_runs_created_in_it(client: Client, db: asyncpg.Pool) -> None:
    project, admin = await _project(db, client)
    ids = await _insert(
        db, project, [(m, "alpha", "completed", f"ticket {m}", None) for m in range(6)]
    )
    after = quote((_BASE + timedelta(minutes=2)).isoformat())
    before = quote((_BASE + timedelta(minutes=4)).isoformat())
    window = await _all_pages(client, admin, f"created_after={after}&created_before={before}")
    assert window == [[ids[3], ids[2]]]
    assert await _all_pages(client, admin, f"created_before={before}&limit=3") == [
        [ids[3], ids[2], ids[1]],
        [ids[0]],
    ]
    searched = await _all_pages(client, admin, f"text=ticket%205&created_after={after}")
    assert searched == [[ids[5]]]


async def test_a_search_reads_within_its_bounds_and_goes_on_from_a_cursor(
    client: Client, db: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page may be empty and still have a cursor: the search stopped at its bounds, not
    at the end, and the next page reads on from where it stopped."""
    project, admin = await _project(db, client)
    runs: list[_Row] = [(m, "alpha", "completed", "x" * 100, None) for m in range(25)]
    runs[2] = (2, "alpha", "completed", "needle" + "x" * 94, None)
    ids = await _insert(db, project, runs)

    monkeypatch.setattr(run_store, "SEARCH_ROWS", 10)
    pages = await _all_pages(client, admin, "text=needle")
    assert pages == [[], [], [ids[2]]]

    monkeypatch.setattr(run_store, "SEARCH_ROWS", 5_000)
    monkeypatch.setattr(run_store, "SEARCH_BYTES", 250)  # two runs of 100 bytes a page
    pages = await _all_pages(client, admin, "text=needle")
    assert [run for page in pages for run in page] == [ids[2]]
    assert pages.index([ids[2]]) == 11  # runs 24..1, two a page: the twelfth page
    assert len(pages) == 13


async def test_another_projects_runs_are_never_found(client: Client, db: asyncpg.Pool) -> None:
    project, admin = await _project(db, client)
    ids = await _insert(db, project, [(1, "alpha", "completed", "secret plan", "the plan")])
    assert await _all_pages(client, admin, "text=secret") == [[ids[1]]]
    _, other = await _project(db, client)
    after = quote(_BASE.isoformat())
    assert await _all_pages(client, other, "text=secret") == [[]]
    assert await _all_pages(client, other, f"text=plan&created_after={after}&agent=alpha") == [[]]
    assert await _all_pages(client, other, f"created_after={after}") == [[]]


@pytest.mark.parametrize(
    "query",
    [
        "text=",
        f"text={'x' * 201}",
        "created_after=2026-06-01T12:00:00",  # no offset: whose noon?
        "created_after=yesterday",
        "created_after=2026-06-01T12:00:00Z&created_before=2026-06-01T12:00:00Z",
        "created_after=2026-06-02T00:00:00Z&created_before=2026-06-01T00:00:00Z",
    ],
)
async def test_bad_searches_are_400(client: Client, admin: dict[str, str], query: str) -> None:
    response = await client.get(f"/v1/runs?{query}", headers=admin)
    assert response.status_code == 400
    assert (await response.get_json())["error"]["code"] == "validation_error"


async def test_a_moment_before_any_id_is_no_bound(client: Client, db: asyncpg.Pool) -> None:
    project, admin = await _project(db, client)
    ids = await _insert(db, project, [(1, "alpha", "completed", "a", None)])
    old = quote("0001-01-01T00:00:00+00:00")
    assert await _all_pages(client, admin, f"created_after={old}") == [[ids[1]]]
    assert await _all_pages(client, admin, f"created_before={old}") == [[]]

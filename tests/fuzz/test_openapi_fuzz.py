"""Property-based fuzzing of the whole public API from its own OpenAPI schema.

Schemathesis generates requests for every documented operation — valid and invalid
bodies, query strings and path parameters — and sends them, authenticated, to a real
gateway process, with every check it has: never a 5xx; every status, content type,
header and body as documented (errors included: `{"error": …}` with their headers);
invalid input refused and valid input accepted; a request without the key refused; an
undocumented method answered 405 with `Allow`. A project of its own keeps the fuzzing
away from other tests' data. The routes the schema leaves out because they are not the
API (the docs page's assets) are fuzzed by hand, against the same process, and so is the
one response no generated request can read to its end (the event stream).

What valid input may still be refused, and why, is configured below rather than left to
fail: a cursor is a token the API issued (a generated one is refused, 400), a name may
not exist (422), and a few rules of a policy are beyond JSON Schema (400).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from schemathesis import GenerationMode
from schemathesis.core.result import Err

from services.contract.api import Role
from services.devstack.embedded import free_port
from services.gateway.audit import Actor
from services.gateway.routes.docs_assets import ASSETS
from services.gateway.store.keys import create_key
from testbed.processes import serving

EXAMPLES_PER_OPERATION = 20

# Valid input a generator cannot know to be refused: a name that may not exist is 422
# (`unknown_agent`, `unknown_model`), and everywhere else the defaults hold.
ACCEPTED = ["2xx", "401", "403", "404", "409", "422", "429"]
# Invalid input is refused as schemathesis expects, or as 413 when what makes it invalid
# is its size: a string past its maxLength can take the body past the gateway's limit,
# which is checked before the body is read.
REFUSED = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]
CONFIG = {
    "checks": {
        "positive_data_acceptance": {"expected-statuses": ACCEPTED},
        "negative_data_rejection": {"expected-statuses": REFUSED},
    },
    "operations": [
        {
            # Beyond JSON Schema: a regex must compile as RE2, rule ids are unique,
            # identical calls in a row are at most the calls in the run, a window of runs
            # ends after it starts, and a run's last message is the user's.
            "include-name": [
                "PUT /v1/policies",
                "POST /v1/policies/evaluate",
                "GET /v1/runs",
                "POST /v1/runs",
            ],
            "checks": {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED, "400"]}},
        }
    ],
}


@pytest.fixture(scope="module")
async def fuzz_key(db: asyncpg.Pool) -> str:
    async with db.acquire() as conn:
        _, secret = await create_key(
            conn, "fuzzer", Role.ADMIN, f"fuzz-{uuid.uuid4().hex[:6]}", Actor.system("tests")
        )
    return secret


@pytest.fixture(scope="module")
async def fuzz_gateway(
    database_url: str, redis_url: str, models_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "FERRUMDECK_DATABASE_URL": database_url,
        "FERRUMDECK_REDIS_URL": redis_url,
        "FERRUMDECK_STREAM_PREFIX": f"fdtest:fuzz-{uuid.uuid4().hex[:8]}",
        "FERRUMDECK_MODELS": str(models_file),
        "FERRUMDECK_PORT": str(port),
        # The check that a request without the key is refused sends hundreds of them; past
        # the limit every request of this client would be 429 (tested in test_access).
        "FERRUMDECK_AUTH_FAILURE_LIMIT": "1000000",
    }
    log = tmp_path_factory.mktemp("fuzz") / "gateway.log"
    async with serving("gateway", env, log, ready_url=f"{url}/readyz"):
        yield url


def _holds_nul(value: Any) -> bool:
    """NUL is valid JSON that no text column stores: refused by name (400
    `nul_character`, test_hostile_input), so no valid request carries one."""
    return "\\u0000" in json.dumps(value, default=str)


def _as_valid_as_it_claims(case: schemathesis.Case) -> schemathesis.Case:
    if case.meta is not None and case.meta.generation.mode is GenerationMode.POSITIVE:
        if case.query:
            case.query.pop("cursor", None)  # only the API makes cursors
        assume(not _holds_nul([case.query, case.body, case.path_parameters]))
    return case


def test_no_generated_request_breaks_the_contract(fuzz_gateway: str, fuzz_key: str) -> None:
    api = schemathesis.openapi.from_url(
        f"{fuzz_gateway}/openapi.json", config=schemathesis.Config.from_dict(CONFIG)
    )
    headers = {"Authorization": f"Bearer {fuzz_key}"}
    sent: dict[str, int] = {}
    for result in api.get_all_operations():
        if isinstance(result, Err):
            pytest.fail(f"schemathesis cannot read an operation of the schema: {result.err()}")
        operation = result.ok()
        if operation.label == "GET /v1/events":
            continue  # never ends; test_the_event_stream_is_as_documented reads its start
        cases = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE, headers=headers),
            operation.as_strategy(GenerationMode.NEGATIVE, headers=headers),
        ).map(_as_valid_as_it_claims)

        @given(case=cases)
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
        )
        def holds(case: schemathesis.Case) -> None:
            sent[case.operation.label] = sent.get(case.operation.label, 0) + 1
            # No `checks=`: every check schemathesis has.
            case.call_and_validate(base_url=fuzz_gateway, headers=headers)

        holds()
    print(f"fuzzed {len(sent)} operations with {sum(sent.values())} requests")
    assert len(sent) >= 25


def test_the_event_stream_is_as_documented(fuzz_gateway: str, fuzz_key: str) -> None:
    spec = httpx.get(f"{fuzz_gateway}/openapi.json").json()
    documented = spec["paths"]["/v1/events"]["get"]["responses"]["200"]["content"]
    event_schema = {**documented["text/event-stream"]["x-item-schema"], **spec}
    headers = {"Authorization": f"Bearer {fuzz_key}"}
    with httpx.stream("GET", f"{fuzz_gateway}/v1/events", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        first = next(lines)
    assert first == "event: ready"
    Draft202012Validator(event_schema).validate({"event": "ready"})
    refused = httpx.get(f"{fuzz_gateway}/v1/events")
    assert "401" in spec["paths"]["/v1/events"]["get"]["responses"]
    assert refused.status_code == 401


# Names a caller might try to climb out of the assets with, besides arbitrary text.
_CLIMBS = st.lists(st.sampled_from(["..", ".", "", "%2e%2e", "settings.py", "__init__.py"]))
_ASSET_NAMES = st.one_of(
    st.sampled_from(sorted(ASSETS)),
    st.text(max_size=40),
    _CLIMBS.map("/".join),
    _CLIMBS.map("\\".join),
)


def test_no_asset_name_serves_more_than_the_docs_page_needs(fuzz_gateway: str) -> None:
    with httpx.Client(base_url=fuzz_gateway) as http:

        @given(name=_ASSET_NAMES)
        @settings(
            max_examples=300,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
        )
        def holds(name: str) -> None:
            # Every byte escaped, dots too: the gateway, not the client, resolves a climb.
            escaped = "".join(f"%{byte:02X}" for byte in name.encode())
            response = http.get(f"/docs/assets/{escaped}")
            if name in ASSETS:
                assert response.status_code == 200
                return
            if response.status_code == 308:  # werkzeug merges doubled slashes, on every route
                assert response.headers["Location"].startswith(f"{fuzz_gateway}/docs/assets/")
                return
            refused = 400 if "\x00" in name else 404
            assert response.status_code == refused, (name, response.status_code)
            assert "code" in response.json()["error"], name

        holds()

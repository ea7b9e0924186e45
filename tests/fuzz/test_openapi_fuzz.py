"""Property-based fuzzing of the whole public API from its own OpenAPI schema.

Schemathesis generates requests for every documented operation — valid and invalid
bodies, query strings and path parameters — and sends them, authenticated, to a real
gateway process. Whatever it sends, the gateway must never answer 5xx, and every
documented response must match its schema. A project of its own keeps the fuzzing away
from other tests' data. The routes the schema leaves out because they are not the API
(the docs page's assets) are fuzzed by hand, against the same process.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error, response_schema_conformance
from schemathesis.core.result import Err

from services.contract.api import Role
from services.devstack.embedded import free_port
from services.gateway.audit import Actor
from services.gateway.routes.docs_assets import ASSETS
from services.gateway.store.keys import create_key
from testbed.processes import serving

EXAMPLES_PER_OPERATION = 10


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
    }
    log = tmp_path_factory.mktemp("fuzz") / "gateway.log"
    async with serving("gateway", env, log, ready_url=f"{url}/readyz"):
        yield url


def test_no_generated_request_breaks_the_gateway(fuzz_gateway: str, fuzz_key: str) -> None:
    api = schemathesis.openapi.from_url(f"{fuzz_gateway}/openapi.json")
    headers = {"Authorization": f"Bearer {fuzz_key}"}
    sent: dict[str, int] = {}
    for result in api.get_all_operations():
        if isinstance(result, Err):
            pytest.fail(f"schemathesis cannot read an operation of the schema: {result.err()}")
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
        )
        def holds(case: schemathesis.Case) -> None:
            sent[case.operation.label] = sent.get(case.operation.label, 0) + 1
            case.call_and_validate(
                base_url=fuzz_gateway,
                headers=headers,
                checks=[not_a_server_error, response_schema_conformance],
            )

        holds()
    print(f"fuzzed {len(sent)} operations with {sum(sent.values())} requests")
    assert len(sent) >= 20


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

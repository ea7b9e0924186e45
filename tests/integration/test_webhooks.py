"""Webhooks for run endings, delivered over real HTTP to a receiver on 127.0.0.1.

The receiver checks every delivery with `standardwebhooks`, the specification's own
Python library, not with the gateway's signer: a delivery a third-party receiver
would reject fails the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart, request
from quart.typing import TestClientProtocol as Client
from standardwebhooks import Webhook, WebhookVerificationError

from services.contract.api import Role
from services.gateway.app import create_app
from services.gateway.audit import Actor
from services.gateway.settings import GatewaySettings
from services.gateway.store.keys import create_key
from testbed.waiting import eventually
from tests.support.harness import ToolHarness


@dataclass
class Receiver:
    url: str
    answers: list[int] = field(default_factory=list)
    """Statuses to answer with, one per request, then 204."""
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def verified(self, secret: str) -> list[dict[str, Any]]:
        """Every delivery's payload, each checked as a receiver would check it."""
        verifier = Webhook(secret)
        return [verifier.verify(body, headers) for headers, body in self.received]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    state = Receiver(url=f"http://127.0.0.1:{port}/hooks")
    app = Quart("receiver")

    @app.post("/hooks")
    async def hooks() -> tuple[str, int]:
        headers = {name.lower(): value for name, value in request.headers.items()}
        body = await request.get_data(as_text=False)
        assert isinstance(body, bytes)
        state.received.append((headers, body))
        return "", state.answers.pop(0) if state.answers else 204

    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))
    yield state
    stop.set()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.fixture
def settings(settings: GatewaySettings) -> GatewaySettings:
    return settings.model_copy(
        update={
            "webhook_allow_private": True,
            "webhook_retry_seconds": [0.2, 0.2],
            "webhook_poll_seconds": 0.05,
            "webhook_timeout_seconds": 5.0,
        }
    )


async def _hook(harness: ToolHarness, url: str, **fields: Any) -> dict[str, Any]:
    response = await harness.client.post(
        "/v1/webhooks", json={"url": url, **fields}, headers=harness.admin
    )
    assert response.status_code == 201, await response.get_json()
    created: dict[str, Any] = await response.get_json()
    return created


async def _finish(harness: ToolHarness, output: str) -> str:
    run_id, epoch = await harness.running()
    await harness.step(run_id, epoch, 1, final_output=output)
    return run_id


async def _deliveries(harness: ToolHarness, hook_id: str) -> list[dict[str, Any]]:
    response = await harness.client.get(f"/v1/webhooks/{hook_id}/deliveries", headers=harness.admin)
    assert response.status_code == 200
    items: list[dict[str, Any]] = (await response.get_json())["items"]
    return items


async def test_each_run_ending_is_delivered_once_signed_as_the_spec_says(
    harness: ToolHarness, receiver: Receiver
) -> None:
    hook = await _hook(harness, receiver.url)
    assert hook["secret"].startswith("whsec_")
    assert hook["events"] == ["run.completed", "run.failed", "run.cancelled", "run.budget_exceeded"]
    finished = [await _finish(harness, f"answer {n}") for n in range(2)]
    cancelled = await harness.run()
    response = await harness.client.post(f"/v1/runs/{cancelled}/cancel", headers=harness.admin)
    assert response.status_code == 200
    await eventually(lambda: asyncio.sleep(0, len(receiver.received)), lambda n: n >= 3)
    await asyncio.sleep(0.5)  # time for any duplicate to arrive
    payloads = receiver.verified(hook["secret"])
    by_run = {p["data"]["id"]: p for p in payloads}
    assert len(payloads) == len(by_run) == 3
    assert [by_run[r]["type"] for r in finished] == ["run.completed", "run.completed"]
    assert [by_run[r]["data"]["output"] for r in finished] == ["answer 0", "answer 1"]
    assert by_run[cancelled]["type"] == "run.cancelled"
    ids = {headers["webhook-id"] for headers, _ in receiver.received}
    log = await _deliveries(harness, hook["id"])
    assert {d["id"] for d in log} == ids
    assert {(d["status"], d["attempts"], d["last_status_code"]) for d in log} == {
        ("delivered", 1, 204)
    }


async def test_a_tampered_delivery_fails_the_receivers_check(
    harness: ToolHarness, receiver: Receiver
) -> None:
    hook = await _hook(harness, receiver.url)
    await _finish(harness, "the answer")
    await eventually(lambda: asyncio.sleep(0, len(receiver.received)), lambda n: n == 1)
    headers, body = receiver.received[0]
    with pytest.raises(WebhookVerificationError):
        Webhook(hook["secret"]).verify(body.replace(b"the answer", b"forged"), headers)
    other = (await _hook(harness, receiver.url))["secret"]
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, headers)


async def test_a_receiver_that_fails_once_gets_the_same_delivery_again(
    harness: ToolHarness, receiver: Receiver
) -> None:
    receiver.answers = [500]
    hook = await _hook(harness, receiver.url)
    run_id = await _finish(harness, "eventually")
    await eventually(lambda: asyncio.sleep(0, len(receiver.received)), lambda n: n == 2)
    first, second = receiver.verified(hook["secret"])
    assert first == second
    assert first["data"]["id"] == run_id
    assert receiver.received[0][0]["webhook-id"] == receiver.received[1][0]["webhook-id"]
    (delivery,) = await eventually(
        lambda: _deliveries(harness, hook["id"]), lambda d: d[0]["status"] == "delivered"
    )
    assert (delivery["attempts"], delivery["last_status_code"]) == (2, 204)


async def test_a_receiver_that_never_answers_2xx_ends_failed_and_can_be_sent_again(
    harness: ToolHarness, receiver: Receiver
) -> None:
    receiver.answers = [503, 503, 503]
    hook = await _hook(harness, receiver.url)
    await _finish(harness, "late")
    (delivery,) = await eventually(
        lambda: _deliveries(harness, hook["id"]), lambda d: d[0]["status"] == "failed"
    )
    assert (delivery["attempts"], delivery["last_status_code"]) == (3, 503)
    assert delivery["last_error"] == "the receiver answered 503"
    assert delivery["next_attempt_at"] is None
    response = await harness.client.post(
        f"/v1/webhooks/{hook['id']}/deliveries/{delivery['id']}/redeliver", headers=harness.admin
    )
    assert response.status_code == 200
    await eventually(lambda: asyncio.sleep(0, len(receiver.received)), lambda n: n == 4)
    (again,) = await eventually(
        lambda: _deliveries(harness, hook["id"]), lambda d: d[0]["status"] == "delivered"
    )
    assert again["attempts"] == 1


async def test_a_deleted_webhook_gets_nothing_more(
    harness: ToolHarness, receiver: Receiver
) -> None:
    hook = await _hook(harness, receiver.url)
    response = await harness.client.delete(f"/v1/webhooks/{hook['id']}", headers=harness.admin)
    assert response.status_code == 204
    listed = await (await harness.client.get("/v1/webhooks", headers=harness.admin)).get_json()
    assert hook["id"] not in [h["id"] for h in listed["items"]]
    await _finish(harness, "unheard")
    await asyncio.sleep(0.5)
    assert receiver.received == []
    assert await _deliveries(harness, hook["id"]) == []


async def test_another_project_neither_sees_nor_touches_a_webhook_nor_feeds_it(
    harness: ToolHarness, receiver: Receiver, client: Client, db: asyncpg.Pool
) -> None:
    hook = await _hook(harness, receiver.url)
    await _finish(harness, "mine")
    (delivery,) = await eventually(
        lambda: _deliveries(harness, hook["id"]), lambda d: d[0]["status"] == "delivered"
    )
    async with db.acquire() as conn:
        _, secret = await create_key(
            conn, "other", Role.ADMIN, f"other-{uuid.uuid4().hex[:6]}", Actor.system("t")
        )
    other = {"Authorization": f"Bearer {secret}"}
    base = f"/v1/webhooks/{hook['id']}"
    for method, url in [
        ("GET", f"{base}/deliveries"),
        ("POST", f"{base}/deliveries/{delivery['id']}/redeliver"),
        ("DELETE", base),
    ]:
        response = await client.open(url, method=method, json=None, headers=other)
        assert response.status_code == 404, (method, url)
    listed = await (await client.get("/v1/webhooks", headers=other)).get_json()
    assert listed["items"] == []
    theirs = ToolHarness(client, other, harness.worker)
    await _finish(theirs, "theirs")
    await asyncio.sleep(0.5)
    assert len(receiver.received) == 1


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.1.2.3/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://no-such-host.invalid/hook",
    ],
)
async def test_private_addresses_are_refused_unless_the_operator_allows_them(
    url: str, settings: GatewaySettings, admin: dict[str, str]
) -> None:
    strict = settings.model_copy(update={"webhook_allow_private": False})
    async with create_app(strict).test_app() as app:
        response = await app.test_client().post("/v1/webhooks", json={"url": url}, headers=admin)
        assert response.status_code == 422
        assert (await response.get_json())["error"]["code"] == "webhook_url_refused"


async def test_no_delivery_goes_to_a_private_address_when_the_allowance_is_off(
    settings: GatewaySettings,
    admin: dict[str, str],
    worker: dict[str, str],
    receiver: Receiver,
    db: asyncpg.Pool,
) -> None:
    """As when a public name starts resolving to a private address after registration."""
    strict = settings.model_copy(update={"webhook_allow_private": False})
    hook_id = uuid.uuid4()
    await db.execute(
        """INSERT INTO webhooks (id, project, url, events, secret)
           VALUES ($1, 'default', $2, ARRAY['run.completed'], $3)""",
        hook_id,
        receiver.url,
        "whsec_" + "A" * 32,
    )
    async with create_app(strict).test_app() as app:
        harness = ToolHarness(app.test_client(), admin, worker)
        await _finish(harness, "kept home")
        (delivery,) = await eventually(
            lambda: _deliveries(harness, str(hook_id)), lambda d: d[0]["status"] == "failed"
        )
    assert receiver.received == []
    assert "not a public address" in delivery["last_error"]

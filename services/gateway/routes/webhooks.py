"""`/v1/webhooks`: a project's webhooks for run endings, and their delivery log."""

from __future__ import annotations

import uuid

from quart import Blueprint
from quart_schema import tag, validate_querystring, validate_request, validate_response

from services.contract.api import PageQuery, Role
from services.contract.errors import ErrorCode
from services.contract.webhooks import (
    Delivery,
    DeliveryPage,
    WebhookCreate,
    WebhookCreated,
    WebhookList,
)
from services.gateway.auth import current_actor, project, require_role
from services.gateway.errors import UnprocessableEntity
from services.gateway.pagination import decode_cursor, paginate
from services.gateway.runtime import runtime
from services.gateway.store import webhooks as store
from services.gateway.webhook_addresses import RefusedAddress, check_url
from services.gateway.webhook_signing import new_secret

blueprint = Blueprint("webhooks", __name__, url_prefix="/v1/webhooks")
require_role(blueprint, Role.ADMIN)


@blueprint.post("")
@tag(["webhooks"])
@validate_request(WebhookCreate)
@validate_response(WebhookCreated, 201)
async def create_webhook(data: WebhookCreate) -> tuple[WebhookCreated, int]:
    """Deliver this project's run endings to `url`, signed as Standard Webhooks says.

    The signing secret is in this answer only. A URL whose host resolves to a loopback,
    link-local or private address is refused (422 `webhook_url_refused`) unless the
    operator allows them.
    """
    res = runtime()
    try:
        await check_url(str(data.url), allow_private=res.settings.webhook_allow_private)
    except RefusedAddress as exc:
        raise UnprocessableEntity(str(exc), code=ErrorCode.WEBHOOK_URL_REFUSED) from None
    secret = new_secret()
    hook = await store.create(res.pool, project(), data, secret, current_actor())
    return WebhookCreated(**hook.model_dump(), secret=secret), 201


@blueprint.get("")
@tag(["webhooks"])
@validate_response(WebhookList)
async def list_webhooks() -> WebhookList:
    return WebhookList(items=await store.list_webhooks(runtime().pool, project()))


@blueprint.delete("/<uuid:webhook_id>")
@tag(["webhooks"])
async def delete_webhook(webhook_id: uuid.UUID) -> tuple[str, int]:
    """No more deliveries, pending ones included; the delivery log stays readable."""
    await store.delete(runtime().pool, project(), webhook_id, current_actor())
    return "", 204


@blueprint.get("/<uuid:webhook_id>/deliveries")
@tag(["webhooks"])
@validate_querystring(PageQuery)
@validate_response(DeliveryPage)
async def list_deliveries(webhook_id: uuid.UUID, query_args: PageQuery) -> DeliveryPage:
    """Every delivery, newest first: its attempts, the last answer, when it is due again."""
    rows = await store.deliveries(
        runtime().pool,
        project(),
        webhook_id,
        before=decode_cursor(query_args.cursor, int),
        limit=query_args.limit + 1,
    )
    page, next_cursor = paginate(rows, query_args.limit, lambda row: [row[0]])
    return DeliveryPage(items=[delivery for _, delivery in page], next_cursor=next_cursor)


@blueprint.post("/<uuid:webhook_id>/deliveries/<uuid:delivery_id>/redeliver")
@tag(["webhooks"])
@validate_response(Delivery)
async def redeliver(webhook_id: uuid.UUID, delivery_id: uuid.UUID) -> Delivery:
    """Send a delivery again, from the start of the retry schedule."""
    res = runtime()
    delivery = await store.redeliver(res.pool, project(), webhook_id, delivery_id, current_actor())
    res.webhook_sender.wake()
    return delivery

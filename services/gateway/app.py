"""The gateway's Quart application factory."""

from __future__ import annotations

from quart import Quart
from quart_schema import QuartSchema
from redis.asyncio import Redis

from services.contract.audit_mac import EventSeal
from services.contract.model_catalog import ModelCatalog
from services.gateway import access_log, metrics, request_context, request_text
from services.gateway.audit import AuditChainer, chain_keys, checkpoint_signer
from services.gateway.backpressure import Backpressure, Bounds
from services.gateway.checkpoint_writer import CheckpointWriter
from services.gateway.db.connections import create_pool
from services.gateway.errors import register_error_handlers
from services.gateway.events import EventHub, event_hub
from services.gateway.model_access import ModelAccess
from services.gateway.openapi import ContractProvider
from services.gateway.outbox import OutboxRelay
from services.gateway.routes import (
    agents,
    approvals,
    audit,
    docs_assets,
    health,
    keys,
    policies,
    runs,
    threads,
    tools,
    webhooks,
    worker,
)
from services.gateway.routes import events as events_routes
from services.gateway.routes import metrics as metrics_routes
from services.gateway.routes import queue as queue_routes
from services.gateway.run_intake import RunIntake
from services.gateway.runtime import Runtime, runtime
from services.gateway.settings import GatewaySettings
from services.gateway.store import thread_queue
from services.gateway.sweeper import Sweeper
from services.gateway.webhook_sender import WebhookSender


def create_app(settings: GatewaySettings | None = None) -> Quart:
    settings = settings or GatewaySettings()
    audit_keys = chain_keys(settings)
    audit_signer = checkpoint_signer(settings)
    models = ModelAccess(ModelCatalog.load(settings.models), settings.provider_models)

    app = Quart("ferrumdeck")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    # `/docs` loads Swagger UI from the gateway, not a CDN: it renders with no internet.
    app.config["QUART_SCHEMA_SWAGGER_JS_URL"] = docs_assets.url("swagger-ui-bundle.js")
    app.config["QUART_SCHEMA_SWAGGER_CSS_URL"] = docs_assets.url("swagger-ui.css")
    QuartSchema(
        app,
        info={"title": "FerrumDeck", "version": "1"},
        security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
        security=[{"bearer": []}],
        redoc_ui_path=None,
        scalar_ui_path=None,
        openapi_provider_class=ContractProvider,
    )
    register_error_handlers(app)
    request_text.install(app)
    request_context.install(app)
    access_log.install(app)
    metrics.instrument(app)
    app.register_blueprint(metrics_routes.blueprint)
    app.register_blueprint(docs_assets.blueprint)
    for module in (
        health,
        agents,
        runs,
        threads,
        approvals,
        policies,
        tools,
        keys,
        audit,
        webhooks,
        worker,
    ):
        app.register_blueprint(module.blueprint)
    app.register_blueprint(events_routes.blueprint)
    app.register_blueprint(queue_routes.blueprint)

    @app.before_serving
    async def _open() -> None:
        pool = await create_pool(
            settings.database_url,
            seal=EventSeal(audit_keys),
            min_size=settings.db_pool_min,
            max_size=settings.db_pool_max,
        )
        redis = Redis.from_url(settings.redis_url)
        relay = OutboxRelay(
            pool,
            redis,
            settings.streams,
            batch=settings.relay_batch,
            poll_seconds=settings.relay_poll_seconds,
            window=settings.dispatch_window,
        )
        sweeper = Sweeper(
            pool,
            relay,
            redis,
            settings.streams,
            interval_seconds=settings.sweep_seconds,
            requeue_after=settings.requeue_after_seconds,
        )
        checkpoints = None
        if audit_signer is not None and settings.audit_checkpoint_dir is not None:
            checkpoints = CheckpointWriter(
                pool,
                audit_keys,
                audit_signer,
                settings.audit_checkpoint_dir,
                every_seconds=settings.audit_checkpoint_seconds,
            )
        chainer = AuditChainer(
            pool,
            audit_keys,
            poll_seconds=settings.audit_chain_seconds,
            signer=audit_signer,
            checkpoints=checkpoints,
        )
        backpressure = Backpressure(
            pool,
            redis,
            settings.streams,
            Bounds(settings.max_queue_lag, settings.max_oldest_pending_seconds),
            refresh_seconds=settings.backpressure_refresh_seconds,
        )
        run_intake = RunIntake(
            pool,
            batch_max=settings.run_intake_batch,
            in_flight=min(settings.run_intake_in_flight, settings.db_pool_max),
            queue_max=settings.db_pool_max * settings.run_intake_batch,
        )
        webhook_sender = WebhookSender(
            pool,
            retry_seconds=settings.webhook_retry_seconds,
            timeout_seconds=settings.webhook_timeout_seconds,
            poll_seconds=settings.webhook_poll_seconds,
            allow_private=settings.webhook_allow_private,
        )
        Runtime(
            settings,
            models,
            pool,
            redis,
            relay,
            sweeper,
            chainer,
            backpressure,
            run_intake=run_intake,
            webhook_sender=webhook_sender,
        ).install(app)
        relay.start()
        sweeper.start()
        chainer.start()
        webhook_sender.start()
        hub = EventHub(
            settings.database_url,
            redis,
            settings.streams,
            backpressure=backpressure,
            platform_view=settings.platform_view,
            also={thread_queue.CHANNEL: runtime().relay.on_notify},
        )
        hub.install(app)
        hub.keep_coherent(runtime().key_cache, runtime().agent_cache)
        hub.start()

    @app.after_serving
    async def _close() -> None:
        res = runtime()
        await res.run_intake.close()
        await event_hub().stop()
        await res.relay.stop()
        await res.sweeper.stop()
        await res.chainer.stop()
        await res.webhook_sender.stop()
        await res.close_redis()
        await res.pool.close()

    return app

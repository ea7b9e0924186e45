"""A worker process: connect to MCP servers, consume jobs until SIGINT/SIGTERM, drain.

It tells the service manager it is ready (`READY=1`) once it has joined the consumer
group and the gateway has its tool listing, so "started" means jobs are being read,
and `STOPPING=1` when it begins to drain.
Draining ends with the runs still going handed back (`Consumer.drain`), so a stop within
`drain_seconds` plus a few seconds is always clean, and the process exits 0.

Every resource is closed, in the reverse order it was opened, whatever fails and
wherever: a start that fails halfway must not leave MCP server processes, Redis and HTTP
clients or signal handlers behind (an embedding process, a test suite, carries on).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator

from redis.asyncio import Redis

from services.contract.model_catalog import ModelCatalog
from services.telemetry import logs
from services.telemetry.sd_notify import notify
from services.worker.agent_loop import AgentLoop
from services.worker.catalogue_reporter import CatalogueReporter
from services.worker.consumer import Consumer
from services.worker.gateway_client import GatewayClient
from services.worker.llm import LLM
from services.worker.mcp_config import load_mcp_servers, log_shared_servers
from services.worker.mcp_router import McpRouter
from services.worker.probe_server import ProbeServer, create_probe_app
from services.worker.settings import WorkerSettings
from services.worker.token_stream import TokenStreams

log = logging.getLogger(__name__)


async def run_worker(settings: WorkerSettings) -> None:
    if not settings.worker_token:
        raise SystemExit("FERRUMDECK_WORKER_TOKEN is not set: create a worker key first")
    logs.worker_id.set(settings.worker_id)
    catalog = ModelCatalog.load(settings.models)
    servers = load_mcp_servers(settings.mcp_servers)
    log_shared_servers(servers)
    async with contextlib.AsyncExitStack() as stack:
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            stack.enter_context(_stopping_on(sig, stop))
        redis = Redis.from_url(settings.redis_url)
        stack.push_async_callback(redis.aclose)
        gateway = GatewayClient(settings.url, settings.worker_token)
        stack.push_async_callback(gateway.aclose)
        catalogue_changed = asyncio.Event()
        router = McpRouter(
            servers,
            call_timeout_seconds=settings.tool_timeout_seconds,
            max_result_chars=settings.max_tool_result_chars,
            on_catalogue_change=catalogue_changed.set,
        )
        stack.push_async_callback(router.aclose)
        llm = LLM(catalog, settings.llm_timeout_seconds, settings.backoff(settings.llm_retries))
        stack.push_async_callback(llm.aclose)
        consumer = Consumer(
            redis,
            settings.streams,
            gateway,
            AgentLoop(
                gateway,
                llm,
                router,
                settings.heartbeat_seconds,
                tool_backoff=settings.backoff(settings.tool_retries),
                tokens=TokenStreams(redis, settings.streams),
            ),
            worker_id=settings.worker_id,
            max_in_flight=settings.max_in_flight,
            read_block_ms=settings.read_block_ms,
            reclaim_idle_seconds=settings.reclaim_idle_seconds,
            max_deliveries=settings.max_deliveries,
            max_loop_lag_seconds=settings.max_loop_lag_seconds,
        )
        await router.start()
        reporter = CatalogueReporter(gateway, router, settings.worker_id, changed=catalogue_changed)
        stack.push_async_callback(reporter.withdraw)
        reporting = asyncio.create_task(reporter.run(), name="catalogue-reporter")
        stack.push_async_callback(_cancel, reporting)
        probes = ProbeServer(
            create_probe_app(redis, settings.streams, gateway, settings.worker_id),
            settings.metrics_host,
            settings.metrics_port,
        )
        probes.start()
        stack.push_async_callback(probes.stop)
        await consumer.ensure_group()
        # The gateway refuses tool calls the lease holder has not listed: no job before
        # the listing is there (nor could one be claimed while the gateway is away).
        if not await _first_of(reporter.reported, stop):
            return
        log.info("worker %s consuming %s", settings.worker_id, settings.streams.runs)
        notify("READY=1")
        await consumer.run(stop)
        notify("STOPPING=1")
        log.info(
            "worker %s stopping: reading no more jobs; %d in flight get %gs to finish",
            settings.worker_id,
            consumer.in_flight,
            settings.drain_seconds,
        )
        await consumer.drain(settings.drain_seconds)


@contextlib.contextmanager
def _stopping_on(sig: signal.Signals, stop: asyncio.Event) -> Iterator[None]:
    """`sig` sets `stop` until the worker is done, then the handler from before is back:
    `remove_signal_handler` alone leaves Python's default, not the one `asyncio.run` set."""
    previous = signal.getsignal(sig)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(sig, stop.set)
    try:
        yield
    finally:
        loop.remove_signal_handler(sig)
        if previous is not None:
            signal.signal(sig, previous)


async def _first_of(wanted: asyncio.Event, stop: asyncio.Event) -> bool:
    """Wait for `wanted` unless `stop` comes first; whether it was `wanted`."""
    waits = [asyncio.create_task(event.wait()) for event in (wanted, stop)]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
    return wanted.is_set()


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

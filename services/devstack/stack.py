"""`ferrumdeck dev`: the whole platform on one machine, from one command.

Starts embedded PostgreSQL and Valkey (unless `FERRUMDECK_DATABASE_URL` /
`FERRUMDECK_REDIS_URL` point elsewhere), applies migrations, makes the bootstrap keys,
registers the `demo` agent (allowed the tools of the time MCP server the worker is given
unless `FERRUMDECK_MCP_SERVERS` names other servers), then runs gateway, worker and the
local demo model under honcho. When the gateway is ready it prints the URL and admin key
and writes them to `<home>/dev.env`; the settings its processes run with are in
`<home>/processes.env`. SIGINT/SIGTERM stops every process, then the embedded servers.

Stopping survives a closed stdout: under `make dev 2>&1 | tee log`, Ctrl-C ends `tee`
too, and honcho's next line ("SIGINT received") raised BrokenPipeError out of its loop
before it had told anyone to stop: the embedded servers were stopped on the way out and
the gateway, worker and demo model ran on, orphaned. Output now goes nowhere once the
pipe is gone, and the processes are stopped before the servers whatever ends the loop.
honcho kills what is left `KILL_WAIT` seconds after the first process stopped (5 by
default, while the worker drains for `drain_seconds`), so the wait is the drain's.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import honcho.manager
import httpx
import yaml
from honcho.manager import Manager
from honcho.printer import Message, Printer
from redis import Redis
from redis.exceptions import RedisError

from services.contract.api import AgentCreate, Role
from services.contract.audit_mac import EventSeal
from services.contract.jobs import StreamNames
from services.contract.model_catalog import ModelCatalog
from services.contract.runs import Budget
from services.contract.settings import CommonSettings
from services.devstack.app_role import app_role_url
from services.devstack.audit_key import audit_key_settings, audit_seal
from services.devstack.demo_llm import DEMO_LABEL, DEMO_MODEL
from services.devstack.embedded import EmbeddedPostgres, EmbeddedValkey, free_port
from services.gateway.audit import Actor
from services.gateway.db.connections import connect
from services.gateway.db.migrations import migrate
from services.gateway.model_access import ModelAccess
from services.gateway.settings import GatewaySettings
from services.gateway.store import agents as agent_store
from services.gateway.store.keys import create_key, key_is_valid
from services.worker.settings import WorkerSettings

DATABASE = "ferrumdeck"
DEMO_AGENT = "demo"
DEV_PROJECT = "default"
DEMO_SERVER = "time"
# The `FERRUMDECK_*` settings the stack gives its gateway and worker, for `ferrumdeck config`.
PROCESSES_ENV = "processes.env"
_DEV = Actor.system("ferrumdeck dev")
# Past the worker's drain, what its hand-back of unfinished runs may take.
_DRAIN_MARGIN_SECONDS = 10.0
_PROVIDER_DEFAULTS = (
    ("OPENAI_API_KEY", "openai/gpt-4o-mini"),
    ("ANTHROPIC_API_KEY", "anthropic/claude-3-5-haiku-latest"),
    ("GEMINI_API_KEY", "gemini/gemini-2.0-flash"),
)


@dataclass(frozen=True)
class Keys:
    admin: str
    worker: str


def provider_models() -> str:
    """The providers the dev stack allows by plain model string: the operator's
    `FERRUMDECK_PROVIDER_MODELS`, else those whose API key is in the environment (the
    demo agent may be using one)."""
    chosen = os.environ.get("FERRUMDECK_PROVIDER_MODELS")
    if chosen is not None:
        return chosen
    return ",".join(
        model.split("/", 1)[0] for env_name, model in _PROVIDER_DEFAULTS if os.environ.get(env_name)
    )


def demo_model() -> str:
    """The demo agent's model: the operator's choice, a real provider whose key is set,
    or the local demo model."""
    chosen = os.environ.get("FERRUMDECK_DEMO_MODEL")
    if chosen:
        return chosen
    for env_name, model in _PROVIDER_DEFAULTS:
        if os.environ.get(env_name):
            return model
    return DEMO_MODEL


def demo_mcp_servers(home: Path) -> tuple[str, list[str]]:
    """The worker's MCP servers file and the demo agent's tools: the operator's file (if
    `FERRUMDECK_MCP_SERVERS` names one; the demo agent gets none of its tools), else the
    time server from PyPI over stdio, whose tools the demo agent may call (policy
    permitting), so a first tool call needs no setup."""
    own = os.environ.get("FERRUMDECK_MCP_SERVERS")
    if own:
        return own, []
    path = home / "mcp.json"
    server = {
        "command": sys.executable,
        "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"],
    }
    path.write_text(json.dumps({"mcpServers": {DEMO_SERVER: server}}, indent=2))
    return str(path), [f"{DEMO_SERVER}.*"]


def write_models_file(home: Path, llm_port: int) -> Path:
    """The operator's models (if `FERRUMDECK_MODELS` names a file) plus the local demo model."""
    entries: list[dict[str, Any]] = []
    own = os.environ.get("FERRUMDECK_MODELS")
    if own:
        loaded = yaml.safe_load(Path(own).read_text()) or {}
        entries = [e for e in loaded.get("model_list", []) if e.get("model_name") != DEMO_MODEL]
    entries.append(
        {
            "model_name": DEMO_MODEL,
            "litellm_params": {
                "model": f"openai/{DEMO_MODEL}",
                "api_base": f"http://127.0.0.1:{llm_port}/v1",
                "api_key": "local-demo",
                "input_cost_per_token": 0.0,
                "output_cost_per_token": 0.0,
            },
            "model_info": {"description": DEMO_LABEL},
        }
    )
    path = home / "models.yaml"
    path.write_text(yaml.safe_dump({"model_list": entries}, sort_keys=False))
    return path


def _read_env_file(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def _write_env_file(path: Path, values: dict[str, str]) -> None:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    path.chmod(0o600)


async def _ensure_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def prepare_database(
    database_url: str,
    home: Path,
    model: str,
    models: ModelAccess,
    tools: list[str],
    seal: EventSeal,
) -> Keys:
    """Migrate, make (or reuse) the dev keys, and register the demo agent if it changed."""
    conn = await connect(database_url, seal=seal)
    try:
        await migrate(conn)
        keys_path = home / "keys.env"
        saved = _read_env_file(keys_path)
        admin, worker = saved.get("FERRUMDECK_API_KEY"), saved.get("FERRUMDECK_WORKER_TOKEN")
        if not (
            admin
            and worker
            and await key_is_valid(conn, admin)
            and await key_is_valid(conn, worker)
        ):
            _, admin = await create_key(conn, "dev-admin", Role.ADMIN, DEV_PROJECT, _DEV)
            _, worker = await create_key(conn, "dev-worker", Role.WORKER, None, _DEV)
            _write_env_file(
                keys_path, {"FERRUMDECK_API_KEY": admin, "FERRUMDECK_WORKER_TOKEN": worker}
            )
        await _register_demo_agent(conn, model, models, tools)
        return Keys(admin=admin, worker=worker)
    finally:
        await conn.close()


async def _register_demo_agent(
    conn: asyncpg.Connection, model: str, models: ModelAccess, tools: list[str]
) -> None:
    refusal = models.refusal(model, DEV_PROJECT)
    if refusal is not None:
        raise SystemExit(f"FERRUMDECK_DEMO_MODEL: {refusal}")
    spec = AgentCreate(
        name=DEMO_AGENT,
        model=model,
        system_prompt="You are FerrumDeck's demo agent. Answer briefly.",
        tools=tools,
        budget=Budget(max_steps=5),
    )
    latest = await agent_store.get_version(conn, DEV_PROJECT, DEMO_AGENT, None)
    if latest is None or not agent_store.same_definition(latest, spec):
        await agent_store.create_version(conn, DEV_PROJECT, spec, _DEV)


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _gateway_ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _worker_listening(redis_url: str, streams: StreamNames, worker_id: str) -> bool:
    """This start's worker has joined the consumer group (it does so as it starts reading)."""
    try:
        with Redis.from_url(redis_url) as redis:
            consumers = redis.xinfo_consumers(streams.runs, streams.group)
    except RedisError:
        return False
    return any(c["name"].decode() == worker_id for c in consumers)


def _announce(
    env: dict[str, str], keys: Keys, model: str, home: Path, started: float, manager: Manager
) -> None:
    """Wait until the gateway is ready and the worker listens, then say how to reach them."""
    url = env["FERRUMDECK_URL"]
    streams = CommonSettings().streams
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        # The worker is the slow one (LiteLLM takes seconds to import); asking Redis
        # first keeps the gateway's access log free of a readiness probe every 100 ms.
        if _worker_listening(
            env["FERRUMDECK_REDIS_URL"], streams, env["FERRUMDECK_WORKER_ID"]
        ) and _gateway_ready(url):
            break
        time.sleep(0.1)
    else:
        print("FerrumDeck did not become ready within 120 s; see the log above", flush=True)
        manager.terminate()
        return
    dev_env = home / "dev.env"
    _write_env_file(dev_env, {"FERRUMDECK_URL": url, "FERRUMDECK_API_KEY": keys.admin})
    label = " (local demo model, not a real LLM)" if model == DEMO_MODEL else ""
    print(
        f"""
FerrumDeck is ready ({time.monotonic() - started:.1f} s)
  gateway     {url}   (API docs: {url}/docs)
  admin key   {keys.admin}   (project '{DEV_PROJECT}')
  demo agent  'demo' on model {model}{label}
  worker      http://127.0.0.1:{env["FERRUMDECK_METRICS_PORT"]}/metrics
  written to  {dev_env}
  operators   {_ferrumdeck()} tui   (live dashboard, runs, approvals; reads {dev_env})

  set -a; . {dev_env}; set +a
  curl -s -H "Authorization: Bearer $FERRUMDECK_API_KEY" -H 'Content-Type: application/json' \\
       -d '{{"agent": "demo", "input": "Hello!"}}' $FERRUMDECK_URL/v1/runs

Ctrl-C stops everything.
""",
        flush=True,
    )


def _ferrumdeck() -> str:
    """The `ferrumdeck` of this environment as a newcomer can type it: `make dev` does not
    put `.venv/bin` on anyone's PATH."""
    command = Path(sys.executable).parent / "ferrumdeck"
    try:
        return str(command.relative_to(Path.cwd()))
    except ValueError:
        return str(command)


class _PipeSafePrinter:
    """honcho's printer, silent from the moment its reader (a pipe's other end) is gone."""

    def __init__(self) -> None:
        self._printer = Printer(sys.stdout)
        self._gone = False

    @property
    def width(self) -> int:
        return int(self._printer.width)

    @width.setter
    def width(self, value: int) -> None:
        self._printer.width = value

    def write(self, message: Message) -> None:
        if self._gone:
            return
        try:
            self._printer.write(message)
        except BrokenPipeError:
            self._gone = True
            # Python would report the closed pipe again as it flushes stdout at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _run_processes(manager: Manager) -> int:
    """Run them until one stops or a signal comes; none is left running on the way out."""
    honcho.manager.KILL_WAIT = WorkerSettings().drain_seconds + _DRAIN_MARGIN_SECONDS
    try:
        manager.loop()
    finally:
        manager.kill()  # whatever ended the loop: no-op for the processes that stopped
    return int(manager.returncode or 0)


def run_dev(home: Path, host: str, port: int) -> int:
    started = time.monotonic()
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    if not _port_is_free(host, port):
        print(f"port {port} on {host} is taken; choose another with --port or FERRUMDECK_PORT")
        return 2
    postgres: EmbeddedPostgres | None = None
    valkey: EmbeddedValkey | None = None
    try:
        database_url = os.environ.get("FERRUMDECK_DATABASE_URL")
        if not database_url:
            postgres = EmbeddedPostgres(home / "postgres")
            postgres.start()
            asyncio.run(_ensure_database(postgres.dsn("postgres"), DATABASE))
            database_url = postgres.dsn(DATABASE)
        redis_url = os.environ.get("FERRUMDECK_REDIS_URL")
        if not redis_url:
            valkey = EmbeddedValkey(home / "valkey")
            redis_url = valkey.start()
        audit_key = audit_key_settings(home)
        _write_env_file(
            home / "server.env",
            {"FERRUMDECK_DATABASE_URL": database_url, "FERRUMDECK_REDIS_URL": redis_url}
            | audit_key,
        )
        llm_port = free_port()
        models_file = write_models_file(home, llm_port)
        model = demo_model()
        providers = provider_models()
        access = ModelAccess(
            ModelCatalog.load(models_file),
            GatewaySettings(provider_models=providers).provider_models,
        )
        mcp_servers, demo_tools = demo_mcp_servers(home)
        seal = audit_seal(audit_key)
        keys = asyncio.run(prepare_database(database_url, home, model, access, demo_tools, seal))
        # The embedded server is ours to add a role to; a database given is the operator's.
        processes_url = (
            database_url if postgres is None else asyncio.run(app_role_url(database_url))
        )
        url = f"http://{host}:{port}"
        env = {
            **os.environ,
            "FERRUMDECK_DATABASE_URL": processes_url,
            "FERRUMDECK_REDIS_URL": redis_url,
            "FERRUMDECK_MODELS": str(models_file),
            "FERRUMDECK_MCP_SERVERS": mcp_servers,
            "FERRUMDECK_PROVIDER_MODELS": providers,
            "FERRUMDECK_HOST": host,
            "FERRUMDECK_PORT": str(port),
            "FERRUMDECK_URL": url,
            "FERRUMDECK_WORKER_TOKEN": keys.worker,
            "FERRUMDECK_WORKER_ID": f"dev-{uuid.uuid4().hex[:8]}",
            # A fixed port made a second dev stack's worker fail to start.
            "FERRUMDECK_METRICS_PORT": os.environ.get("FERRUMDECK_METRICS_PORT")
            or str(free_port()),
            # Webhook receivers of a local stack are local too.
            "FERRUMDECK_WEBHOOK_ALLOW_PRIVATE": os.environ.get(
                "FERRUMDECK_WEBHOOK_ALLOW_PRIVATE", "true"
            ),
            "PYTHONUNBUFFERED": "1",
            **audit_key,
        }
        # What `ferrumdeck config` shows of this stack: the settings its processes get.
        _write_env_file(
            home / PROCESSES_ENV,
            {k: v for k, v in sorted(env.items()) if k.startswith("FERRUMDECK_")},
        )
        cli = f"{shlex.quote(sys.executable)} -m services.cli.main"
        manager = Manager(printer=_PipeSafePrinter())
        manager.add_process("gateway", f"{cli} gateway", env=env)
        manager.add_process("worker", f"{cli} worker", env=env)
        manager.add_process("demo-llm", f"{cli} demo-llm --port {llm_port}", env=env)
        threading.Thread(
            target=_announce,
            args=(env, keys, model, home, started, manager),
            daemon=True,
        ).start()
        return _run_processes(manager)
    finally:
        if valkey is not None:
            valkey.stop()
        if postgres is not None:
            postgres.stop()

"""A real FerrumDeck stack for the benchmarks: the processes a user runs, on servers the
benchmark is pointed at, in a throw-away database and stream prefix.

The numbers must be the ones a user would see, so nothing is faked: the gateway is
`ferrumdeck gateway` (hypercorn) and each worker `ferrumdeck worker`, started as
subprocesses with `FERRUMDECK_*` settings, the model is `bench.llm_server` (the demo
model's app) in its own process, and MCP tools come from the test suite's notes server
over stdio. PostgreSQL and Redis are `--database-url` / `--redis-url` when given, else
the machine's on 127.0.0.1 when they answer, else embedded ones (`make dev`'s), chosen
exactly as the test suite chooses them (`testbed.servers`).

Everything made is removed at the end: processes, the database (keys and runs with it)
and the stream prefix's Redis keys. `--profile DIR` records py-spy profiles (collapsed
stacks, one file per process and phase) of the gateway and workers while the
benchmark's measured phases run, when py-spy is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import yaml

from services.contract.api import AgentCreate, Role
from services.contract.audit_keys import AuditKeys
from services.contract.audit_mac import EventSeal
from services.contract.policy import PolicySet
from services.devstack.embedded import free_port
from services.gateway.audit import Actor
from services.gateway.db.connections import connect, create_pool
from services.gateway.db.migrations import migrate
from services.gateway.store.agents import create_version
from services.gateway.store.keys import create_key
from services.gateway.store.policies import put_policy
from testbed import servers
from testbed.processes import Service, wait_until
from testbed.waiting import eventually

# The bench's own database and chain: a fixed key is as good as any. What the benches
# write through the store themselves is sealed under it too, as a gateway's would be.
AUDIT_KEY = os.environ.get("FERRUMDECK_AUDIT_KEY", "bench-" + "k" * 32)
SEAL = EventSeal(AuditKeys.of([AUDIT_KEY]))
PROJECT = "default"
MODEL = "bench"
BENCH = Actor.system("bench")


def add_stack_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        help="an admin DSN of the PostgreSQL server to use (a throw-away database is "
        "created on it); default: 127.0.0.1:5432 when it answers, else an embedded server",
    )
    parser.add_argument(
        "--redis-url",
        help="the Redis server to use (a unique key prefix is used on it); default: "
        "127.0.0.1:6379 when it answers, else an embedded server",
    )
    parser.add_argument(
        "--log-level",
        default="WARNING",
        help="FERRUMDECK_LOG_LEVEL of the gateway and workers (INFO adds an access line per "
        "request)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="record py-spy profiles of the gateway and workers during the measured phases",
    )


@dataclass
class Worker:
    service: Service
    worker_id: str
    metrics_url: str

    @property
    def pid(self) -> int:
        return self.service.process.pid

    async def metric(self, http: httpx.AsyncClient, name: str) -> dict[str, float]:
        """One metric family from the worker's `/metrics`, by its label text."""
        text = (await http.get(f"{self.metrics_url}/metrics")).text
        found: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith(name):
                labels, _, value = line[len(name) :].rpartition(" ")
                found[labels] = float(value)
        return found


@dataclass
class Stack:
    """A migrated throw-away database with an admin and a worker key, and the processes
    started on it so far."""

    args: argparse.Namespace
    home: Path
    admin_dsn: str
    dsn: str
    redis_url: str
    prefix: str
    pool: asyncpg.Pool
    admin_key: str
    worker_key: str
    url: str = ""
    llm_url: str = ""
    gateway: Service | None = None
    gateways: list[Service] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)
    _services: list[Service] = field(default_factory=list)
    _llm: subprocess.Popen[bytes] | None = None

    @property
    def models_file(self) -> Path:
        return self.home / "models.yaml"

    def _common_env(self) -> dict[str, str]:
        return {
            "FERRUMDECK_ENV_FILE": "",
            "FERRUMDECK_REDIS_URL": self.redis_url,
            "FERRUMDECK_STREAM_PREFIX": self.prefix,
            "FERRUMDECK_MODELS": str(self.models_file),
            "FERRUMDECK_LOG_LEVEL": self.args.log_level,
            "FERRUMDECK_AUDIT_KEY": AUDIT_KEY,
        }

    async def start_llm(self, delay_seconds: float = 0.0) -> None:
        """The model server, and the models file naming it `bench` at price 0."""
        port = free_port()
        self._llm = self._spawn_llm(port, delay_seconds)
        self.llm_url = f"http://127.0.0.1:{port}"
        entry = {
            "model_name": MODEL,
            "litellm_params": {
                "model": f"openai/{MODEL}",
                "api_base": f"{self.llm_url}/v1",
                "api_key": "bench",
                "input_cost_per_token": 0.0,
                "output_cost_per_token": 0.0,
            },
        }
        self.models_file.write_text(yaml.safe_dump({"model_list": [entry]}))
        async with httpx.AsyncClient() as http:
            await eventually(lambda: _answers(http, f"{self.llm_url}/bench/stats"), bool, within=30)

    def _spawn_llm(self, port: int, delay_seconds: float) -> subprocess.Popen[bytes]:
        command = ["-m", "bench.llm_server", "--port", str(port), "--delay", str(delay_seconds)]
        with (self.home / "llm.log").open("wb") as log:
            return subprocess.Popen([sys.executable, *command], stdout=log, stderr=log)

    def llm_pid(self) -> int:
        assert self._llm is not None, "start_llm() first"
        return self._llm.pid

    async def llm_stats(self, reset: bool = False) -> dict[str, object]:
        async with httpx.AsyncClient() as http:
            reply = await http.get(f"{self.llm_url}/bench/stats", params={"reset": int(reset)})
        stats: dict[str, object] = reply.json()
        return stats

    async def start_gateway(self, **env: str) -> None:
        """One more gateway process, on a port of its own (the way to use more cores:
        docs/architecture.md, "One process per port"). `url` and `gateway` stay the
        first one's; workers are spread over all of them."""
        if not self.models_file.exists():
            self.models_file.write_text(yaml.safe_dump({"model_list": []}))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        gateway = Service(
            "gateway",
            {
                **self._common_env(),
                "FERRUMDECK_DATABASE_URL": self.dsn,
                "FERRUMDECK_PORT": str(port),
                # The benchmarks are the operator's: they wait for a worker by name in
                # GET /v1/tools, which names workers only in the platform view.
                "FERRUMDECK_PLATFORM_VIEW": "true",
                **env,
            },
            self.home / f"gateway-{len(self.gateways) + 1}.log",
        )
        self._services.append(gateway)
        self.gateways.append(gateway)
        self.urls.append(url)
        if self.gateway is None:
            self.gateway, self.url = gateway, url
        await wait_until(f"{url}/readyz", 60, gateway)
        print(f"gateway pid {gateway.process.pid} at {url}", file=sys.stderr)

    def gateway_pids(self) -> dict[str, int]:
        return {f"gateway-{i}": g.process.pid for i, g in enumerate(self.gateways, 1)}

    async def start_worker(self, *, tools: bool = False, ready: bool = True, **env: str) -> Worker:
        """A worker process, ready (in the consumer group, gateway reachable); with
        `tools`, connected to the notes MCP server and its catalogue reported. A worker
        started on a backlog can be too busy to answer its probes for a long while:
        `ready=False` does not wait for them."""
        n = len(self.workers) + 1
        worker_id = f"bench-worker-{n}"
        port = free_port()
        settings = {
            **self._common_env(),
            "FERRUMDECK_URL": self.urls[(n - 1) % len(self.urls)],
            "FERRUMDECK_WORKER_TOKEN": self.worker_key,
            "FERRUMDECK_WORKER_ID": worker_id,
            "FERRUMDECK_METRICS_PORT": str(port),
            **env,
        }
        if tools:
            settings["FERRUMDECK_MCP_SERVERS"] = str(self._mcp_config())
        worker = Worker(
            Service("worker", settings, self.home / f"{worker_id}.log"),
            worker_id,
            f"http://127.0.0.1:{port}",
        )
        self._services.append(worker.service)
        self.workers.append(worker)
        if ready:
            await wait_until(f"{worker.metrics_url}/readyz", 90, worker.service)
        if tools:
            async with self.api() as api:

                async def offered() -> list[str]:
                    items = (await api.get("/v1/tools")).json()["items"]
                    return [w for t in items if t["name"] == "notes.add" for w in t["workers"]]

                await eventually(offered, lambda found: worker_id in found, within=60)
        print(f"{worker_id} pid {worker.pid}", file=sys.stderr)
        return worker

    def _mcp_config(self) -> Path:
        path = self.home / "mcp.json"
        notes = {
            "command": sys.executable,
            "args": ["-m", "testbed.mcp_servers.notes_server"],
            "env": {"NOTES_FILE": str(self.home / "notes.txt")},
        }
        path.write_text(json.dumps({"mcpServers": {"notes": notes}}))
        return path

    def api(self, gateway: int = 0, **kwargs: object) -> httpx.AsyncClient:
        """A client of a gateway (the first unless told; counted round-robin) with the
        admin key; one connection unless told."""
        return httpx.AsyncClient(
            base_url=self.urls[gateway % len(self.urls)],
            headers={"Authorization": f"Bearer {self.admin_key}"},
            timeout=60,
            **kwargs,  # type: ignore[arg-type]
        )

    async def agent(self, spec: AgentCreate) -> None:
        async with self.pool.acquire() as conn:
            await create_version(conn, PROJECT, spec, BENCH)

    async def allow(self, tool: str) -> None:
        """A policy allowing `tool` (with no policy every tool call is denied)."""
        rule = {"id": "bench", "tool": tool, "effect": "allow"}
        rules = PolicySet.model_validate({"rules": [rule]})
        async with self.pool.acquire() as conn:
            await put_policy(conn, PROJECT, rules, BENCH)

    @contextlib.contextmanager
    def profiled(self, phase: str) -> Iterator[None]:
        """While inside, py-spy samples the gateway and workers (with `--profile`)."""
        directory: Path | None = self.args.profile
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if directory is None or not Path(spy).exists():
            yield
            return
        directory.mkdir(parents=True, exist_ok=True)
        targets = {f"gateway-{i}": g for i, g in enumerate(self.gateways, 1)} | {
            w.worker_id: w.service for w in self.workers
        }
        recorders = [
            subprocess.Popen(
                [
                    *(spy, "record", "--nonblocking", "--format", "raw", "--rate", "200"),
                    *("--pid", str(service.process.pid)),
                    *("-o", str(directory / f"{phase}-{name}.txt")),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for name, service in targets.items()
            if service is not None
        ]
        try:
            yield
        finally:
            for recorder in recorders:
                recorder.send_signal(signal.SIGINT)
            for recorder in recorders:
                recorder.wait(30)

    def stop(self) -> None:
        for service in reversed(self._services):
            service.stop()
        if self._llm is not None:
            self._llm.terminate()
            self._llm.wait(10)


def starter(http: httpx.AsyncClient, body: dict[str, str]) -> Callable[[], Awaitable[None]]:
    """An action starting one run per call, failing unless the gateway answers 202."""

    async def start() -> None:
        response = await http.post("/v1/runs", json=body)
        if response.status_code != 202:
            raise RuntimeError(f"{response.status_code}: {response.text[:200]}")

    return start


async def _answers(http: httpx.AsyncClient, url: str) -> bool:
    try:
        return (await http.get(url, timeout=1)).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.asynccontextmanager
async def _admin_dsn(args: argparse.Namespace, scratch: Path) -> AsyncIterator[str]:
    if args.database_url:
        yield args.database_url
        return
    async with servers.postgres_admin_dsn(scratch) as dsn:
        yield dsn


@contextlib.asynccontextmanager
async def _redis_url(args: argparse.Namespace, scratch: Path) -> AsyncIterator[str]:
    if args.redis_url:
        yield args.redis_url
        return
    async with servers.redis_url(scratch) as url:
        yield url


@contextlib.asynccontextmanager
async def open_stack(args: argparse.Namespace) -> AsyncIterator[Stack]:
    """The servers, a migrated throw-away database with keys, a unique stream prefix;
    removed again (with every process started on them) on the way out."""
    with tempfile.TemporaryDirectory(prefix="ferrumdeck-bench-") as scratch:
        home = _shared_directory(scratch)
        async with (
            _admin_dsn(args, home) as admin_dsn,
            _redis_url(args, home) as redis_url,
            servers.throwaway_database(admin_dsn) as dsn,
        ):
            prefix = f"fdbench:{uuid.uuid4().hex[:12]}"
            conn = await connect(dsn, seal=SEAL)
            try:
                await migrate(conn)
                _, admin_key = await create_key(conn, "bench-admin", Role.ADMIN, PROJECT, BENCH)
                _, worker_key = await create_key(conn, "bench-worker", Role.WORKER, None, BENCH)
            finally:
                await conn.close()
            pool = await create_pool(dsn, min_size=1, max_size=4, seal=SEAL)
            stack = Stack(
                args, home, admin_dsn, dsn, redis_url, prefix, pool, admin_key, worker_key
            )
            try:
                yield stack
            finally:
                stack.stop()
                await pool.close()
                await servers.delete_prefix(redis_url, prefix)
                if args.profile is not None:
                    _keep_logs(home, args.profile / "logs")


def _shared_directory(path: str) -> Path:
    """Readable by others: embedded PostgreSQL runs as another user when we are root."""
    directory = Path(path)
    directory.chmod(0o755)
    return directory


def _keep_logs(home: Path, directory: Path) -> None:
    """The processes' logs, beside the profiles, to read what they did under load."""
    directory.mkdir(parents=True, exist_ok=True)
    for log in home.glob("*.log"):
        shutil.copy(log, directory / log.name)

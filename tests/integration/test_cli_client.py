"""`ferrumdeck runs|agents|policies|approvals`, run as a real subprocess against a real
gateway: what is printed, what `--json` parses to, and the exit codes scripts rely on."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from services.gateway.settings import GatewaySettings
from testbed.waiting import eventually
from tests.support.fault_proxy import FaultProxy
from tests.support.gateway_server import ServedGateway, serve_gateway
from tests.support.harness import ToolHarness

Cli = Callable[..., Awaitable[subprocess.CompletedProcess[str]]]
COMMAND = [sys.executable, "-m", "services.cli.main"]


@pytest.fixture
async def served(settings: GatewaySettings) -> AsyncIterator[ServedGateway]:
    async with serve_gateway(settings) as gateway:
        yield gateway


@pytest.fixture
def cli_env(served: ServedGateway, admin_key: str) -> dict[str, str]:
    return {
        **os.environ,
        "FERRUMDECK_URL": served.url,
        "FERRUMDECK_API_KEY": admin_key,
        "FERRUMDECK_ENV_FILE": "",
    }


@pytest.fixture
def cli(cli_env: dict[str, str], tmp_path: Path) -> Cli:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*COMMAND, *args],
            env=cli_env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    async def call(*args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(run, *args)

    return call


def one_error_line(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    for fragment in fragments:
        assert fragment in line


async def test_runs_are_created_listed_shown_and_cancelled(cli: Cli, harness: ToolHarness) -> None:
    agent = await harness.agent()
    created = await cli("runs", "create", agent, "--input", "first job")
    assert created.returncode == 0, created.stderr
    assert "queued" in created.stdout
    as_json = await cli(
        "runs", "create", agent, "--input", "second", "--metadata", '{"ticket": 7}', "--json"
    )
    run = json.loads(as_json.stdout)
    assert (run["status"], run["metadata"]) == ("queued", {"ticket": 7})

    listed = json.loads((await cli("runs", "list", "--agent", agent, "--json")).stdout)
    assert [r["input"] for r in listed["items"]] == ["second", "first job"]
    table = (await cli("runs", "list", "--agent", agent, "--status", "queued")).stdout
    assert table.splitlines()[0].split()[:3] == ["ID", "AGENT", "STATUS"]
    assert run["id"] in table

    shown = await cli("runs", "show", run["id"])
    assert shown.returncode == 0
    assert "second" in shown.stdout
    both = json.loads((await cli("runs", "show", run["id"], "--json")).stdout)
    assert (both["run"]["id"], both["steps"]) == (run["id"], [])

    cancelled = await cli("runs", "cancel", run["id"])
    assert cancelled.returncode == 0
    assert "cancelled" in cancelled.stdout
    one_error_line(await cli("runs", "cancel", run["id"]), "409", "run_finished")
    one_error_line(await cli("runs", "show", str(uuid.uuid4())), "runs show", "404")
    one_error_line(await cli("runs", "create", "no-such-agent", "--input", "x"), "422")
    one_error_line(await cli("runs", "create", agent, "--input", "x", "--metadata", "[1]"))


async def test_a_conversation_is_held_from_the_shell(cli: Cli, harness: ToolHarness) -> None:
    agent = await harness.agent()
    thread = json.loads((await cli("threads", "create", "--json")).stdout)
    first = await cli("runs", "create", agent, "--input", "hi", "--thread", thread["id"], "--json")
    assert json.loads(first.stdout)["status"] == "queued"
    one_error_line(
        await cli("runs", "create", agent, "--input", "again", "--thread", thread["id"]),
        "409",
        "thread_busy",
    )
    waiting = await cli(
        "runs", "create", agent, "--input", "and then?", "--thread", thread["id"], "--enqueue"
    )
    assert waiting.returncode == 0, waiting.stderr
    assert "waiting_thread" in waiting.stdout
    shown = (await cli("threads", "show", thread["id"])).stdout
    assert json.loads(first.stdout)["id"] in shown
    listed = (await cli("threads", "messages", thread["id"])).stdout
    lines = listed.splitlines()
    assert lines[0].split()[:2] == ["RUN", "RUN"]
    assert ["hi" in lines[1], "and then?" in lines[2]] == [True, True]
    one_error_line(await cli("threads", "show", str(uuid.uuid4())), "threads show", "404")


async def test_bad_key_and_no_gateway_are_one_line(cli: Cli, served: ServedGateway) -> None:
    one_error_line(await cli("agents", "list", "--key", "fd_wrong"), "401")
    one_error_line(await cli("runs", "list", "--url", "http://127.0.0.1:9"), "cannot reach")


async def test_agents_apply_registers_only_what_changed(
    cli: Cli, tmp_path: Path, harness: ToolHarness
) -> None:
    first, second = (f"cli-{uuid.uuid4().hex[:8]}" for _ in range(2))
    agents = tmp_path / "agents.yaml"

    def write(prompt: str) -> None:
        agents.write_text(
            f"agents:\n"
            f"  - name: {first}\n    model: scripted\n    system_prompt: {prompt}\n"
            f"  - name: {second}\n    model: scripted\n    tools: ['time.*']\n"
        )

    write("Be brief.")
    applied = await cli("agents", "apply", "-f", str(agents))
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.splitlines() == [f"{first}@1 created", f"{second}@1 created"]
    again = await cli("agents", "apply", "-f", str(agents))
    assert again.stdout.splitlines() == [f"{first}@1 unchanged", f"{second}@1 unchanged"]

    write("Be thorough.")
    changed = json.loads((await cli("agents", "apply", "-f", str(agents), "--json")).stdout)
    assert changed["agents"] == [
        {"name": first, "version": 2, "outcome": "created"},
        {"name": second, "version": 1, "outcome": "unchanged"},
    ]
    listed = json.loads((await cli("agents", "list", "--limit", "200", "--json")).stdout)
    assert {a["name"]: a["version"] for a in listed["items"]}[first] == 2

    agents.write_text(f"- name: {first}\n  model: scripted\n  budget: lots\n")
    one_error_line(await cli("agents", "apply", "-f", str(agents)), "agent #1", "budget")
    one_error_line(await cli("agents", "apply", "-f", str(tmp_path / "none.yaml")))


async def test_policies_apply_show_and_evaluate(cli: Cli, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    rule_id = f"r{uuid.uuid4().hex[:8]}"
    policy.write_text(
        "rules:\n"
        f"  - id: {rule_id}\n    tool: notes.*\n    effect: require_approval\n"
        "  - id: secrets\n    tool: notes.write_note\n    effect: deny\n"
        "    when: {args: {text: {regex: '(?i)password'}}}\n"
    )
    applied = json.loads((await cli("policies", "apply", "-f", str(policy), "--json")).stdout)
    assert applied["changed"] is True
    again = await cli("policies", "apply", "-f", str(policy))
    assert again.returncode == 0
    assert again.stdout.strip() == f"policy unchanged at version {applied['version']}"

    shown = (await cli("policies", "show")).stdout
    assert f"policy version {applied['version']}" in shown
    assert rule_id in shown
    denied = await cli(
        "policies", "evaluate", "--agent", "a", "--tool", "notes.write_note",
        "--args", '{"text": "my password"}', "--json",
    )  # fmt: skip
    assert json.loads(denied.stdout)["rule"] == "secrets"
    asked = await cli("policies", "evaluate", "--agent", "a", "--tool", "notes.list")
    assert asked.stdout.startswith(f"require_approval ({rule_id}")

    policy.write_text("rules:\n  - id: x\n    tool: notes.*\n    effect: maybe\n")
    one_error_line(await cli("policies", "apply", "-f", str(policy)), "effect")


async def test_policies_apply_prints_warnings_and_keeps_approval_settings(
    cli: Cli, harness: ToolHarness, tmp_path: Path
) -> None:
    server = f"w{uuid.uuid4().hex[:8]}"
    tool = {
        "name": f"{server}.add",
        "server": server,
        "tool": "add",
        "input_schema": {"type": "object", "properties": {"a": {"type": "string"}}},
    }
    reported = await harness.client.put(
        "/v1/worker/tools", json={"worker_id": server, "tools": [tool]}, headers=harness.worker
    )
    assert reported.status_code < 300
    policy = tmp_path / "policy.yaml"
    rules = (
        "rules:\n"
        f"  - id: big\n    tool: {server}.add\n    effect: deny\n"
        "    when: {args: {a: {gt: 100}}}\n"
        "  - id: ask\n    tool: notes.*\n    effect: require_approval\n"
    )
    policy.write_text(rules)
    applied = await cli("policies", "apply", "-f", str(policy))
    assert applied.returncode == 0, applied.stderr
    (warning,) = applied.stderr.strip().splitlines()
    assert warning.startswith("warning: rules[0] (big)")
    assert "declares a as string" in warning

    policy.write_text(rules + "approvals: {distinct_approver: key}\n")
    as_json = json.loads((await cli("policies", "apply", "-f", str(policy), "--json")).stdout)
    assert as_json["changed"] is True
    assert as_json["warnings"][0].startswith("rules[0] (big)")
    again = await cli("policies", "apply", "-f", str(policy))
    assert again.stdout.strip() == f"policy unchanged at version {as_json['version']}"
    shown = (await cli("policies", "show")).stdout
    assert "approvals: the run's creator's key may not approve its calls" in shown

    run_id, epoch = await harness.running(tools=["notes.*"])  # started by the CLI's key
    _, verdict = await harness.authorize(run_id, epoch, 1, "notes.write_note", {"text": "x"})
    refused = await cli("approvals", "approve", verdict["approval_id"], "--reason", "mine")
    one_error_line(
        refused,
        "ferrumdeck approvals approve: separation of duties: this key started the run",
        "another key must approve its calls (HTTP 403 separation_of_duties)",
    )


async def test_parked_calls_are_approved_and_rejected(cli: Cli, harness: ToolHarness) -> None:
    await harness.policy({"id": "ask", "tool": "notes.*", "effect": "require_approval"})
    parked: list[str] = []
    for _ in range(2):
        run_id, epoch = await harness.running(tools=["notes.*"])
        await harness.authorize(run_id, epoch, 1, "notes.write_note", {"text": "hi"})
        parked.append(run_id)
    pending = json.loads((await cli("approvals", "list", "--status", "pending", "--json")).stdout)
    ids = {a["run_id"]: a["id"] for a in pending["items"] if a["run_id"] in parked}
    assert set(ids) == set(parked)

    approved = await cli("approvals", "approve", ids[parked[0]], "--reason", "looks fine")
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.startswith("approved notes.write_note")
    rejected = await cli("approvals", "reject", ids[parked[1]], "--reason", "no", "--json")
    assert json.loads(rejected.stdout)["status"] == "rejected"
    one_error_line(
        await cli("approvals", "reject", ids[parked[0]], "--reason", "late"), "approval_decided"
    )
    listed = (await cli("approvals", "list")).stdout
    assert ids[parked[0]] in listed
    shown = (await cli("runs", "show", parked[1])).stdout.splitlines()
    header = shown.index(next(line for line in shown if line.startswith("SEQ")))
    assert shown[header].split() == ["SEQ", "KIND", "STATUS", "TOOL", "DECIDED", "OUTPUT"]
    step = shown[header + 1]
    assert "rejected" in step
    assert "test-admin: no" in step, "who rejected the call, and why"


async def _follow_while_seeding(
    cli_env: dict[str, str], tmp_path: Path, harness: ToolHarness, finish: str, body: dict[str, Any]
) -> tuple[int, str, str]:
    """Start `runs create --follow`, act as the worker of its run while it watches, and
    finish the run with `finish` (`complete` or `fail`)."""
    agent = await harness.agent()
    process = await asyncio.create_subprocess_exec(
        *COMMAND, "runs", "create", agent, "--input", "go", "--follow",
        env=cli_env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None

    async def runs() -> list[dict[str, Any]]:
        response = await harness.client.get(f"/v1/runs?agent={agent}", headers=harness.admin)
        items: list[dict[str, Any]] = (await response.get_json())["items"]
        return items

    (run,) = await eventually(runs, lambda items: len(items) == 1, within=30)
    status, grant = await harness.claim(run["id"])
    assert status == 200, grant
    await harness.step(run["id"], grant["epoch"], 1)
    seen: list[str] = []
    while not any(line.startswith("step 1 ") for line in seen):
        line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
        assert line, seen
        seen.append(line.decode())
    assert "step 1" in seen[-1]
    assert "llm_call" in seen[-1]
    await harness.call(run["id"], finish, {"epoch": grant["epoch"], **body})
    rest, errors = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode is not None
    return process.returncode, "".join(seen) + rest.decode(), errors.decode()


async def test_follow_shows_steps_as_they_happen_and_exits_0_when_completed(
    cli_env: dict[str, str], tmp_path: Path, harness: ToolHarness
) -> None:
    code, out, errors = await _follow_while_seeding(
        cli_env, tmp_path, harness, "complete", {"output": "all done"}
    )
    assert code == 0, errors
    assert "running" in out
    assert "status    completed" in out
    assert "output    all done" in out


async def test_follow_exits_1_when_the_run_failed(
    cli_env: dict[str, str], tmp_path: Path, harness: ToolHarness
) -> None:
    code, out, _ = await _follow_while_seeding(
        cli_env, tmp_path, harness, "fail", {"error": "provider said no"}
    )
    assert code == 1
    assert "status    failed" in out
    assert "provider said no" in out


async def test_a_reader_that_goes_away_ends_the_listing_quietly(
    cli_env: dict[str, str], harness: ToolHarness, tmp_path: Path
) -> None:
    """`ferrumdeck runs list | head` used to end in a BrokenPipeError traceback."""
    await harness.run()
    command = " ".join(shlex.quote(part) for part in [*COMMAND, "runs", "list"])
    errors, code = tmp_path / "stderr", tmp_path / "code"
    shell = (
        f"(sleep 1; {command} 2>{shlex.quote(str(errors))}; "
        f"echo $? >{shlex.quote(str(code))}) | true"
    )
    await asyncio.to_thread(
        subprocess.run, ["sh", "-c", shell], env=cli_env, cwd=tmp_path, timeout=60, check=True
    )
    assert errors.read_text() == ""
    assert code.read_text().strip() == "0"


async def test_lists_page_past_200_and_carry_on_from_a_cursor(
    cli: Cli, harness: ToolHarness
) -> None:
    """`--limit` used to stop at 200 with no cursor: older runs could not be listed."""
    agent = await harness.agent()
    created = []
    for n in range(203):
        response = await harness.client.post(
            "/v1/runs", json={"agent": agent, "input": f"job {n}"}, headers=harness.admin
        )
        created.append((await response.get_json())["id"])
    everything = await cli("runs", "list", "--agent", agent, "--limit", "500", "--json")
    assert everything.returncode == 0, everything.stderr
    page = json.loads(everything.stdout)
    assert [run["id"] for run in page["items"]] == created[::-1]
    assert page["next_cursor"] is None

    first = await cli("runs", "list", "--agent", agent, "--limit", "2")
    assert first.returncode == 0, first.stderr
    *_, hint = first.stdout.splitlines()
    assert hint.startswith("(more runs: --cursor ")
    cursor = hint.removeprefix("(more runs: --cursor ").removesuffix(")")
    rest = json.loads(
        (
            await cli(
                "runs", "list", "--agent", agent, "--cursor", cursor, "--limit", "300", "--json"
            )
        ).stdout
    )
    assert [run["id"] for run in rest["items"]] == created[::-1][2:]


async def test_approvals_and_agents_lists_take_a_cursor(cli: Cli, harness: ToolHarness) -> None:
    for _ in range(3):
        await harness.agent()
    first = json.loads((await cli("agents", "list", "--limit", "2", "--json")).stdout)
    assert len(first["items"]) == 2
    rest = json.loads(
        (await cli("agents", "list", "--cursor", first["next_cursor"], "--json")).stdout
    )
    names = [a["name"] for a in first["items"] + rest["items"]]
    assert len(names) == len(set(names)) >= 3
    listed = await cli("approvals", "list", "--limit", "1", "--cursor", "nonsense")
    one_error_line(listed, "approvals list", "cursor")


async def _lines_until(
    stream: asyncio.StreamReader, wanted: str, seen: list[str], within: float = 30
) -> None:
    while not any(wanted in line for line in seen):
        line = await asyncio.wait_for(stream.readline(), timeout=within)
        assert line, seen
        seen.append(line.decode())


async def test_follow_rides_out_a_gateway_blip_and_names_the_approval_to_decide(
    cli_env: dict[str, str], served: ServedGateway, harness: ToolHarness, tmp_path: Path
) -> None:
    """`--follow` used to exit at once when the gateway went away, and said nothing of
    which approval a parked run waited for."""
    host, port = served.url.removeprefix("http://").rsplit(":", 1)
    proxy = FaultProxy(host, int(port))
    await proxy.start()
    await harness.policy({"id": "ask", "tool": "notes.*", "effect": "require_approval"})
    agent = await harness.agent(tools=["notes.*"])
    process = await asyncio.create_subprocess_exec(
        *COMMAND, "runs", "create", agent, "--input", "park me", "--follow",
        env=cli_env | {"FERRUMDECK_URL": f"http://127.0.0.1:{proxy.port}"}, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    assert process.stderr is not None
    out: list[str] = []
    errors: list[str] = []
    try:
        await _lines_until(process.stdout, "is queued", out)
        run_id = out[0].split()[1]
        await proxy.cut()
        await _lines_until(process.stderr, "lost the gateway", errors)
        await proxy.restore()
        await _lines_until(process.stderr, "reached the gateway again", errors)

        status, grant = await harness.claim(run_id)
        assert status == 200, grant
        await harness.step(run_id, grant["epoch"], 1)
        status, verdict = await harness.authorize(
            run_id, grant["epoch"], 2, "notes.write_note", {"text": "hi"}
        )
        assert verdict["verdict"] == "parked", verdict
        await _lines_until(process.stdout, "reject:", out)
        (approval,) = await harness.approvals(run_id=run_id)
        text = "".join(out)
        assert f"approval {approval['id']} waits for a human: notes.write_note" in text
        assert f'ferrumdeck approvals approve {approval["id"]} --reason "<why>"' in text
        assert f'ferrumdeck approvals reject {approval["id"]} --reason "<why>"' in text
        cancelled = await harness.client.post(f"/v1/runs/{run_id}/cancel", headers=harness.admin)
        assert cancelled.status_code == 200
        await asyncio.wait_for(process.wait(), timeout=30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await proxy.aclose()
    assert process.returncode == 1
    assert "Traceback" not in "".join(errors)

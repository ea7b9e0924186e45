from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from services.worker.mcp_config import (
    HttpServer,
    McpConfigError,
    StdioServer,
    load_mcp_servers,
    log_shared_servers,
)


def _write(tmp_path: Path, document: Any) -> Path:
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps(document))
    return path


def _servers(tmp_path: Path, **entries: Any) -> Path:
    return _write(tmp_path, {"mcpServers": entries})


def _error(path: Path) -> str:
    with pytest.raises(McpConfigError) as caught:
        load_mcp_servers(path)
    message = str(caught.value)
    assert str(path) in message
    return message


def test_no_file_configured_means_no_servers() -> None:
    assert load_mcp_servers(None) == {}


def test_reads_stdio_and_http_servers(tmp_path: Path) -> None:
    path = _servers(
        tmp_path,
        time={
            "command": "python",
            "args": ["-m", "mcp_server_time"],
            "env": {"TZ": "UTC"},
            "cwd": "/srv",
        },
        docs={"url": "http://127.0.0.1:9000/mcp", "headers": {"Authorization": "Bearer x"}},
        bare={"command": "server"},
    )
    assert load_mcp_servers(path) == {
        "time": StdioServer(
            command="python", args=["-m", "mcp_server_time"], env={"TZ": "UTC"}, cwd=Path("/srv")
        ),
        "docs": HttpServer(url="http://127.0.0.1:9000/mcp", headers={"Authorization": "Bearer x"}),
        "bare": StdioServer(command="server"),
    }


def test_accepts_the_type_field_other_clients_write(tmp_path: Path) -> None:
    path = _servers(
        tmp_path,
        a={"type": "stdio", "command": "server"},
        b={"type": "http", "url": "https://example.com/mcp"},
        c={"type": "streamable-http", "url": "https://example.com/mcp"},
    )
    assert set(load_mcp_servers(path)) == {"a", "b", "c"}


def test_an_empty_server_list_is_fine(tmp_path: Path) -> None:
    assert load_mcp_servers(_servers(tmp_path)) == {}


def test_env_and_header_values_take_variables_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCS_TOKEN", "s3cret")
    monkeypatch.setenv("REGION", "eu")
    path = _servers(
        tmp_path,
        tool={"command": "server", "env": {"TOKEN": "${DOCS_TOKEN}", "WHERE": "${REGION}-1"}},
        docs={"url": "http://h/mcp", "headers": {"Authorization": "Bearer ${DOCS_TOKEN}"}},
    )
    servers = load_mcp_servers(path)
    tool, docs = servers["tool"], servers["docs"]
    assert isinstance(tool, StdioServer)
    assert tool.env == {"TOKEN": "s3cret", "WHERE": "eu-1"}
    assert isinstance(docs, HttpServer)
    assert docs.headers == {"Authorization": "Bearer s3cret"}


def test_a_missing_variable_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FD_TEST_UNSET", raising=False)
    path = _servers(tmp_path, tool={"command": "server", "env": {"KEY": "${FD_TEST_UNSET}"}})
    message = _error(path)
    assert "mcpServers.tool.env.KEY" in message
    assert "FD_TEST_UNSET is not set" in message


def test_a_malformed_reference_is_an_error(tmp_path: Path) -> None:
    path = _servers(tmp_path, docs={"url": "http://h/mcp", "headers": {"X": "${1NO}"}})
    message = _error(path)
    assert "mcpServers.docs.headers.X" in message
    assert "'${1NO}' is not a variable reference" in message


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    assert "cannot read" in _error(tmp_path / "absent.json")


def test_bad_json_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "mcp.json"
    path.write_text('{"mcpServers": {')
    assert "not valid JSON" in _error(path)


@pytest.mark.parametrize("document", [[], {"servers": {}}, {"mcpServers": []}, {"mcpServers": "x"}])
def test_the_document_must_hold_an_mcp_servers_object(tmp_path: Path, document: Any) -> None:
    assert '{"mcpServers": {name: server}}' in _error(_write(tmp_path, document))


def test_an_entry_must_be_an_object(tmp_path: Path) -> None:
    assert "mcpServers.time: expected an object" in _error(_servers(tmp_path, time="python"))


@pytest.mark.parametrize(
    "entry", [{"command": "server", "url": "http://h/mcp"}, {"args": ["x"]}, {}]
)
def test_an_entry_has_exactly_one_of_command_and_url(tmp_path: Path, entry: Any) -> None:
    message = _error(_servers(tmp_path, time=entry))
    assert "mcpServers.time: give exactly one of `command`" in message


@pytest.mark.parametrize("name", ["has.dot", "", "x" * 65, "with space", "ünï"])
def test_server_names_are_restricted(tmp_path: Path, name: str) -> None:
    message = _error(_servers(tmp_path, **{name: {"command": "server"}}))
    assert f"server name {name!r}" in message


def test_a_64_character_name_is_allowed(tmp_path: Path) -> None:
    name = "a-B_9" + "x" * 59
    assert list(load_mcp_servers(_servers(tmp_path, **{name: {"command": "s"}}))) == [name]


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({"command": ""}, "command"),
        ({"command": "s", "args": "-m x"}, "args"),
        ({"command": "s", "args": [1]}, "args.0"),
        ({"command": "s", "env": {"N": 1}}, "env.N"),
        ({"command": "s", "arg": ["x"]}, "arg"),
        ({"command": "s", "type": "http"}, "type"),
        ({"url": "ftp://h/mcp"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"url": "http://h/mcp", "type": "sse"}, "type"),
        ({"url": "http://h/mcp", "headers": ["x"]}, "headers"),
        ({"url": "http://h/mcp", "env": {}}, "env"),
    ],
)
def test_bad_fields_are_named(tmp_path: Path, entry: dict[str, Any], field: str) -> None:
    assert f"mcpServers.srv: {field}: " in _error(_servers(tmp_path, srv=entry))


def test_an_entry_may_be_limited_to_some_projects(tmp_path: Path) -> None:
    path = _servers(
        tmp_path,
        vault={"command": "server", "projects": ["acme", "beta-2"]},
        docs={"url": "http://h/mcp", "projects": ["acme"]},
        time={"command": "server"},
    )
    servers = load_mcp_servers(path)
    assert servers["vault"].projects == ["acme", "beta-2"]
    assert servers["docs"].projects == ["acme"]
    assert servers["time"].projects is None  # shared: offered to every project


@pytest.mark.parametrize(
    ("projects", "why"),
    [
        ([], "at least 1 item"),
        ("acme", "valid list"),
        (["Acme"], "pattern"),
        (["acme", "has space"], "pattern"),
        (["x" * 64], "pattern"),
        ([""], "pattern"),
        ([7], "valid string"),
        (["acme", "beta", "acme"], "names a project more than once: acme"),
        (None, "valid list"),
    ],
)
def test_a_scope_that_names_no_valid_project_fails_the_start(
    tmp_path: Path, projects: Any, why: str
) -> None:
    """A typo must not leave the server offered to nobody, or to every project."""
    message = _error(_servers(tmp_path, vault={"command": "server", "projects": projects}))
    assert "mcpServers.vault: projects" in message
    assert why in message


def test_shared_servers_are_named_once_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    servers = load_mcp_servers(
        _servers(
            tmp_path,
            vault={"command": "server", "projects": ["acme"]},
            time={"command": "server"},
            docs={"url": "http://h/mcp"},
        )
    )
    with caplog.at_level(logging.INFO, logger="services.worker.mcp_config"):
        log_shared_servers(servers)
    (record,) = caplog.records
    assert record.getMessage() == (
        "MCP servers docs, time have no `projects`: their tools are offered to runs of "
        "every project"
    )

"""`ferrumdeck config` shows what a process would run with, secrets masked, including
values from the env file; a bad env file is named."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _config(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FERRUMDECK_")}
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", "config", *args],
        cwd=cwd,
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_config_masks_secrets_and_reads_the_env_file(tmp_path: Path) -> None:
    token = "fd_" + "t0ken" * 8
    (tmp_path / "ops.env").write_text(
        "# the team's file\n"
        f"export FERRUMDECK_WORKER_TOKEN={token}\n"
        "FERRUMDECK_MAX_IN_FLIGHT='12'\n"
    )
    result = _config(
        tmp_path,
        "worker",
        FERRUMDECK_ENV_FILE=str(tmp_path / "ops.env"),
        FERRUMDECK_REDIS_URL="redis://:hunter2hunter2@cache.internal:6379/0",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "FERRUMDECK_MAX_IN_FLIGHT=12" in lines
    assert "FERRUMDECK_WORKER_TOKEN=********" in lines
    assert "FERRUMDECK_REDIS_URL=redis://:********@cache.internal:6379/0" in lines
    assert token not in result.stdout
    assert "hunter2hunter2" not in result.stdout


def test_the_environment_beats_the_dot_env_of_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("FERRUMDECK_PORT=8123\nFERRUMDECK_HOST=0.0.0.0\n")
    result = _config(tmp_path, "gateway", FERRUMDECK_HOST="10.0.0.5")
    assert result.returncode == 0, result.stderr
    assert "FERRUMDECK_PORT=8123" in result.stdout.splitlines()
    assert "FERRUMDECK_HOST=10.0.0.5" in result.stdout.splitlines()


def test_an_empty_env_file_variable_reads_no_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("FERRUMDECK_PORT=8123\n")
    result = _config(tmp_path, "gateway", FERRUMDECK_ENV_FILE="")
    assert "FERRUMDECK_PORT=8700" in result.stdout.splitlines()


def test_a_missing_env_file_and_a_bad_value_are_named(tmp_path: Path) -> None:
    missing = _config(tmp_path, FERRUMDECK_ENV_FILE=str(tmp_path / "nope.env"))
    assert missing.returncode == 2
    assert "FERRUMDECK_ENV_FILE: no such file" in missing.stderr
    (tmp_path / ".env").write_text("FERRUMDECK_METRICS_PORT=99999\n")
    bad = _config(tmp_path, "worker")
    assert bad.returncode == 2
    assert "FERRUMDECK_METRICS_PORT:" in bad.stderr


def test_config_shows_what_the_dev_stacks_processes_run_with(tmp_path: Path) -> None:
    """`ferrumdeck dev` gives its worker its own Redis, key, id and metrics port: `config`
    used to print the defaults instead. The environment still comes first."""
    home = tmp_path / ".ferrumdeck"
    home.mkdir()
    token = "fd_" + "w0rker" * 8
    (home / "processes.env").write_text(
        "FERRUMDECK_REDIS_URL=redis://127.0.0.1:40123/0\n"
        f"FERRUMDECK_WORKER_TOKEN={token}\n"
        "FERRUMDECK_WORKER_ID=dev-1a2b3c4d\n"
        "FERRUMDECK_METRICS_PORT=40124\n"
        "FERRUMDECK_URL=http://127.0.0.1:8791\n"
    )
    result = _config(tmp_path, "worker", FERRUMDECK_METRICS_PORT="40999")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "# dev stack: .ferrumdeck/processes.env" in lines
    assert "FERRUMDECK_REDIS_URL=redis://127.0.0.1:40123/0" in lines
    assert "FERRUMDECK_WORKER_ID=dev-1a2b3c4d" in lines
    assert "FERRUMDECK_URL=http://127.0.0.1:8791" in lines
    assert "FERRUMDECK_WORKER_TOKEN=********" in lines
    assert "FERRUMDECK_METRICS_PORT=40999" in lines  # the environment beats the stack
    assert token not in result.stdout


def test_without_a_dev_stack_config_says_so(tmp_path: Path) -> None:
    result = _config(tmp_path, "worker")
    assert "# dev stack: none" in result.stdout.splitlines()
    assert "FERRUMDECK_METRICS_PORT=9700" in result.stdout.splitlines()

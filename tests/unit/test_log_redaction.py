"""Secrets never reach a log line, whichever logger writes them and however."""

from __future__ import annotations

import io
import json
import logging

import pytest

from services.telemetry import logs


@pytest.fixture
def captured() -> logging.Logger:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.RedactSecrets())
    handler.setFormatter(logs.JsonFormatter("test"))
    logger = logging.getLogger(f"redaction-test-{id(stream)}")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.stream = stream  # type: ignore[attr-defined]
    return logger


def _lines(logger: logging.Logger) -> list[dict[str, str]]:
    text: str = logger.stream.getvalue()  # type: ignore[attr-defined]
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.parametrize(
    ("message", "secret"),
    [
        ("using key fd_Zx9kQ2m8TnL4vB7cW1pR5sY3aD6fH0jK", "fd_Zx9kQ2m8TnL4vB7cW1pR5sY3aD6fH0jK"),
        ("headers: {'Authorization': 'Bearer abc.def-123'}", "abc.def-123"),
        ("openai said: sk-proj-AbCdEf123456 is invalid", "sk-proj-AbCdEf123456"),
        ("FERRUMDECK_WORKER_TOKEN=plain-looking-value", "plain-looking-value"),
        ('{"api_key": "k-123456789"}', "k-123456789"),
        ("connecting to postgresql://app:s3cr3t-pw@db:5432/x", "s3cr3t-pw"),
        ("GET /v1/runs?password=letmein99&limit=5", "letmein99"),
    ],
)
def test_secret_shapes_are_redacted(captured: logging.Logger, message: str, secret: str) -> None:
    captured.info("%s", message)
    (line,) = _lines(captured)
    assert secret not in line["message"]
    assert logs.REDACTED in line["message"]


def test_registered_secrets_are_redacted_in_tracebacks(captured: logging.Logger) -> None:
    logs.register_secret("opaque-provider-credential")
    try:
        raise RuntimeError("auth failed for opaque-provider-credential")
    except RuntimeError:
        captured.exception("call failed")
    (line,) = _lines(captured)
    assert "opaque-provider-credential" not in json.dumps(line)
    assert "RuntimeError" in line["exception"]


def test_context_rides_on_every_line(captured: logging.Logger) -> None:
    token = logs.run_id.set("0190-run")
    try:
        captured.warning("tokens used: prompt_tokens=12")
    finally:
        logs.run_id.reset(token)
    captured.warning("after")
    first, second = _lines(captured)
    assert first["run_id"] == "0190-run"
    assert first["message"] == "tokens used: prompt_tokens=12"
    assert first["level"] == "warning"
    assert "run_id" not in second

"""The backoff policy behind the worker's retries: how long it waits, and when it stops."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from prometheus_client import REGISTRY

from services.worker.retry import Backoff, retry_after_seconds


def retries(kind: str) -> float:
    return REGISTRY.get_sample_value("ferrumdeck_worker_retries_total", {"kind": kind}) or 0.0


def always(value: float) -> Backoff:
    """Three retries from 0.5 s, capped at 3 s, with the jitter pinned to `value`."""
    return Backoff(3, 0.5, 3.0, jitter=lambda: value)


def test_the_longest_wait_doubles_from_the_base_up_to_the_cap() -> None:
    backoff = Backoff(6, 0.5, 3.0)
    assert [backoff.ceiling(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_full_jitter_spreads_waits_over_the_whole_range() -> None:
    backoff = Backoff(3, 0.5, 10.0, jitter=random.Random(7).random)
    waits = [backoff.delay(3) for _ in range(2000)]
    assert all(w is not None and 0 <= w < 2.0 for w in waits)
    assert min(w for w in waits if w is not None) < 0.1  # some retry almost at once
    assert max(w for w in waits if w is not None) > 1.9  # and some wait nearly the most


def test_jitter_scales_the_longest_wait() -> None:
    assert always(0.0).delay(2) == 0.0
    assert always(0.5).delay(2) == 0.5
    assert always(0.999).delay(3) == pytest.approx(1.998)


def test_no_wait_once_the_retries_are_spent() -> None:
    backoff = always(0.5)
    assert backoff.delay(3) is not None
    assert backoff.delay(4) is None
    assert Backoff(0, 0.5, 3.0).delay(1) is None


def test_a_providers_retry_after_is_believed_up_to_the_cap() -> None:
    backoff = always(0.0)
    assert backoff.delay(1, retry_after=2.5) == 2.5
    assert backoff.delay(1, retry_after=60) == 3.0
    assert backoff.delay(1, retry_after=-4) == 0.0


def test_no_wait_that_would_end_past_the_time_budget() -> None:
    backoff = always(1.0)  # first wait: 0.5 s
    assert backoff.delay(1, remaining=0.6) == 0.5
    assert backoff.delay(1, remaining=0.5) is None
    assert backoff.delay(1, remaining=-1) is None
    assert backoff.delay(1, remaining=10, retry_after=2) == 2
    assert backoff.delay(1, remaining=1, retry_after=2) is None


async def test_wait_gives_up_at_once_when_the_budget_would_run_out() -> None:
    before = retries("llm")
    started = time.monotonic()
    waited = await Backoff(3, 5.0, 10.0, jitter=lambda: 1.0).wait(
        1, kind="llm", deadline=time.monotonic() + 1.0, failure="503"
    )
    assert waited is False
    assert time.monotonic() - started < 0.1
    assert retries("llm") == before


async def test_wait_sleeps_and_counts_the_retry() -> None:
    before = retries("tool")
    started = time.monotonic()
    waited = await always(0.4).wait(1, kind="tool", deadline=None, failure="unavailable")
    assert waited is True
    assert 0.2 <= time.monotonic() - started < 1.0
    assert retries("tool") == before + 1


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after-ms": "soon", "retry-after": "9"}, 9.0),
        ({"retry-after": format_datetime(datetime(2015, 10, 21, tzinfo=UTC), usegmt=True)}, 0.0),
        ({"retry-after": "whenever"}, None),
        ({"retry-after": "inf"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_retry_after_headers_are_read(headers: object, seconds: float | None) -> None:
    assert retry_after_seconds(headers) == seconds


def test_a_retry_after_date_is_the_time_until_then() -> None:
    when = datetime.now(UTC) + timedelta(seconds=30)
    seconds = retry_after_seconds({"retry-after": format_datetime(when, usegmt=True)})
    assert seconds is not None
    assert 28 <= seconds <= 30

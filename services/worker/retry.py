"""How long to wait before trying a failed call again, and when to stop trying.

Exponential backoff with full jitter: the wait before retry `n` is drawn uniformly from
`[0, min(max_seconds, base_seconds * 2**(n-1))]`, so workers that failed together (a
provider blip hits every run at once) spread their retries out instead of coming back
in lockstep. A provider that says when to come back (`Retry-After`) is believed, up to
`max_seconds`. A wait that would end past the run's time budget is not started: the run
could not use the answer anyway, and failing now tells the operator sooner.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from services.worker import metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backoff:
    retries: int
    base_seconds: float
    max_seconds: float
    jitter: Callable[[], float] = field(default=random.random)  # uniform in [0, 1)

    def ceiling(self, attempt: int) -> float:
        """The longest wait before retry `attempt` (1 is the first retry)."""
        return min(self.max_seconds, self.base_seconds * 2.0 ** (attempt - 1))

    def delay(
        self, attempt: int, *, remaining: float | None = None, retry_after: float | None = None
    ) -> float | None:
        """Seconds to wait before retry `attempt`, or None to give up: the retries are
        spent, or the wait would outlast the `remaining` seconds of the run's budget."""
        if attempt > self.retries:
            return None
        if retry_after is not None:
            wait = min(max(retry_after, 0.0), self.max_seconds)
        else:
            wait = self.jitter() * self.ceiling(attempt)
        if remaining is not None and wait >= remaining:
            return None
        return wait

    async def wait(
        self,
        attempt: int,
        *,
        kind: str,
        deadline: float | None,
        failure: str,
        retry_after: float | None = None,
    ) -> bool:
        """Sleep before retry `attempt` of a `kind` call (counted and logged); False, at
        once, when it is not to be retried. `deadline` is on the `time.monotonic` clock."""
        remaining = None if deadline is None else deadline - time.monotonic()
        wait = self.delay(attempt, remaining=remaining, retry_after=retry_after)
        if wait is None:
            return False
        metrics.retry(kind)
        log.warning("%s call failed (%s); retry %d in %.2fs", kind, failure, attempt, wait)
        await asyncio.sleep(wait)
        return True


def retry_after_seconds(headers: object) -> float | None:
    """What a provider's `retry-after-ms` or `Retry-After` (seconds or an HTTP date) asks
    for, if it said anything readable."""
    get = getattr(headers, "get", None)
    if get is None:
        return None
    millis = _seconds(get("retry-after-ms"))
    if millis is not None:
        return millis / 1000
    value = get("retry-after")
    if value is None:
        return None
    seconds = _seconds(value)
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _seconds(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None

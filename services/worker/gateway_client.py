"""The worker's HTTP client for the gateway's callback API.

A 409 means this worker no longer holds the run (stale epoch, cancelled, over budget) and
surfaces as `LeaseLost`, so the agent loop can stop at once whatever it was doing. A 404
(no such run) is a `LeaseLost` too, with its `status`, for the few callers that tell
"not ours" from "not there".

A gateway that is briefly away (restarting, its database failing over: connection
errors, 502/503/504) is ridden through: every callback but the claim is repeated for up
to `ride_through_seconds`. They are all safe to repeat — a step is recorded once per
seq (the final step too: a replay of the step that completed the run is acknowledged as
replayed), an authorisation of a seq already decided returns the same verdict, and a
second completion is refused with 409 — so a run need not be abandoned to reclaim, and
its lease, for a blip. The claim is not repeated here: a claim whose answer was lost took
the run, and the consumer decides what to do about it.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
from pydantic import BaseModel

from services.contract.errors import ErrorCode
from services.contract.worker_api import (
    CatalogueReport,
    ClaimGrant,
    ClaimRequest,
    CompleteReport,
    DeadLetterReport,
    FailReport,
    LeaseBody,
    LeaseInfo,
    ReleaseReport,
    StepAck,
    StepReport,
    ToolAuthorization,
    ToolVerdict,
)
from services.worker.fair_slots import FairSlots
from services.worker.retry import Backoff

_TRANSIENT_STATUSES = frozenset({502, 503, 504})
# Callbacks in flight at once. httpcore's pool re-examines every connection, and for
# each idle one counts them all again, on every request and response: its bookkeeping
# grows with the square of the connections. With 1,200 runs calling back together it
# took 70-90 % of the worker's CPU, and even 68 mostly idle connections cost 26 % at 60
# runs/s (bench/README.md, profile findings). Waiting for a slot is cheap, and 16
# connections carry over a thousand callbacks a second, more than a gateway answers.
# Slots go to projects in turn (`fair_slots.py`).
_CONCURRENT_CALLBACKS = 16


class LeaseLost(Exception):
    """The gateway refused a callback: the run is no longer ours to work on."""

    def __init__(self, code: str, message: str, status: int = 409) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.status = status


class GatewayClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        ride_through_seconds: float = 15.0,
    ) -> None:
        self._ride_through = ride_through_seconds
        self._backoff = Backoff(retries=1_000, base_seconds=0.1, max_seconds=2.0)
        self._slots = FairSlots(_CONCURRENT_CALLBACKS)
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(30.0),
            transport=transport,
            # A few connections beyond the callbacks' share, so the readiness probe
            # is answered even while every callback slot is taken.
            limits=httpx.Limits(
                max_connections=_CONCURRENT_CALLBACKS + 4,
                max_keepalive_connections=_CONCURRENT_CALLBACKS + 4,
            ),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def reachable(self) -> bool:
        """The gateway answers its liveness check."""
        try:
            response = await self._http.get("/healthz", timeout=2.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def _send(
        self,
        path: str,
        body: BaseModel,
        method: str = "POST",
        *,
        ride_through: bool = True,
        claim: bool = False,
    ) -> dict[str, Any] | None:
        content = body.model_dump_json()
        deadline = time.monotonic() + (self._ride_through if ride_through else 0.0)
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._slots.held(claim=claim):
                    response = await self._http.request(
                        method,
                        path,
                        content=content,
                        headers={"Content-Type": "application/json"},
                    )
            except httpx.TransportError as exc:
                if not await self._backoff.wait(
                    attempt,
                    kind="callback",
                    deadline=deadline,
                    failure=f"{type(exc).__name__}: {exc}",
                ):
                    raise
                continue
            if response.status_code in _TRANSIENT_STATUSES and await self._backoff.wait(
                attempt,
                kind="callback",
                deadline=deadline,
                failure=f"{path} answered {response.status_code}",
            ):
                continue
            return self._read(response)

    @staticmethod
    def _read(response: httpx.Response) -> dict[str, Any] | None:
        if response.status_code in (404, 409):
            error = response.json().get("error", {})
            raise LeaseLost(
                error.get("code", ErrorCode.CONFLICT),
                error.get("message", ""),
                response.status_code,
            )
        response.raise_for_status()
        if response.status_code == 204:
            return None
        payload: dict[str, Any] = response.json()
        return payload

    async def claim(self, run_id: uuid.UUID, worker_id: str) -> ClaimGrant:
        payload = await self._send(
            f"/v1/worker/runs/{run_id}/claim",
            ClaimRequest(worker_id=worker_id),
            ride_through=False,
            claim=True,
        )
        return ClaimGrant.model_validate(payload)

    async def heartbeat(self, run_id: uuid.UUID, lease: LeaseBody) -> LeaseInfo:
        payload = await self._send(f"/v1/worker/runs/{run_id}/heartbeat", lease)
        return LeaseInfo.model_validate(payload)

    async def report_step(self, run_id: uuid.UUID, report: StepReport) -> StepAck:
        """Record a step; with `final_output` it also completes the run."""
        payload = await self._send(f"/v1/worker/runs/{run_id}/steps", report)
        return StepAck.model_validate(payload)

    async def complete(self, run_id: uuid.UUID, report: CompleteReport) -> None:
        await self._send(f"/v1/worker/runs/{run_id}/complete", report)

    async def fail(self, run_id: uuid.UUID, report: FailReport) -> None:
        await self._send(f"/v1/worker/runs/{run_id}/fail", report)

    async def release(self, run_id: uuid.UUID, report: ReleaseReport) -> None:
        """Hand the run back: it is queued again at once for another worker."""
        await self._send(f"/v1/worker/runs/{run_id}/release", report)

    async def dead_letter(self, run_id: uuid.UUID, report: DeadLetterReport) -> None:
        """Fail a run whose job was delivered too often; refused while a lease is live."""
        await self._send(f"/v1/worker/runs/{run_id}/dead-letter", report)

    async def authorize_tool(self, run_id: uuid.UUID, ask: ToolAuthorization) -> ToolVerdict:
        payload = await self._send(f"/v1/worker/runs/{run_id}/tools/authorize", ask)
        return ToolVerdict.model_validate(payload)

    async def report_tools(self, report: CatalogueReport) -> None:
        # Not ridden through: the reporter tries again on its own, and a stopping worker
        # withdrawing its tools must not wait on a gateway that is away.
        await self._send("/v1/worker/tools", report, method="PUT", ride_through=False)

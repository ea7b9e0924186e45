"""Load for the chaos suite and the soak bench: runs of known shape, started the way a
careful integration starts them.

Every run has a unique input, so the scripted model can tell conversations apart and a
note in the notes file can be traced to the one run whose tool call wrote it.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections import Counter
from collections.abc import Callable

import httpx

from services.devstack.demo_llm import Reply
from tests.support.chaos_stack import ChaosLLM, tool_call

_MAX_WAIT_SECONDS = 2.0


class Integration:
    """Starts runs with an `Idempotency-Key` each, so retrying after a lost answer (a
    reset connection, a gateway killed mid-request) never starts a second run; retries
    connection errors and every 429/5xx, waiting as `Retry-After` says (capped, to keep
    tests short). A run counts as accepted only once a 202 named it.

    `seen` counts every status the gateway answered, `errors` every connection-level
    failure, so a test can assert what a client experienced during a fault.
    """

    def __init__(
        self, url: str, key: str, *, keep_alive: bool = True, patience: float = 60.0
    ) -> None:
        limits = httpx.Limits(max_keepalive_connections=20 if keep_alive else 0)
        self._http = httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=15, limits=limits
        )
        self._patience = patience
        self.seen: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.retry_after: list[str | None] = []
        self.accepted: dict[str, str] = {}

    async def aclose(self) -> None:
        await self._http.aclose()

    async def start_run(self, agent: str, text: str) -> str | None:
        """The id of the run started, or None if the gateway never accepted it in time."""
        key = uuid.uuid4().hex
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._patience
        while loop.time() < deadline:
            try:
                response = await self._http.post(
                    "/v1/runs",
                    json={"agent": agent, "input": text},
                    headers={"Idempotency-Key": key},
                )
            except httpx.TransportError as exc:
                self.errors[type(exc).__name__] += 1
                await asyncio.sleep(0.2)
                continue
            self.seen[response.status_code] += 1
            if response.status_code == 202:
                run_id = str(response.json()["id"])
                self.accepted[run_id] = text
                return run_id
            if response.status_code != 429 and response.status_code < 500:
                raise AssertionError(f"POST /v1/runs: {response.status_code} {response.text}")
            retry_after = response.headers.get("Retry-After")
            self.retry_after.append(retry_after)
            await asyncio.sleep(min(float(retry_after or 0.5), _MAX_WAIT_SECONDS))
        return None


async def keep_starting(
    integration: Integration,
    agent: str,
    make: Callable[[], str],
    stop: asyncio.Event,
    *,
    clients: int = 3,
    pause: float = 0.1,
) -> None:
    """`clients` concurrent integrations starting runs until `stop` is set."""

    async def one() -> None:
        while not stop.is_set():
            await integration.start_run(agent, make())
            await asyncio.sleep(pause)

    await asyncio.gather(*(one() for _ in range(clients)))


class Workload:
    """Scripts runs on the model: each method returns the input that starts one."""

    def __init__(self, llm: ChaosLLM, label: str) -> None:
        self._llm = llm
        self._label = label
        self._kinds = itertools.cycle([self.quick, self.noting, self.quick])
        self.notes: dict[str, str] = {}

    def _text(self, kind: str) -> str:
        return f"{self._label} {kind} {uuid.uuid4().hex[:10]}"

    def quick(self) -> str:
        """One model call, then done."""
        text = self._text("quick")
        self._llm.script(text, Reply(content=f"done: {text}"))
        return text

    def noting(self, answer_seconds: float = 0.0) -> str:
        """Writes a note (not idempotent), then answers, the first time after
        `answer_seconds`."""
        text = self._text("noting")
        note = f"note of {text}"
        self.notes[text] = note
        answer = Reply(content=f"noted: {text}")
        slow_answer = Reply(content=answer.content, delay_seconds=answer_seconds)
        self._llm.script(text, tool_call("notes.write_note", text=note), [slow_answer, answer])
        return text

    def slow(self, seconds: float) -> str:
        """A model call taking `seconds` the first time it is asked, instantly after."""
        text = self._text("slow")
        self._llm.script(
            text, [Reply(content=f"slowly: {text}", delay_seconds=seconds), Reply(content="ok")]
        )
        return text

    def slow_tool(self, seconds: float) -> str:
        """Writes a note at once, then its tool call takes `seconds` to answer."""
        text = self._text("slow-tool")
        note = f"slow note of {text}"
        self.notes[text] = note
        self._llm.script(
            text,
            tool_call("notes.slow_note", text=note, seconds=seconds),
            Reply(content=f"noted slowly: {text}"),
        )
        return text

    def mixed(self) -> str:
        """Quick runs and note-writing ones, two to one."""
        return next(self._kinds)()

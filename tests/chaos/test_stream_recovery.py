"""A worker killed while the model streams its answer: the run is recovered by another
worker, and whoever follows the run sees the retried call's text, under the new epoch,
and its recorded step, on one stream that never breaks."""

from __future__ import annotations

import asyncio
import uuid

from services.client.async_client import AsyncFerrumDeck
from services.client.run_stream import RunStreamItem
from services.contract.run_stream import RunEnded, StepRecorded, TokenDelta
from services.devstack.demo_llm import Reply
from tests.chaos.driving import kill_holder_when
from tests.support.chaos_stack import ChaosStack


async def test_a_worker_killed_mid_stream_ends_in_a_recovered_run_streaming_the_retry(
    chaos: ChaosStack,
) -> None:
    await chaos.steady()
    agent = await chaos.agent("stream-crash")
    text = f"stream through a crash {uuid.uuid4().hex[:8]}"
    first = " ".join(f"first{n}" for n in range(60))
    retried = " ".join(f"again{n}" for n in range(10))
    chaos.llm.script(
        text,
        [
            Reply(content=first, chunk_delay_seconds=0.1),
            Reply(content=retried, chunk_delay_seconds=0.01),
        ],
    )
    items: list[RunStreamItem] = []
    async with AsyncFerrumDeck(chaos.url, chaos.admin_key) as deck:
        run = await deck.create_run(agent, text, stream=True)

        async def follow() -> None:
            async for item in deck.stream_run(run.id):
                items.append(item)

        following = asyncio.create_task(follow())

        async def streaming() -> bool:
            return sum(isinstance(i, TokenDelta) for i in items) >= 3

        await kill_holder_when(chaos, str(run.id), streaming)
        await asyncio.wait_for(following, 90)

    tokens = [i for i in items if isinstance(i, TokenDelta)]
    epochs = sorted({t.epoch for t in tokens})
    assert len(epochs) == 2, "tokens of the killed call, then of the retried one"
    latest = "".join(t.delta for t in tokens if t.epoch == epochs[-1])
    assert latest == retried
    assert first.startswith("".join(t.delta for t in tokens if t.epoch == epochs[0]))
    (step,) = [i.step for i in items if isinstance(i, StepRecorded)]
    assert step.output["message"]["content"] == retried
    assert isinstance(items[-1], RunEnded)
    assert (items[-1].run.status, items[-1].run.output) == ("completed", retried)

"""The gateway killed with SIGKILL under load and started again: clients that retry
(with their `Idempotency-Key`) get every run they asked for exactly once, and workers
carry on with the new process."""

from __future__ import annotations

from tests.chaos.driving import accepted_more, under_load
from tests.chaos.invariants import assert_invariants
from tests.support.chaos_load import Workload
from tests.support.chaos_stack import ChaosStack


async def test_no_accepted_run_is_lost_when_the_gateway_is_killed_under_load(
    chaos: ChaosStack,
) -> None:
    await chaos.gateway.steady()
    agent = await chaos.agent("gateway-kill")
    work = Workload(chaos.llm, "gateway-kill")
    async with under_load(chaos, agent, work.mixed) as integration:
        await accepted_more(integration, 8)
        killed = chaos.gateway.ident
        await chaos.gateway.kill()
        chaos.gateway.restart_later()
        await chaos.gateway.restarted()
        await accepted_more(integration, 8)
    assert chaos.gateway.ident != killed
    await assert_invariants(chaos, integration.accepted, [agent])

"""Time to first token through FerrumDeck, the Redis writes an answer costs, and waiting
for an answer with `Prefer: wait` against a 202 and the run's stream.

A real gateway and two workers (`bench.stack`) on the benchmarks' model, which streams
`words=N` answers a word a chunk and notes the wall-clock time its first chunk leaves
(t0). Each run is started with `"stream": true` and followed at once on
`GET /v1/runs/{id}/stream`; t1 is the wall-clock time the client has its first `token`
event. Everything is on one host, so the clocks agree. Phases:

* **idle**: one streaming run at a time;
* **200 concurrent**: 200 streaming runs started together, each followed on its own
  connection, their answers written over a few seconds, so 200 streams are open at once;
* **baseline**: the same model called through LiteLLM from this process, t1 being the
  first chunk LiteLLM hands over: what a caller of the model itself waits.

Then one 1,000-token answer (written in about 2 s) and the entries its run's token
stream holds, each one Redis write (pipelined `XADD`+`EXPIRE`); and one-step runs
answered through `Prefer: wait=30` against `POST` (202) then the stream read to `end`.

Run: `.venv/bin/python -m bench.time_to_first_token [--samples 40]`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid

import httpx
import litellm
from httpx_sse import aconnect_sse
from redis.asyncio import Redis

from bench.measure import machine, ms, table
from bench.stack import MODEL, Stack, add_stack_args, open_stack
from services.contract.api import AgentCreate
from services.contract.jobs import StreamNames

AGENT = "ttft"
CONCURRENT = 200


def _prompt(words: int, chunk_ms: int) -> str:
    return f"ttft {uuid.uuid4().hex} words={words} chunk_ms={chunk_ms}"


async def _first_token(http: httpx.AsyncClient, prompt: str) -> tuple[str, float]:
    """Start a streaming run of `prompt`; the run's id and when its first token came."""
    created = await http.post("/v1/runs", json={"agent": AGENT, "input": prompt, "stream": True})
    created.raise_for_status()
    run_id = created.json()["id"]
    first = float("nan")
    async with aconnect_sse(http, "GET", f"/v1/runs/{run_id}/stream") as source:
        async for event in source.aiter_sse():
            if event.event == "token" and first != first:
                first = time.time()
            if event.event == "end":
                if first != first:
                    run = json.loads(event.data)
                    print("no token:", run["status"], run["error"])
                break
    return run_id, first


async def _gaps(stack: Stack, prompts_and_firsts: list[tuple[str, float]]) -> list[float]:
    """t1 - t0 of each run that had a token (a run that ended without one is reported)."""
    chunks = (await stack.llm_stats())["first_chunks"]
    assert isinstance(chunks, dict)
    gaps = [first - chunks[prompt] for prompt, first in prompts_and_firsts if first == first]
    if missing := len(prompts_and_firsts) - len(gaps):
        print(f"{missing} of {len(prompts_and_firsts)} runs ended without a token event")
    return gaps


async def _idle(stack: Stack, http: httpx.AsyncClient, samples: int) -> list[float]:
    seen = []
    for _ in range(samples):
        prompt = _prompt(20, 10)
        _, first = await _first_token(http, prompt)
        seen.append((prompt, first))
    return await _gaps(stack, seen)


async def _concurrent(stack: Stack, http: httpx.AsyncClient) -> list[float]:
    prompts = [_prompt(40, 50) for _ in range(CONCURRENT)]
    firsts = await asyncio.gather(*(_first_token(http, p) for p in prompts))
    return await _gaps(stack, [(p, f) for p, (_, f) in zip(prompts, firsts, strict=True)])


async def _baseline(stack: Stack, samples: int) -> list[float]:
    seen = []
    for _ in range(samples):
        prompt = _prompt(20, 10)
        stream = await litellm.acompletion(
            model=f"openai/{MODEL}",
            api_base=f"{stack.llm_url}/v1",
            api_key="bench",
            messages=[{"role": "user", "content": prompt}],
            stream=True,
        )
        first = float("nan")
        async for chunk in stream:
            if first != first and chunk.choices and chunk.choices[0].delta.content:
                first = time.time()
        seen.append((prompt, first))
    return await _gaps(stack, seen)


async def _writes_per_answer(stack: Stack, http: httpx.AsyncClient) -> tuple[int, int]:
    """Redis writes for one 1,000-token answer, and its token events."""
    run_id, _ = await _first_token(http, _prompt(1000, 2))
    redis = Redis.from_url(stack.redis_url)
    try:
        writes = int(await redis.xlen(StreamNames(stack.prefix).run_tokens(uuid.UUID(run_id))))
    finally:
        await redis.aclose()
    return writes, 1000


async def _answer_by_wait(http: httpx.AsyncClient) -> float:
    started = time.perf_counter()
    response = await http.post(
        "/v1/runs",
        json={"agent": AGENT, "input": _prompt(5, 0)},
        headers={"Prefer": "wait=30"},
    )
    assert response.status_code == 200, response.text
    return time.perf_counter() - started


async def _answer_by_stream(http: httpx.AsyncClient) -> float:
    started = time.perf_counter()
    created = await http.post("/v1/runs", json={"agent": AGENT, "input": _prompt(5, 0)})
    assert created.status_code == 202, created.text
    async with aconnect_sse(http, "GET", f"/v1/runs/{created.json()['id']}/stream") as source:
        async for event in source.aiter_sse():
            if event.event == "end":
                break
    return time.perf_counter() - started


async def main(args: argparse.Namespace) -> None:
    async with open_stack(args) as stack:
        await stack.start_llm()
        await stack.start_gateway()
        for _ in range(2):
            await stack.start_worker()
        await stack.agent(AgentCreate(name=AGENT, model=MODEL))
        limits = httpx.Limits(max_connections=CONCURRENT * 2)
        async with httpx.AsyncClient(
            base_url=stack.url,
            headers={"Authorization": f"Bearer {stack.admin_key}"},
            timeout=60,
            limits=limits,
        ) as http:
            await _idle(stack, http, 5)  # warm: connections, caches, LiteLLM's imports
            idle = await _idle(stack, http, args.samples)
            concurrent = await _concurrent(stack, http)
            baseline = await _baseline(stack, args.samples)
            writes, tokens = await _writes_per_answer(stack, http)
            waited = [await _answer_by_wait(http) for _ in range(args.samples)]
            streamed = [await _answer_by_stream(http) for _ in range(args.samples)]
    print(machine())
    print()
    print(
        table(
            ["time to first token (t1 - t0)", "samples", "p50 ms", "p99 ms", "target"],
            [
                ["through FerrumDeck, idle", len(idle), ms(idle, 50), ms(idle, 99), "≤15 p50"],
                [
                    f"through FerrumDeck, {CONCURRENT} concurrent streams",
                    len(concurrent),
                    ms(concurrent, 50),
                    ms(concurrent, 99),
                    "≤50 p99",
                ],
                [
                    "baseline: LiteLLM → model directly",
                    len(baseline),
                    ms(baseline, 50),
                    ms(baseline, 99),
                    "—",
                ],
            ],
        )
    )
    print()
    print(
        f"Redis writes for one {tokens}-token answer: {writes} (one per token unbatched: {tokens})"
    )
    print()
    print(
        table(
            ["one-step run, POST to answer", "samples", "p50 ms", "p99 ms"],
            [
                ["Prefer: wait=30 (200)", len(waited), ms(waited, 50), ms(waited, 99)],
                ["202, then the stream to end", len(streamed), ms(streamed, 50), ms(streamed, 99)],
            ],
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    add_stack_args(parser)
    parser.add_argument("--samples", type=int, default=40)
    asyncio.run(main(parser.parse_args()))

"""How long the gateway takes to decide one tool call, with 10, 100 and 1,000 rules.

Every tool call of every run is decided by policy before it happens, so this cost is paid
on the hot path; the target is 1 ms at p99 with 1,000 rules on a slow two-core machine.
Rule sets are generated the way operators write them (mostly exact tool names, some
server-wide globs, argument conditions, a few regexes) and every call is timed on its own.

"warm" calls come from (agent, tool) pairs the policy has seen before, the common case;
"cold" calls each come from a new agent name, so the evaluator first works out which
rules cover the pair. The baseline row is one dict lookup plus one precompiled regex
search, timed the same way, so the ratio to the floor of any Python evaluator is visible.

Each policy is timed twice in the same run: as the gateway compiles it (regexes on RE2,
linear time) and with its regexes compiled by Python's `re` instead, which is what the
gateway used before issue 14. The `re` policy is the same evaluator: only the name it
compiles regexes with is replaced while it is built, here, not by a switch in the
gateway's code.

Run: `.venv/bin/python -m bench.policy_eval`
"""

from __future__ import annotations

import gc
import os
import platform
import random
import re
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any
from unittest import mock

from services.contract.policy import PolicySet
from services.gateway import policy as evaluator
from services.gateway.policy import CompiledPolicy, ToolCall

SEED = 20_240_601
CALLS = 5000
RULE_COUNTS = (10, 100, 1000)
SERVERS = [f"srv{n}" for n in range(15)] + ["fs", "git", "http", "notes", "shell"]
VERBS = ["read", "write", "list", "delete", "search", "create", "update", "get_status"]
TOOLS = [f"{server}.{verb}" for server in SERVERS for verb in VERBS]
TEAMS = ["support", "ops", "sales", "research"]
AGENTS = [f"{team}-{n}" for team in TEAMS for n in range(3)]


def _condition(rng: random.Random) -> dict[str, Any] | None:
    roll = rng.random()
    if roll < 0.5:
        return None
    if roll < 0.6:
        return {"args": {"path": {"glob": rng.choice(["/etc/*", "/home/*/.ssh/*", "*.pem"])}}}
    if roll < 0.7:
        return {"args": {"mode": {"eq": rng.choice(["r", "w", "rw"])}}}
    if roll < 0.8:
        return {"args": {"amount": {"gt": rng.choice([10, 100, 1000])}, "mode": {"ne": "r"}}}
    if roll < 0.85:
        pattern = rng.choice(["(?i)password", r"\b\d{16}\b", "(?i)drop\\s+table"])
        return {"args": {"text": {"regex": pattern}}}
    if roll < 0.95:
        return {"calls_in_run": {"gt": rng.choice([5, 10, 20])}}
    return {"identical_in_a_row": {"gte": 3}}


def rules(count: int, rng: random.Random) -> PolicySet:
    generated = []
    for n in range(count):
        roll = rng.random()
        if roll < 0.6:
            tool = rng.choice(TOOLS)
        elif roll < 0.85:
            tool = f"{rng.choice(SERVERS)}.*"
        elif roll < 0.95:
            tool = f"*.{rng.choice(VERBS)}*"
        else:
            tool = "*"
        roll = rng.random()
        agent = (
            "*" if roll < 0.75 else rng.choice(AGENTS) if roll < 0.9 else f"{rng.choice(TEAMS)}-*"
        )
        effect = rng.choices(["allow", "require_approval", "deny"], weights=[60, 25, 15])[0]
        rule: dict[str, Any] = {"id": f"r{n}", "agent": agent, "tool": tool, "effect": effect}
        if (when := _condition(rng)) is not None:
            rule["when"] = when
        generated.append(rule)
    return PolicySet.model_validate({"rules": generated})


def calls(rng: random.Random, agents: Callable[[int], str]) -> list[ToolCall]:
    made = []
    for n in range(CALLS):
        arguments: dict[str, Any] = {}
        if rng.random() < 0.6:
            arguments["path"] = rng.choice(["/etc/passwd", "/tmp/out.txt", "/home/a/.ssh/id"])
        if rng.random() < 0.5:
            arguments["mode"] = rng.choice(["r", "w", "rw"])
        if rng.random() < 0.4:
            arguments["amount"] = rng.choice([1, 50, 500, 5000, 2.5])
        if rng.random() < 0.4:
            arguments["text"] = rng.choice(["hello world " * 20, "my password is x", "DROP TABLE"])
        tool = rng.choice(TOOLS) if rng.random() < 0.9 else f"unknown{n % 7}.tool"
        in_run = rng.randint(1, 25)
        made.append(ToolCall(agents(n), tool, arguments, in_run, rng.randint(1, min(in_run, 5))))
    return made


def _timed(work: Callable[[Any], object], inputs: Sequence[Any]) -> list[float]:
    """Microseconds per call, each call timed on its own, from a freshly collected heap."""
    gc.collect()
    took = []
    clock = time.perf_counter_ns
    for item in inputs:
        start = clock()
        work(item)
        took.append((clock() - start) / 1000)
    return took


def _row(label: str, engine: str, memo: str, compile_ms: str, took: list[float]) -> str:
    p99 = statistics.quantiles(took, n=100)[98]
    median = statistics.median(took)
    return (
        f"| {label} | {engine} | {memo} | {len(took)} | {median:.1f} | {p99:.1f} "
        f"| {max(took):.1f} | {compile_ms} |"
    )


def compiled(policy_set: PolicySet, engine: str) -> tuple[CompiledPolicy, str]:
    """The policy as the gateway compiles it ("RE2"), or with `re` compiling its regexes."""
    start = time.perf_counter()
    if engine == "re":
        with mock.patch.object(evaluator, "compile_linear", re.compile):
            policy = CompiledPolicy(policy_set.rules, 1)
    else:
        policy = CompiledPolicy(policy_set.rules, 1)
    return policy, f"{(time.perf_counter() - start) * 1000:.1f}"


def baseline(rng: random.Random) -> list[float]:
    table = {tool: n for n, tool in enumerate(TOOLS)}
    regex = re.compile("(?i)password")
    texts = [(rng.choice(TOOLS), rng.choice(["my password is x", "hello " * 40])) for _ in TOOLS]
    inputs = [texts[n % len(texts)] for n in range(CALLS)]
    return _timed(lambda item: (table.get(item[0]), regex.search(item[1])), inputs)


def main() -> None:
    rng = random.Random(SEED)
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs\n")
    print(
        "| rules | regexes | (agent, tool) pairs | calls | median µs | p99 µs | max µs "
        "| compile ms |"
    )
    print("|---:|---|---|---:|---:|---:|---:|---:|")
    for count in RULE_COUNTS:
        policy_set = rules(count, rng)
        seen = calls(rng, lambda n: rng.choice(AGENTS))
        fresh = calls(rng, lambda n: f"{rng.choice(TEAMS)}-new{n}")
        for engine in ("RE2", "re"):
            policy, compile_ms = compiled(policy_set, engine)
            for call in seen:
                policy.evaluate(call)
            print(_row(str(count), engine, "warm", compile_ms, _timed(policy.evaluate, seen)))
            print(_row(str(count), engine, "cold", compile_ms, _timed(policy.evaluate, fresh)))
    print(_row("baseline: dict lookup + regex search", "re", "—", "—", baseline(rng)))


if __name__ == "__main__":
    main()

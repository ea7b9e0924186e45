"""The policy evaluator: what a rule list decides about one tool call. Pure, no I/O.

What the rules mean:

* A rule matches a call when its `agent` glob matches the agent's name, its `tool` glob
  matches the tool's `<server>.<tool>` name, and every condition in its `when` holds.
  Globs are fnmatch-style and case-sensitive.
* An argument condition holds only when the argument is present and every test it sets
  holds: `eq` / `ne` compare with `==`; `glob` and `regex` (`re.search`) hold only for
  string values; `gt` / `gte` / `lt` / `lte` hold only for numbers (int or float, never
  bool). A missing argument, or a value of the wrong type, makes the condition false.
* `calls_in_run` and `identical_in_a_row` bound the call's counters; both count this call.
* Among the matching rules the most severe effect wins: deny > require_approval > allow.
  The deciding rule is the first matching rule, in list order, with that effect, so
  reordering rules can change which rule is named but never the effect.
* When no rule matches, the call is denied by default and no rule is named.

Every tool call of every run passes through here, so a decision must cost microseconds
even with a thousand rules. Globs and regexes are compiled once, with the policy. Which
rules cover an (agent, tool) pair (their globs match) is worked out the first time the pair
is seen and remembered, oldest forgotten first beyond `_MEMO_LIMIT` pairs; after that a
call only checks the `when` conditions of the rules that cover it. Rules are grouped by
their tool glob, so even that first look matches each distinct glob once, not each rule.

Explanations quote the rules, never argument values: a regex that catches a password
must not copy the password into the decision.
"""

from __future__ import annotations

import fnmatch
import json
import operator
import re
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from services.contract.policy import (
    ArgCondition,
    CountCondition,
    Effect,
    PolicyDecision,
    PolicyRule,
    When,
)

_STRONGEST_FIRST = (Effect.DENY, Effect.REQUIRE_APPROVAL, Effect.ALLOW)
_VERBS = {
    Effect.ALLOW: "allows",
    Effect.DENY: "denies",
    Effect.REQUIRE_APPROVAL: "requires approval for",
}
_COMPARISONS: dict[str, tuple[str, Callable[[Any, Any], bool]]] = {
    "gt": (">", operator.gt),
    "gte": (">=", operator.ge),
    "lt": ("<", operator.lt),
    "lte": ("<=", operator.le),
    "eq": ("==", operator.eq),
}
_GLOB_CHARACTERS = frozenset("*?[")
_MEMO_LIMIT = 4096
_MISSING = object()

Check = Callable[[Any], bool]


@dataclass(frozen=True)
class ToolCall:
    agent: str
    tool: str
    arguments: Mapping[str, Any]
    calls_in_run: int
    """Calls of this tool in the run, including this one."""
    identical_in_a_row: int
    """Consecutive identical calls (same tool, same arguments) ending with this one,
    including it."""


@dataclass(frozen=True, slots=True)
class _ArgTest:
    name: str
    check: Check
    text: str


@dataclass(frozen=True, slots=True)
class _CountTest:
    counter: str
    bounds: tuple[tuple[str, Callable[[int, int], bool], int], ...]

    def holds(self, call: ToolCall) -> bool:
        count = getattr(call, self.counter)
        return all(compare(count, bound) for _, compare, bound in self.bounds)

    def text(self, call: ToolCall) -> str:
        bounds = ", ".join(f"{symbol} {bound}" for symbol, _, bound in self.bounds)
        return f"{self.counter} is {getattr(call, self.counter)} ({bounds})"


@dataclass(frozen=True, slots=True)
class _Rule:
    order: int
    id: str
    effect: Effect
    agent_glob: str
    covers_agent: Callable[[str], bool]
    args: tuple[_ArgTest, ...]
    counts: tuple[_CountTest, ...]

    def holds(self, call: ToolCall) -> bool:
        arguments = call.arguments
        for test in self.args:
            value = arguments.get(test.name, _MISSING)
            if value is _MISSING or not test.check(value):
                return False
        return all(test.holds(call) for test in self.counts)


# The rules covering one (agent, tool) pair: one tuple per effect, strongest first.
_Covering = tuple[tuple[_Rule, ...], ...]


class CompiledPolicy:
    """One policy version, compiled once and then asked about every tool call."""

    def __init__(self, rules: Sequence[PolicyRule], version: int) -> None:
        self._version = version
        by_tool: defaultdict[str, list[_Rule]] = defaultdict(list)
        for order, rule in enumerate(rules):
            by_tool[rule.tool].append(_compile(order, rule))
        self._by_exact_tool = {
            tool: group for tool, group in by_tool.items() if _GLOB_CHARACTERS.isdisjoint(tool)
        }
        self._by_tool_glob = [
            (_glob(glob), group)
            for glob, group in by_tool.items()
            if not _GLOB_CHARACTERS.isdisjoint(glob)
        ]
        self._memo: OrderedDict[tuple[str, str], _Covering] = OrderedDict()
        self._approval_ttls = {
            rule.id: timedelta(seconds=rule.approval_ttl_seconds)
            for rule in rules
            if rule.approval_ttl_seconds is not None
        }

    @property
    def version(self) -> int:
        return self._version

    def approval_ttl(self, rule: str | None) -> timedelta | None:
        """How long an approval asked for by `rule` waits, when the rule says."""
        return None if rule is None else self._approval_ttls.get(rule)

    def evaluate(self, call: ToolCall) -> PolicyDecision:
        covering = self._covering(call.agent, call.tool)
        for strength, rules in enumerate(covering):
            winner = _first_holding(rules, call)
            if winner is None:
                continue
            overruled = next(
                (
                    rule
                    for weaker in covering[strength + 1 :]
                    if (rule := _first_holding(weaker, call)) is not None
                ),
                None,
            )
            return self._decision(winner.effect, winner.id, _explain(winner, overruled, call))
        return self._decision(Effect.DENY, None, _explain_default(covering, call))

    def _covering(self, agent: str, tool: str) -> _Covering:
        key = (agent, tool)
        covering = self._memo.get(key)
        if covering is None:
            groups = [group for covers, group in self._by_tool_glob if covers(tool)]
            groups.append(self._by_exact_tool.get(tool, []))
            rules = sorted(
                (rule for group in groups for rule in group if rule.covers_agent(agent)),
                key=lambda rule: rule.order,
            )
            covering = tuple(
                tuple(rule for rule in rules if rule.effect is effect)
                for effect in _STRONGEST_FIRST
            )
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.popitem(last=False)
            self._memo[key] = covering
        return covering

    def _decision(self, effect: Effect, rule: str | None, explanation: str) -> PolicyDecision:
        return PolicyDecision(
            effect=effect, rule=rule, policy_version=self._version, explanation=explanation
        )


def _first_holding(rules: tuple[_Rule, ...], call: ToolCall) -> _Rule | None:
    for rule in rules:
        if rule.holds(call):
            return rule
    return None


def _explain(winner: _Rule, overruled: _Rule | None, call: ToolCall) -> str:
    text = f"rule {winner.id} {_VERBS[winner.effect]} {call.tool}"
    if winner.agent_glob != "*":
        text += f" for agent {call.agent}"
    conditions = [test.text for test in winner.args] + [t.text(call) for t in winner.counts]
    if conditions:
        text += ": " + " and ".join(conditions)
    if overruled is not None:
        text += f" ({winner.effect} wins over {overruled.id}'s {overruled.effect})"
    return text


def _explain_default(covering: _Covering, call: ToolCall) -> str:
    rules = sorted((rule for rules in covering for rule in rules), key=lambda rule: rule.order)
    subject = f"{call.tool} for agent {call.agent}"
    if not rules:
        return f"no rule covers {subject}: denied by default"
    others = len(rules) - 1
    names = rules[0].id + (f" and {others} other rule{'s' * (others > 1)}" if others else "")
    return f"no rule matches {subject}, the conditions of {names} do not hold: denied by default"


def _compile(order: int, rule: PolicyRule) -> _Rule:
    when = rule.when or When()
    counters = {"calls_in_run": when.calls_in_run, "identical_in_a_row": when.identical_in_a_row}
    return _Rule(
        order=order,
        id=rule.id,
        effect=rule.effect,
        agent_glob=rule.agent,
        covers_agent=_glob(rule.agent),
        args=tuple(_arg_test(name, condition) for name, condition in when.args.items()),
        counts=tuple(
            _count_test(counter, condition)
            for counter, condition in counters.items()
            if condition is not None
        ),
    )


def _glob(pattern: str) -> Callable[[str], bool]:
    if pattern == "*":
        return lambda name: True
    if _GLOB_CHARACTERS.isdisjoint(pattern):
        return pattern.__eq__
    regex = re.compile(fnmatch.translate(pattern))
    return lambda name: regex.match(name) is not None


def _count_test(counter: str, condition: CountCondition) -> _CountTest:
    bounds = tuple(
        (_COMPARISONS[test][0], _COMPARISONS[test][1], bound)
        for test, bound in condition.given().items()
    )
    return _CountTest(counter, bounds)


def _arg_test(name: str, condition: ArgCondition) -> _ArgTest:
    tests = [_value_check(test, operand) for test, operand in condition.given().items()]
    checks = tuple(check for check, _ in tests)
    combined: Check = checks[0] if len(checks) == 1 else lambda v: all(c(v) for c in checks)
    return _ArgTest(name, combined, f"argument {name} " + " and ".join(p for _, p in tests))


def _value_check(test: str, operand: Any) -> tuple[Check, str]:
    match test:
        case "eq":
            return (lambda value: bool(value == operand)), f"is {_literal(operand)}"
        case "ne":
            return (lambda value: bool(value != operand)), f"is not {_literal(operand)}"
        case "glob":
            glob = re.compile(fnmatch.translate(operand))
            return _on_strings(glob.match), f"matches glob {operand!r}"
        case "regex":
            regex = re.compile(operand)
            return _on_strings(regex.search), f"matches regex {operand!r}"
        case _:
            symbol, compare = _COMPARISONS[test]
            return (lambda value: _is_number(value) and compare(value, operand)), (
                f"{symbol} {_number(operand)}"
            )


def _on_strings(find: Callable[[str], re.Match[str] | None]) -> Check:
    return lambda value: isinstance(value, str) and find(value) is not None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _literal(value: Any) -> str:
    """A rule's operand as its author wrote it: 'text' quoted, anything else as JSON."""
    return repr(value) if isinstance(value, str) else json.dumps(value, default=repr)


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)

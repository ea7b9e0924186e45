"""The policy evaluator: what a rule list decides about one tool call. Pure, no I/O.

What the rules mean:

* A rule matches a call when its `agent` glob matches the agent's name, its `tool` glob
  matches the tool's `<server>.<tool>` name, and every condition in its `when` holds.
  Globs are fnmatch-style and case-sensitive.
* An argument condition tests one argument: `eq` / `ne` compare with `==`; `glob` and
  `regex` (searched anywhere, RE2 syntax) read strings of at most `MAX_MATCHED_CHARS`;
  `gt` / `gte` / `lt` / `lte` read numbers (int or float, never bool).
* When the argument is missing, or is not of the type a test reads (`"1000"` for `gt`, a
  number for `regex`, a string too long to read), the condition **fails closed**: it
  holds for `deny` and `require_approval` rules and does not hold for `allow` rules. The
  model chooses the arguments, so a deny rule that a quoted number could step around
  would be no rule; the explanation says when a rule applied this way.
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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from services.contract.linear_regex import compile_linear
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
# Longer strings are not read by `glob` / `regex` tests: RE2 is linear, but linear in a
# megabyte on every tool call is still a cost the caller would choose.
MAX_MATCHED_CHARS = 64 * 1024
_FAILS_CLOSED = frozenset({Effect.DENY, Effect.REQUIRE_APPROVAL})

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
    reads: Check
    """Whether the value is of the type every test of the condition reads."""
    check: Check
    text: str
    kind: str
    """What `reads` admits, for explanations: "a string", "a number"."""

    def unreadable(self, arguments: Mapping[str, Any]) -> str | None:
        """Why the condition cannot read this call's argument, or None if it can."""
        value = arguments.get(self.name, _MISSING)
        if value is _MISSING:
            return f"argument {self.name} is missing"
        if not self.reads(value):
            return f"argument {self.name} is not {self.kind}"
        return None


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
    fails_closed: bool

    def holds(self, call: ToolCall) -> bool:
        arguments = call.arguments
        for test in self.args:
            value = arguments.get(test.name, _MISSING)
            if value is _MISSING or not test.reads(value):
                if not self.fails_closed:
                    return False
            elif not test.check(value):
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
    conditions = [_condition_text(test, call) for test in winner.args]
    conditions += [test.text(call) for test in winner.counts]
    if conditions:
        text += ": " + " and ".join(conditions)
    if overruled is not None:
        text += f" ({winner.effect} wins over {overruled.id}'s {overruled.effect})"
    return text


def _condition_text(test: _ArgTest, call: ToolCall) -> str:
    unreadable = test.unreadable(call.arguments)
    if unreadable is None:
        return test.text
    return f"{unreadable}, so '{test.text}' fails closed and the rule applies"


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
        fails_closed=rule.effect in _FAILS_CLOSED,
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
    given = condition.given()
    tests = [_value_check(test, operand) for test, operand in given.items()]
    checks = tuple(check for check, _ in tests)
    combined: Check = checks[0] if len(checks) == 1 else lambda v: all(c(v) for c in checks)
    reads, kind = _reads(given.keys())
    text = f"argument {name} " + " and ".join(p for _, p in tests)
    return _ArgTest(name, reads, combined, text, kind)


def _reads(tests: Iterable[str]) -> tuple[Check, str]:
    """The values a condition's tests can read: strings, numbers, or anything."""
    kinds = {_KIND_OF_TEST.get(test) for test in tests} - {None}
    if not kinds:
        return (lambda value: True), "present"
    if kinds == {"a string"}:
        return _is_readable_string, f"a string of at most {MAX_MATCHED_CHARS} characters"
    if kinds == {"a number"}:
        return _is_number, "a number"
    return (lambda value: False), "both a string and a number"


def _value_check(test: str, operand: Any) -> tuple[Check, str]:
    match test:
        case "eq":
            return (lambda value: bool(value == operand)), f"is {_literal(operand)}"
        case "ne":
            return (lambda value: bool(value != operand)), f"is not {_literal(operand)}"
        case "glob":
            glob = re.compile(fnmatch.translate(operand))
            return (lambda value: glob.match(value) is not None), f"matches glob {operand!r}"
        case "regex":
            regex = compile_linear(operand)
            return (lambda value: regex.search(value) is not None), f"matches regex {operand!r}"
        case _:
            symbol, compare = _COMPARISONS[test]
            return (lambda value: bool(compare(value, operand))), f"{symbol} {_number(operand)}"


_KIND_OF_TEST = {"glob": "a string", "regex": "a string"} | dict.fromkeys(
    ("gt", "gte", "lt", "lte"), "a number"
)


def _is_readable_string(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_MATCHED_CHARS


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _literal(value: Any) -> str:
    """A rule's operand as its author wrote it: 'text' quoted, anything else as JSON."""
    return repr(value) if isinstance(value, str) else json.dumps(value, default=repr)


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)

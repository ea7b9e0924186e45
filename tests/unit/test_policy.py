from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.contract.policy import Effect, PolicyDecision, PolicyRule, PolicySet
from services.gateway.policy import MAX_MATCHED_CHARS, CompiledPolicy, ToolCall

DENY, APPROVAL, ALLOW = Effect.DENY, Effect.REQUIRE_APPROVAL, Effect.ALLOW


def _policy(*rules: dict[str, Any], version: int = 1) -> CompiledPolicy:
    return CompiledPolicy(PolicySet.model_validate({"rules": list(rules)}).rules, version)


def _call(
    tool: str = "notes.write_note",
    agent: str = "support-bot",
    calls_in_run: int = 1,
    identical_in_a_row: int = 1,
    **arguments: Any,
) -> ToolCall:
    return ToolCall(agent, tool, arguments, calls_in_run, identical_in_a_row)


def _decide(rule: dict[str, Any], call: ToolCall) -> Effect:
    """The effect of a single-rule policy: the rule's own effect if it matches, else deny."""
    return _policy({"id": "r", **rule}).evaluate(call).effect


def _matches(when: dict[str, Any], call: ToolCall) -> bool:
    return _decide({"effect": "allow", "when": when}, call) is ALLOW


# Each effect, and the explanation a user reads.


def test_an_allow_rule_allows() -> None:
    decision = _policy({"id": "r1", "tool": "time.*", "effect": "allow"}, version=4).evaluate(
        _call("time.get_current_time")
    )
    assert decision == PolicyDecision(
        effect=ALLOW,
        rule="r1",
        policy_version=4,
        explanation="rule r1 allows time.get_current_time",
    )


def test_a_deny_rule_denies_and_says_why() -> None:
    policy = _policy(
        {"id": "r1", "tool": "notes.*", "effect": "allow"},
        {"id": "r2", "tool": "notes.write_note", "effect": "require_approval"},
        {
            "id": "r3",
            "tool": "notes.write_note",
            "effect": "deny",
            "when": {"args": {"text": {"regex": "(?i)password"}}},
        },
    )
    decision = policy.evaluate(_call(text="my PASSWORD is hunter2"))
    assert (decision.effect, decision.rule) == (DENY, "r3")
    assert decision.explanation == (
        "rule r3 denies notes.write_note: argument text matches regex '(?i)password' "
        "(deny wins over r2's require_approval)"
    )


def test_an_explanation_never_quotes_argument_values() -> None:
    policy = _policy(
        {"id": "r1", "effect": "deny", "when": {"args": {"text": {"regex": "hunter"}}}}
    )
    assert "hunter2" not in policy.evaluate(_call(text="hunter2")).explanation


def test_a_require_approval_rule_asks_for_approval_and_carries_its_ttl() -> None:
    policy = _policy(
        {"id": "r1", "tool": "fs.*", "effect": "require_approval", "approval_ttl_seconds": 900},
        {"id": "r2", "tool": "fs.*", "effect": "require_approval"},
    )
    decision = policy.evaluate(_call("fs.delete"))
    assert (decision.effect, decision.rule) == (APPROVAL, "r1")
    assert decision.explanation == "rule r1 requires approval for fs.delete"
    assert policy.approval_ttl("r1") == timedelta(minutes=15)
    assert policy.approval_ttl("r2") is None
    assert policy.approval_ttl(None) is None


def test_the_policy_version_is_reported() -> None:
    policy = _policy(version=12)
    assert policy.version == 12
    assert policy.evaluate(_call()).policy_version == 12


# Default deny.


def test_no_rules_denies_everything() -> None:
    decision = _policy().evaluate(_call("time.get_current_time"))
    assert (decision.effect, decision.rule) == (DENY, None)
    assert decision.explanation == (
        "no rule covers time.get_current_time for agent support-bot: denied by default"
    )


def test_rules_for_other_tools_and_agents_do_not_cover_a_call() -> None:
    policy = _policy(
        {"id": "r1", "tool": "notes.read_note", "effect": "allow"},
        {"id": "r2", "agent": "ops-*", "effect": "allow"},
    )
    decision = policy.evaluate(_call("notes.write_note"))
    assert (decision.effect, decision.rule) == (DENY, None)
    assert decision.explanation.startswith("no rule covers notes.write_note")


def test_a_default_deny_names_the_rules_whose_conditions_failed() -> None:
    policy = _policy(
        {"id": "small", "effect": "allow", "when": {"args": {"n": {"lt": 10}}}},
        {"id": "r2", "effect": "allow", "when": {"args": {"n": {"lt": 5}}}},
        {"id": "r3", "effect": "deny", "when": {"args": {"n": {"gt": 100}}}},
    )
    decision = policy.evaluate(_call(n=50))
    assert (decision.effect, decision.rule) == (DENY, None)
    assert decision.explanation == (
        "no rule matches notes.write_note for agent support-bot, the conditions of small "
        "and 2 other rules do not hold: denied by default"
    )


# Precedence: deny > require_approval > allow, whatever the order.


@pytest.mark.parametrize(
    "order", [("a", "q", "d"), ("d", "q", "a"), ("q", "a", "d"), ("a", "d", "q")]
)
def test_deny_beats_approval_beats_allow_in_any_order(order: tuple[str, ...]) -> None:
    effects = {"a": "allow", "q": "require_approval", "d": "deny"}
    rules = [{"id": name, "effect": effects[name]} for name in order]
    assert _policy(*rules).evaluate(_call()).effect is DENY
    without_deny = [rule for rule in rules if rule["id"] != "d"]
    assert _policy(*without_deny).evaluate(_call()).effect is APPROVAL


def test_the_first_matching_rule_with_the_winning_effect_is_named() -> None:
    policy = _policy(
        {"id": "allow-all", "effect": "allow"},
        {"id": "no-big", "effect": "deny", "when": {"args": {"n": {"gt": 10}}}},
        {"id": "no-writes", "tool": "*.write_note", "effect": "deny"},
        {"id": "no-notes", "tool": "notes.*", "effect": "deny"},
    )
    assert policy.evaluate(_call(n=50)).rule == "no-big"
    assert policy.evaluate(_call(n=5)).rule == "no-writes"
    assert policy.evaluate(_call("notes.read_note", n=50)).rule == "no-big"
    assert policy.evaluate(_call("notes.read_note", n=5)).rule == "no-notes"
    assert policy.evaluate(_call("time.now", n=5)).rule == "allow-all"


def test_the_same_tool_is_decided_by_each_call_s_own_arguments() -> None:
    policy = _policy(
        {"id": "r1", "effect": "allow"},
        {"id": "r2", "effect": "deny", "when": {"args": {"path": {"glob": "/etc/*"}}}},
    )
    assert policy.evaluate(_call("fs.read", path="/etc/passwd")).effect is DENY
    assert policy.evaluate(_call("fs.read", path="/tmp/x")).effect is ALLOW
    assert policy.evaluate(_call("fs.read", path="/etc/shadow")).effect is DENY


def test_decisions_stay_right_for_more_agent_tool_pairs_than_are_remembered() -> None:
    policy = _policy({"id": "ops", "agent": "ops-*", "effect": "allow"})
    for n in range(5000):
        assert policy.evaluate(_call(agent=f"ops-{n}")).effect is ALLOW
    assert policy.evaluate(_call(agent="support-1")).effect is DENY


# Agent and tool globs.


@pytest.mark.parametrize(
    ("agent_glob", "agent", "matches"),
    [
        ("*", "anyone", True),
        ("support-bot", "support-bot", True),
        ("support-bot", "support-bot-2", False),
        ("support-*", "support-bot", True),
        ("support-*", "ops-bot", False),
        ("support-*", "ex-support-bot", False),
        ("*-bot", "ops-bot", True),
        ("bot?", "bot1", True),
        ("bot?", "bot12", False),
    ],
)
def test_agent_globs(agent_glob: str, agent: str, matches: bool) -> None:
    effect = _decide({"agent": agent_glob, "effect": "allow"}, _call(agent=agent))
    assert (effect is ALLOW) == matches


@pytest.mark.parametrize(
    ("tool_glob", "tool", "matches"),
    [
        ("notes.write_note", "notes.write_note", True),
        ("notes.write_note", "notes.write_notes", False),
        ("notes.*", "notes.write_note", True),
        ("notes.*", "notesx.write_note", False),
        ("notes.*", "old-notes.write_note", False),
        ("*.write_*", "notes.write_note", True),
        ("notes.*", "Notes.write_note", False),
    ],
)
def test_tool_globs_are_case_sensitive_fnmatch(tool_glob: str, tool: str, matches: bool) -> None:
    assert (_decide({"tool": tool_glob, "effect": "allow"}, _call(tool)) is ALLOW) == matches


def test_an_agent_specific_rule_says_which_agent() -> None:
    policy = _policy({"id": "r1", "agent": "ops-*", "effect": "allow"})
    assert policy.evaluate(_call(agent="ops-7")).explanation == (
        "rule r1 allows notes.write_note for agent ops-7"
    )


# Argument conditions.


@pytest.mark.parametrize(
    ("condition", "value", "holds"),
    [
        ({"eq": "ro"}, "ro", True),
        ({"eq": "ro"}, "rw", False),
        ({"eq": 1}, 1.0, True),
        ({"eq": None}, None, True),
        ({"eq": None}, 0, False),
        ({"eq": ["a", "b"]}, ["a", "b"], True),
        ({"ne": "ro"}, "rw", True),
        ({"ne": "ro"}, "ro", False),
        ({"glob": "/etc/*"}, "/etc/passwd", True),
        ({"glob": "/etc/*"}, "/home/etc/x", False),
        ({"glob": "*.PEM"}, "key.pem", False),
        ({"glob": "1*"}, 12, False),
        ({"regex": "pass"}, "my password", True),
        ({"regex": "^pass"}, "my password", False),
        ({"regex": "(?i)PASS"}, "password", True),
        ({"regex": "1"}, 1, False),
        ({"gt": 100}, 101, True),
        ({"gt": 100}, 100, False),
        ({"gte": 100}, 100, True),
        ({"lt": 0.5}, 0.25, True),
        ({"lt": 0.5}, 0.5, False),
        ({"lte": 0.5}, 0.5, True),
        ({"gt": 0}, True, False),
        ({"lt": 10}, "5", False),
        ({"lt": 10}, None, False),
        ({"gte": 1, "lt": 10}, 5, True),
        ({"gte": 1, "lt": 10}, 10, False),
        ({"glob": "/etc/*", "ne": "/etc/hosts"}, "/etc/hosts", False),
    ],
)
def test_argument_conditions(condition: dict[str, Any], value: Any, holds: bool) -> None:
    assert _matches({"args": {"x": condition}}, _call(x=value)) == holds


@pytest.mark.parametrize(
    "condition", [{"eq": None}, {"ne": "anything"}, {"glob": "*"}, {"regex": ""}, {"lt": 1e9}]
)
def test_a_missing_argument_fails_every_condition(condition: dict[str, Any]) -> None:
    assert not _matches({"args": {"x": condition}}, _call(y="present"))


# Failing closed: the model chooses the arguments, so a deny or approval rule must not be
# stepped around by a value its condition cannot read.

TYPED_DENY = (
    {"id": "allow", "tool": "notes.*", "effect": "allow"},
    {"id": "big", "tool": "notes.add", "when": {"args": {"a": {"gt": 100}}}, "effect": "deny"},
)


@pytest.mark.parametrize("a", ["1000", "5", None, [1000], {"n": 1000}, True])
def test_a_deny_rule_applies_to_an_argument_of_another_type(a: Any) -> None:
    decision = _policy(*TYPED_DENY).evaluate(_call("notes.add", a=a, b=1))
    assert (decision.effect, decision.rule) == (DENY, "big")
    assert decision.explanation == (
        "rule big denies notes.add: argument a is not a number, "
        "so 'argument a > 100' fails closed and the rule applies (deny wins over allow's allow)"
    )


def test_a_deny_rule_applies_when_its_argument_is_missing() -> None:
    decision = _policy(*TYPED_DENY).evaluate(_call("notes.add", b=1))
    assert (decision.effect, decision.rule) == (DENY, "big")
    assert "argument a is missing" in decision.explanation


def test_a_deny_rule_still_decides_on_values_it_can_read() -> None:
    policy = _policy(*TYPED_DENY)
    assert policy.evaluate(_call("notes.add", a=1000, b=1)).rule == "big"
    assert policy.evaluate(_call("notes.add", a=7, b=1)).rule == "allow"


def test_an_approval_rule_fails_closed_too() -> None:
    policy = _policy(
        {"id": "allow", "tool": "*", "effect": "allow"},
        {
            "id": "etc",
            "tool": "files.write",
            "effect": "require_approval",
            "when": {"args": {"path": {"glob": "/etc/*"}}},
        },
    )
    assert policy.evaluate(_call("files.write", path=["/etc/passwd"])).effect is APPROVAL
    assert policy.evaluate(_call("files.write", path="/tmp/x")).effect is ALLOW


def test_an_allow_rule_does_not_apply_to_an_argument_it_cannot_read() -> None:
    policy = _policy({"id": "small", "effect": "allow", "when": {"args": {"a": {"lt": 10}}}})
    assert policy.evaluate(_call(a="5")).effect is DENY
    assert policy.evaluate(_call(a=5)).effect is ALLOW


def test_a_string_too_long_to_read_fails_closed() -> None:
    policy = _policy(
        {"id": "allow", "tool": "*", "effect": "allow"},
        {"id": "secret", "effect": "deny", "when": {"args": {"text": {"regex": "password"}}}},
    )
    padded = "x" * MAX_MATCHED_CHARS + " password"
    decision = policy.evaluate(_call(text=padded))
    assert (decision.effect, decision.rule) == (DENY, "secret")
    assert "password" not in decision.explanation.split("'")[0]
    assert policy.evaluate(_call(text="x" * MAX_MATCHED_CHARS)).effect is ALLOW


def test_a_regex_that_backtracks_in_re_is_linear_here() -> None:
    """`^(a+)+$` on 26 a's and a `!` took 2.7 s on `re`, doubling per character; on 60 it
    would take days. Here it is decided at once (the test's timeout is the bound)."""
    policy = _policy(
        {"id": "allow", "tool": "*", "effect": "allow"},
        {"id": "redos", "effect": "deny", "when": {"args": {"text": {"regex": "^(a+)+$"}}}},
    )
    assert policy.evaluate(_call(text="a" * 60 + "!")).effect is ALLOW
    assert policy.evaluate(_call(text="a" * 60)).effect is DENY


def test_every_argument_condition_of_a_rule_must_hold() -> None:
    when = {"args": {"path": {"glob": "/etc/*"}, "mode": {"eq": "w"}}}
    assert _matches(when, _call(path="/etc/x", mode="w"))
    assert not _matches(when, _call(path="/etc/x", mode="r"))
    assert not _matches(when, _call(path="/tmp/x", mode="w"))


def test_numeric_conditions_read_as_written() -> None:
    policy = _policy(
        {"id": "big", "effect": "deny", "when": {"args": {"amount": {"gt": 100, "lte": 2.5e3}}}}
    )
    assert policy.evaluate(_call(amount=150)).explanation == (
        "rule big denies notes.write_note: argument amount > 100 and <= 2500"
    )


# Counters.


def test_calls_in_run_limits_how_often_a_tool_is_used() -> None:
    policy = _policy(
        {"id": "ok", "tool": "search.web", "effect": "allow"},
        {
            "id": "enough",
            "tool": "search.web",
            "effect": "deny",
            "when": {"calls_in_run": {"gt": 5}},
        },
    )
    assert policy.evaluate(_call("search.web", calls_in_run=5)).effect is ALLOW
    decision = policy.evaluate(_call("search.web", calls_in_run=6))
    assert (decision.effect, decision.rule) == (DENY, "enough")
    assert decision.explanation == (
        "rule enough denies search.web: calls_in_run is 6 (> 5) (deny wins over ok's allow)"
    )


def test_identical_in_a_row_guards_against_loops() -> None:
    policy = _policy(
        {"id": "ok", "effect": "allow"},
        {"id": "loop", "effect": "deny", "when": {"identical_in_a_row": {"gte": 3}}},
    )
    assert policy.evaluate(_call(calls_in_run=9, identical_in_a_row=2)).effect is ALLOW
    decision = policy.evaluate(_call(calls_in_run=9, identical_in_a_row=3))
    assert (decision.effect, decision.rule) == (DENY, "loop")
    assert "identical_in_a_row is 3 (>= 3)" in decision.explanation


@pytest.mark.parametrize(
    ("condition", "count", "holds"),
    [
        ({"eq": 2}, 2, True),
        ({"eq": 2}, 3, False),
        ({"lt": 3}, 2, True),
        ({"lte": 3}, 3, True),
        ({"gte": 2, "lte": 4}, 5, False),
    ],
)
def test_count_conditions(condition: dict[str, int], count: int, holds: bool) -> None:
    assert _matches({"calls_in_run": condition}, _call(calls_in_run=count)) == holds


# Properties of precedence, over generated rule lists and calls.

_AGENTS = ["ops", "ops-2", "support"]
_TOOLS = ["fs.read", "fs.write", "time.now"]
_WHEN: list[dict[str, Any] | None] = [
    None,
    {"args": {"n": {"gt": 1}}},
    {"args": {"n": {"gte": 0, "lt": 3}}},
    {"args": {"s": {"eq": "a"}}},
    {"args": {"s": {"ne": "a"}}},
    {"args": {"s": {"glob": "a*"}}},
    {"args": {"s": {"regex": "b$"}}},
    {"calls_in_run": {"gt": 2}},
    {"identical_in_a_row": {"gte": 2}},
    {"args": {"n": {"lte": 2}, "s": {"ne": "b"}}, "calls_in_run": {"lte": 3}},
]
_SEVERITY = {ALLOW: 0, APPROVAL: 1, DENY: 2}


@st.composite
def _rule(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "agent": draw(st.sampled_from(["*", "ops", "ops*", "support", "*-2"])),
        "tool": draw(st.sampled_from(["*", "fs.*", "fs.read", "fs.write", "time.now", "*.write"])),
        "when": draw(st.sampled_from(_WHEN)),
        "effect": draw(st.sampled_from(Effect)),
    }


def _numbered(specs: list[dict[str, Any]]) -> list[PolicyRule]:
    return [PolicyRule.model_validate({"id": f"r{i}", **spec}) for i, spec in enumerate(specs)]


_rule_lists = st.lists(_rule(), max_size=8).map(_numbered)
_calls = st.lists(
    st.builds(
        ToolCall,
        agent=st.sampled_from(_AGENTS),
        tool=st.sampled_from(_TOOLS),
        arguments=st.fixed_dictionaries(
            {},
            optional={
                "n": st.one_of(st.integers(-1, 4), st.sampled_from([0.5, 2.5, True, "2"])),
                "s": st.sampled_from(["a", "ab", "b", "", "A", 1]),
            },
        ),
        calls_in_run=st.integers(1, 5),
        identical_in_a_row=st.integers(1, 5),
    ),
    min_size=1,
    max_size=8,
)
_fast = settings(max_examples=150, deadline=None)


def _with(
    rules: list[PolicyRule], effect: Effect, spec: dict[str, Any], where: int
) -> CompiledPolicy:
    added = PolicyRule.model_validate({**spec, "id": "added", "effect": effect})
    at = where % (len(rules) + 1)
    return CompiledPolicy([*rules[:at], added, *rules[at:]], 1)


@_fast
@given(_rule_lists, _rule(), st.integers(0, 8), _calls)
def test_adding_a_deny_rule_never_loosens_a_decision(
    rules: list[PolicyRule], spec: dict[str, Any], where: int, calls: list[ToolCall]
) -> None:
    before, after = CompiledPolicy(rules, 1), _with(rules, DENY, spec, where)
    for call in calls:
        old, new = before.evaluate(call).effect, after.evaluate(call).effect
        assert new in (old, DENY)
        assert _SEVERITY[new] >= _SEVERITY[old]


@_fast
@given(_rule_lists, _rule(), st.integers(0, 8), _calls)
def test_adding_an_allow_rule_only_ever_changes_a_default_deny(
    rules: list[PolicyRule], spec: dict[str, Any], where: int, calls: list[ToolCall]
) -> None:
    """An allow rule cannot override any rule; it can only cover what nothing covered."""
    before, after = CompiledPolicy(rules, 1), _with(rules, ALLOW, spec, where)
    for call in calls:
        old, new = before.evaluate(call), after.evaluate(call)
        if old.rule is None:
            assert new.effect in (DENY, ALLOW)
        else:
            assert new.effect is old.effect


@_fast
@given(_rule_lists, _rule(), st.integers(0, 8), _calls)
def test_adding_an_approval_rule_never_allows_and_never_lifts_a_deny_rule(
    rules: list[PolicyRule], spec: dict[str, Any], where: int, calls: list[ToolCall]
) -> None:
    before, after = CompiledPolicy(rules, 1), _with(rules, APPROVAL, spec, where)
    for call in calls:
        old, new = before.evaluate(call), after.evaluate(call)
        if old.effect is ALLOW:
            assert new.effect in (ALLOW, APPROVAL)
        elif old.rule is None:
            assert new.effect in (DENY, APPROVAL)
        else:
            assert new.effect is old.effect


@_fast
@given(_rule_lists.flatmap(lambda rules: st.tuples(st.just(rules), st.permutations(rules))), _calls)
def test_rule_order_changes_only_which_rule_is_named(
    lists: tuple[list[PolicyRule], list[PolicyRule]], calls: list[ToolCall]
) -> None:
    rules, shuffled = lists
    original, reordered = CompiledPolicy(rules, 1), CompiledPolicy(shuffled, 1)
    alone = {rule.id: CompiledPolicy([rule], 1) for rule in rules}
    for call in calls:
        decision = reordered.evaluate(call)
        assert decision.effect is original.evaluate(call).effect
        matching = [rule.id for rule in shuffled if alone[rule.id].evaluate(call).rule]
        named = [r.id for r in shuffled if r.id in matching and r.effect is decision.effect]
        assert decision.rule == (named[0] if named else None)

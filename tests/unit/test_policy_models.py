from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from services.contract.policy import EvaluateRequest, PolicyRule, PolicySet


def _rejection(rules: list[dict[str, Any]]) -> tuple[tuple[int | str, ...], str]:
    with pytest.raises(ValidationError) as caught:
        PolicySet.model_validate({"rules": rules})
    [error] = caught.value.errors()
    return error["loc"], error["msg"]


def test_a_regex_that_does_not_compile_is_refused_at_its_field() -> None:
    loc, msg = _rejection(
        [{"id": "r1", "effect": "deny", "when": {"args": {"text": {"regex": "(unclosed"}}}}]
    )
    assert loc == ("rules", 0, "when", "args", "text", "regex")
    assert "not a regular expression RE2 can run" in msg


@pytest.mark.parametrize("regex", [r"(a)\1", "(?=a)b", "a(?!b)", "(?<=a)b"])
def test_a_regex_that_needs_backtracking_is_refused(regex: str) -> None:
    loc, msg = _rejection(
        [{"id": "r1", "effect": "deny", "when": {"args": {"text": {"regex": regex}}}}]
    )
    assert loc == ("rules", 0, "when", "args", "text", "regex")
    assert "linear time" in msg


def test_an_overlong_regex_is_refused() -> None:
    loc, _ = _rejection(
        [{"id": "r1", "effect": "deny", "when": {"args": {"text": {"regex": "a" * 501}}}}]
    )
    assert loc[-1] == "regex"


def test_a_duplicate_rule_id_is_named() -> None:
    _, msg = _rejection(
        [
            {"id": "r1", "effect": "allow"},
            {"id": "r2", "effect": "allow"},
            {"id": "r1", "effect": "deny"},
        ]
    )
    assert "rules[2].id 'r1' is used twice (first by rules[0])" in msg


def test_an_unknown_field_is_refused_not_ignored() -> None:
    loc, _ = _rejection([{"id": "r1", "effect": "deny", "when": {"arg": {}}}])
    assert loc == ("rules", 0, "when", "arg")


def test_a_misspelt_test_inside_a_condition_is_refused() -> None:
    loc, _ = _rejection([{"id": "r1", "effect": "deny", "when": {"args": {"x": {"equals": 1}}}}])
    assert loc == ("rules", 0, "when", "args", "x", "equals")


def test_an_empty_argument_condition_is_refused() -> None:
    loc, msg = _rejection([{"id": "r1", "effect": "deny", "when": {"args": {"x": {}}}}])
    assert loc == ("rules", 0, "when", "args", "x")
    assert "at least one of eq, ne, glob, regex" in msg


def test_an_argument_condition_of_only_nulls_is_empty() -> None:
    loc, _ = _rejection([{"id": "r1", "effect": "deny", "when": {"args": {"x": {"gt": None}}}}])
    assert loc == ("rules", 0, "when", "args", "x")


def test_an_empty_count_condition_is_refused() -> None:
    loc, msg = _rejection([{"id": "r1", "effect": "deny", "when": {"calls_in_run": {}}}])
    assert loc == ("rules", 0, "when", "calls_in_run")
    assert "at least one of gt, gte, lt, lte, eq" in msg


def test_approval_ttl_on_an_allow_rule_is_refused() -> None:
    loc, msg = _rejection([{"id": "r1", "effect": "allow", "approval_ttl_seconds": 60}])
    assert loc == ("rules", 0)
    assert "approval_ttl_seconds only applies to require_approval rules" in msg


def test_approval_ttl_is_bounded_to_thirty_days() -> None:
    loc, _ = _rejection(
        [{"id": "r1", "effect": "require_approval", "approval_ttl_seconds": 31 * 86400}]
    )
    assert loc == ("rules", 0, "approval_ttl_seconds")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", "has space"),
        ("id", "x" * 65),
        ("tool", "write_note"),
        ("tool", "notes.[wr]ite"),
        ("agent", "Support-Bot"),
        ("effect", "maybe"),
    ],
)
def test_malformed_rule_fields_are_named(field: str, value: str) -> None:
    loc, _ = _rejection([{"id": "r1", "effect": "deny", field: value}])
    assert loc == ("rules", 0, field)


def test_infinite_bounds_are_refused() -> None:
    loc, _ = _rejection(
        [{"id": "r1", "effect": "deny", "when": {"args": {"n": {"gt": float("inf")}}}}]
    )
    assert loc == ("rules", 0, "when", "args", "n", "gt")


def test_a_policy_set_is_capped_at_2000_rules() -> None:
    loc, _ = _rejection([{"id": f"r{i}", "effect": "allow"} for i in range(2001)])
    assert loc == ("rules",)


def test_a_rule_reads_back_as_it_was_written() -> None:
    """The gateway stores rules as JSON; what it reads back must mean the same thing,
    including `eq: null`, which is a test and not an absence."""
    written = {
        "id": "r1",
        "tool": "fs.*",
        "effect": "require_approval",
        "approval_ttl_seconds": 600,
        "when": {
            "args": {"owner": {"eq": None}, "path": {"glob": "/etc/*", "ne": "/etc/hosts"}},
            "identical_in_a_row": {"gte": 3},
        },
    }
    rule = PolicyRule.model_validate(written)
    for dumped in (rule.model_dump(mode="json"), rule.model_dump(mode="json", exclude_none=True)):
        assert PolicyRule.model_validate(dumped) == rule
    assert rule.model_dump(mode="json", exclude_none=True)["when"]["args"] == {
        "owner": {"eq": None},
        "path": {"ne": "/etc/hosts", "glob": "/etc/*"},
    }


def test_an_evaluate_request_defaults_to_a_first_call() -> None:
    request = EvaluateRequest(agent="bot", tool="time.now")
    assert (request.arguments, request.calls_in_run, request.identical_in_a_row) == ({}, 1, 1)


def test_an_evaluate_request_cannot_repeat_more_calls_than_it_made() -> None:
    with pytest.raises(ValidationError, match="identical_in_a_row"):
        EvaluateRequest(agent="bot", tool="time.now", calls_in_run=2, identical_in_a_row=3)


def test_an_evaluate_request_refuses_unknown_fields() -> None:
    with pytest.raises(ValidationError, match="argument"):
        EvaluateRequest.model_validate({"agent": "bot", "tool": "time.now", "argument": {}})

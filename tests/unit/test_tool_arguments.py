"""A call's arguments are checked against the tool's declared input schema before policy
sees them: strictly, with undeclared properties dropped, refused with a reason that
names where and why but never a value."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.worker.tool_arguments import ArgumentSchema

ADD = {
    "properties": {"a": {"title": "A", "type": "integer"}, "b": {"title": "B", "type": "integer"}},
    "required": ["a", "b"],
    "title": "addArguments",
    "type": "object",
}
SECRET = "hunter2-s3cr3t"


def _check(schema: dict[str, Any] | None, arguments: Any) -> tuple[dict[str, Any], str | None]:
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    checked = ArgumentSchema(schema).check(raw)
    return checked.arguments, checked.refusal


def test_arguments_that_fit_pass_as_they_are() -> None:
    assert _check(ADD, {"a": 1000, "b": 1}) == ({"a": 1000, "b": 1}, None)


@pytest.mark.parametrize("a", ["1000", 1000.5, True, None, [1000]])
def test_a_value_of_another_type_is_refused_not_coerced(a: Any) -> None:
    """What a lenient server would read as 1000 is not an integer to policy either."""
    arguments, refusal = _check(ADD, {"a": a, "b": 1})
    assert refusal is not None
    assert refusal.startswith("$.a: expected integer, got ")
    assert arguments == {"a": a, "b": 1}  # what the model sent, for the step record


def test_properties_the_schema_does_not_declare_are_dropped() -> None:
    assert _check(ADD, {"b": 2, "a": 1, "nonce": "x1", "again": [1]}) == ({"a": 1, "b": 2}, None)


def test_a_schema_that_forbids_other_properties_refuses_them_by_name() -> None:
    arguments, refusal = _check(
        {**ADD, "additionalProperties": False}, {"a": 1, "b": 2, "nonce": SECRET}
    )
    assert refusal == "$: properties the schema does not declare are not allowed ('nonce')"
    assert arguments == {"a": 1, "b": 2, "nonce": SECRET}


@pytest.mark.parametrize(
    "schema",
    [
        {**ADD, "additionalProperties": True},
        {**ADD, "additionalProperties": {"type": "string"}},
        {**ADD, "patternProperties": {"^no": {"type": "string"}}},
        {"type": "object"},
        {},
    ],
    ids=[
        "additionalProperties true",
        "additionalProperties schema",
        "patternProperties",
        "no properties",
        "empty",
    ],
)
def test_properties_the_schema_accepts_otherwise_are_kept(schema: dict[str, Any]) -> None:
    assert _check(schema, {"a": 1, "b": 2, "nonce": "x1"}) == (
        {"a": 1, "b": 2, "nonce": "x1"},
        None,
    )


def test_declared_other_properties_are_validated_too() -> None:
    schema = {**ADD, "additionalProperties": {"type": "string"}}
    assert (
        _check(schema, {"a": 1, "b": 2, "nonce": 5})[1] == "$.nonce: expected string, got integer"
    )


def test_a_missing_required_property_is_named() -> None:
    assert _check(ADD, {"a": 1})[1] == "$: missing required property 'b'"


def test_a_nested_failure_names_its_path() -> None:
    schema = {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "items": {"type": "object", "properties": {"qty": {"type": ["integer", "null"]}}},
            }
        },
    }
    refusal = _check(schema, {"items": [{"qty": 1}, {"qty": "2"}]})[1]
    assert refusal == "$.items[1].qty: expected integer or null, got string"


@pytest.mark.parametrize(
    "prop",
    [
        {"type": "integer"},
        {"enum": ["a", "b"]},
        {"const": "x"},
        {"type": "string", "maxLength": 3},
        {"type": "string", "pattern": "^[0-9]+$"},
        {"not": {"type": "string"}},
        False,
    ],
)
def test_a_refusal_never_repeats_the_value(prop: Any) -> None:
    """Arguments may carry secrets; the reason is stored and shown to people and models."""
    refusal = _check({"type": "object", "properties": {"token": prop}}, {"token": SECRET})[1]
    assert refusal is not None
    assert SECRET not in refusal


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("not json", "the arguments are not valid JSON"),
        ('{"a": 1', "the arguments are not valid JSON"),
        ('{"a": NaN, "b": 1}', "the arguments are not valid JSON"),
        ('{"a": Infinity, "b": 1}', "the arguments are not valid JSON"),
        ('{"a": "\\ud800", "b": 1}', "the arguments are not valid JSON"),
        ("[" * 100_000, "the arguments are not valid JSON"),
        ("[1, 2]", "the arguments are not a JSON object (got array)"),
        ('"a string"', "the arguments are not a JSON object (got string)"),
    ],
    ids=["text", "truncated", "NaN", "Infinity", "lone surrogate", "deep", "array", "string"],
)
def test_arguments_that_are_not_a_json_object_are_refused(raw: str, reason: str) -> None:
    arguments, refusal = _check(ADD, raw)
    assert refusal == reason
    assert arguments == {"raw_arguments": raw[:2000]}


def test_the_text_recorded_for_arguments_that_are_not_json_is_bounded() -> None:
    arguments, _ = _check(ADD, "x" * 100_000)
    assert arguments == {"raw_arguments": "x" * 2000}


def test_the_draft_the_schema_declares_is_the_one_applied() -> None:
    """Draft 4 counts `1.0` as a number only; later drafts count it as an integer."""
    properties = {"a": {"type": "integer"}}
    draft4 = {"$schema": "http://json-schema.org/draft-04/schema#", "properties": properties}
    assert _check(draft4, '{"a": 1.0}')[1] == "$.a: expected integer, got number"
    assert _check({"properties": properties}, '{"a": 1.0}')[1] is None


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "nope"},
        {"properties": "a"},
        {"properties": {"a": {"pattern": "["}}},
        {"$schema": 4},
        {
            "$schema": "http://json-schema.org/draft-04/schema#",
            "properties": {},
            "patternProperties": {"[": {}},
        },
    ],
)
def test_a_tool_with_a_broken_schema_is_refused_not_a_crash(schema: dict[str, Any]) -> None:
    arguments, refusal = _check(schema, {"a": 1})
    assert arguments == {"a": 1}
    assert refusal is not None
    assert refusal.startswith("the tool's input schema is not valid JSON Schema")


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "#/$defs/nowhere"},
        {"$ref": "#"},
        {"properties": {"a": {"$ref": "http://127.0.0.1:9/never-fetched.json"}}},
    ],
    ids=["dangling", "itself", "remote"],
)
def test_a_schema_whose_references_cannot_be_followed_refuses_the_call(
    schema: dict[str, Any],
) -> None:
    assert _check(schema, {"a": 1})[1] == "the tool's input schema cannot be resolved"


def test_references_within_the_schema_are_followed() -> None:
    schema = {
        "$defs": {"Qty": {"type": "integer", "minimum": 1}},
        "properties": {"qty": {"$ref": "#/$defs/Qty"}},
        "required": ["qty"],
    }
    assert _check(schema, {"qty": 2, "extra": 1}) == ({"qty": 2}, None)
    assert _check(schema, {"qty": 0})[1] == "$.qty: does not satisfy the schema's 'minimum'"


def test_a_tool_no_server_declared_asks_only_for_an_object() -> None:
    assert _check(None, {"anything": [1]}) == ({"anything": [1]}, None)
    assert _check(None, "[]")[1] == "the arguments are not a JSON object (got array)"

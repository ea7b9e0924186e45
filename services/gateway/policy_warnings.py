"""Argument conditions that cannot hold, judged by the tools' declared input schemas.

A rule is valid on its own, but a `gt` on an argument the tool declares as a string, a
`regex` on an integer, or a test of an argument the tool does not take can never hold
for a call that tool accepts. The evaluator then fails closed (a `deny` or
`require_approval` rule applies to every call, an `allow` rule to none), which is safe
but rarely what the author meant, so `PUT /v1/policies` says so in its answer. Only
tools some worker reports are known; a rule whose tool glob covers none of them gets no
warning, and a glob covering several is warned about only when the condition can hold
for none of them. Schemas this does not understand (no `properties`, no `type`, a
`$ref`) are taken to admit anything: a warning must be certain, not a guess.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any

from services.contract.policy import ArgCondition, Effect, PolicyRule

_STRINGS = frozenset({"string"})
_NUMBERS = frozenset({"number", "integer"})
_READS = {"glob": _STRINGS, "regex": _STRINGS} | dict.fromkeys(("gt", "gte", "lt", "lte"), _NUMBERS)
_FAILS_CLOSED = frozenset({Effect.DENY, Effect.REQUIRE_APPROVAL})
_NAMED_TOOLS = 3


def type_warnings(
    rules: Sequence[PolicyRule], schemas: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """One sentence per argument condition that no covered tool's schema lets hold;
    `schemas` maps known `<server>.<tool>` names to their inputSchema."""
    warnings = []
    for index, rule in enumerate(rules):
        if rule.when is None or not rule.when.args:
            continue
        covered = sorted(name for name in schemas if fnmatchcase(name, rule.tool))
        if not covered:
            continue
        for argument, condition in rule.when.args.items():
            found = [_impossible(schemas[tool], argument, condition) for tool in covered]
            reasons = [reason for reason in found if reason is not None]
            if len(reasons) < len(covered):
                continue
            because = [f"{t} {text}" for t, (text, _) in zip(covered, reasons, strict=True)]
            if len(because) > _NAMED_TOOLS:
                because[_NAMED_TOOLS:] = [f"and {len(because) - _NAMED_TOOLS} more tools"]
            warnings.append(
                f"rules[{index}] ({rule.id}): no call the tool accepts can meet the condition "
                f"on argument {argument} ({'; '.join(because)}); {_outcome(rule, reasons)}"
            )
    return warnings


def _outcome(rule: PolicyRule, reasons: list[tuple[str, bool]]) -> str:
    unread = {fails_closed for _, fails_closed in reasons}
    if unread == {True} and rule.effect in _FAILS_CLOSED:
        return "it fails closed, so the rule applies whatever the value"
    if unread == {True} or unread == {False}:
        return "the rule never applies"
    return "the rule does not test what it says"


def _impossible(
    schema: Mapping[str, Any], argument: str, condition: ArgCondition
) -> tuple[str, bool] | None:
    """Why `condition` cannot hold for any value this schema admits, and whether the
    evaluator then fails closed (the value is missing or not of a type the test reads)
    rather than compares and finds it unequal; None if it can hold."""
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return None
    if argument not in properties:
        return f"declares no argument {argument}", True
    declared = _types(properties[argument])
    if declared is None:
        return None
    shown = " or ".join(sorted(declared))
    for test, operand in condition.given().items():
        if test in _READS and not _READS[test] & declared:
            return f"declares {argument} as {shown}, which '{test}' does not read", True
        if test == "eq" and not _types_of(operand) & declared:
            return f"declares {argument} as {shown}, which never equals {operand!r}", False
    return None


def _types(schema: Any) -> frozenset[str] | None:
    """The JSON types a property schema admits, or None when it does not say plainly."""
    if not isinstance(schema, Mapping):
        return None
    declared = schema.get("type")
    if isinstance(declared, str):
        return frozenset({declared})
    if isinstance(declared, list) and all(isinstance(t, str) for t in declared):
        return frozenset(declared)
    if "type" not in schema:
        branches = schema.get("anyOf", schema.get("oneOf"))
        if isinstance(branches, list) and branches:
            found = [_types(branch) for branch in branches]
            if all(t is not None for t in found):
                return frozenset().union(*(t for t in found if t is not None))
    return None


def _types_of(value: Any) -> frozenset[str]:
    """The JSON types a schema may give a value `==` to this one."""
    match value:
        case None:
            return frozenset({"null"})
        case bool():
            return frozenset({"boolean"})
        case int():
            return _NUMBERS
        case float():
            return _NUMBERS if value.is_integer() else frozenset({"number"})
        case str():
            return _STRINGS
        case list():
            return frozenset({"array"})
        case _:
            return frozenset({"object"})

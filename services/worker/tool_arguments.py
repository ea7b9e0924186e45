"""A tool call's arguments, checked against the tool's declared MCP `inputSchema` before
the gateway's policy sees them, so policy decides on the values the tool will receive.

The model writes the arguments, and MCP servers are lenient readers: one that coerces
`"1000"` to 1000 computes with a value that a `gt` rule never compared. So validation is
strict (JSON Schema's own types, no coercion), by the maintained `jsonschema` validator
for the draft the schema declares, and arguments that fail it never reach the server.
Top-level properties the schema does not declare are dropped first (the server would
ignore them, and an ignored extra argument must not make a repeated call look new to
the loop guard); when the schema says `additionalProperties: false` they make the call
invalid instead.

A refusal names where the arguments fail and what was expected, never the values: they
may be secrets, and the reason is stored and shown to people.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import jsonschema
import referencing.exceptions
from jsonschema.exceptions import ValidationError, best_match
from jsonschema.validators import validator_for

MAX_REASON_CHARS = 500
MAX_RAW_RECORDED = 2000  # of an argument text that is not a JSON object
_NAMED_AT_MOST = 5  # undeclared properties named in a refusal

_JSON_TYPES: dict[type, str] = {
    dict: "object",
    list: "array",
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    type(None): "null",
}


@dataclass(frozen=True)
class CheckedArguments:
    """`arguments`: normalised when `refusal` is None, else what the model sent (an
    object as sent, any other text bounded under `raw_arguments`) so the step record
    stays truthful. `refusal`: why the call may not be made."""

    arguments: dict[str, Any]
    refusal: str | None = None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse(raw: str) -> dict[str, Any] | str:
    """The arguments as an object, or why they are not one. NaN and Infinity are refused
    (they are not JSON, and the gateway refuses them)."""
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
        json.dumps(value, ensure_ascii=False).encode()  # lone surrogates cannot be sent
    except (ValueError, RecursionError, UnicodeEncodeError):
        return "the arguments are not valid JSON"
    if not isinstance(value, dict):
        return f"the arguments are not a JSON object (got {_json_type(value)})"
    return value


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _path(error: ValidationError) -> str:
    path = "$"
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else f".{str(part)[:40]}"
    return path[:200]


def _reason(error: ValidationError) -> str:
    """What is wrong where, from the schema's side only (never the instance's values)."""
    where = _path(error)
    keyword = error.validator
    if keyword == "type":
        expected = error.validator_value
        wanted = " or ".join(expected) if isinstance(expected, list) else str(expected)
        return f"{where}: expected {wanted}, got {_json_type(error.instance)}"
    if keyword == "required" and isinstance(error.instance, dict):
        missing = [name for name in error.validator_value if name not in error.instance]
        return f"{where}: missing required property {', '.join(map(repr, missing))}"
    if keyword == "additionalProperties" and isinstance(error.instance, dict):
        declared = _Declared(error.schema)
        extra = sorted(name for name in error.instance if not declared.names(name))
        named = ", ".join(repr(name[:40]) for name in extra[:_NAMED_AT_MOST])
        return f"{where}: properties the schema does not declare are not allowed ({named})"
    if keyword is None:  # a `false` subschema
        return f"{where}: not allowed by the schema"
    return f"{where}: does not satisfy the schema's {keyword!r}"


class _Declared:
    """Which top-level property names an object schema declares."""

    def __init__(self, schema: Any) -> None:
        schema = schema if isinstance(schema, dict) else {}
        properties = schema.get("properties")
        self._properties = properties if isinstance(properties, dict) else {}
        patterns = schema.get("patternProperties")
        self._patterns = [re.compile(p) for p in patterns] if isinstance(patterns, dict) else []

    def names(self, name: str) -> bool:
        return name in self._properties or any(p.search(name) for p in self._patterns)


def _validator(schema: dict[str, Any]) -> Any:
    """The maintained validator for the draft `schema` declares (the latest if none),
    once the schema itself is valid; a broken schema raises `BrokenSchema`."""
    declared_draft = schema.get("$schema", "")
    if not isinstance(declared_draft, str):
        raise BrokenSchema("$schema")
    cls = validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise BrokenSchema(str(exc.validator)) from exc
    return cls(schema)


class BrokenSchema(Exception):
    """The tool declared an input schema that is not valid JSON Schema."""


class ArgumentSchema:
    """A tool's `inputSchema`, checked once, against which each call's arguments are
    checked. `None` (a tool no server declared) asks only for a JSON object."""

    def __init__(self, schema: dict[str, Any] | None) -> None:
        self._broken: str | None = None
        self._validator: Any = None
        self._declared: _Declared | None = None
        if schema is None:
            return
        try:
            self._validator = _validator(schema)
            if isinstance(schema.get("properties"), dict) and "additionalProperties" not in schema:
                # Without `additionalProperties` the schema neither declares nor forbids
                # other properties: the tool ignores them, so policy must too. (False
                # refuses them in validation; true or a schema declares them.)
                self._declared = _Declared(schema)
        except (BrokenSchema, re.error) as exc:
            keyword = exc.args[0] if isinstance(exc, BrokenSchema) else "patternProperties"
            self._broken = f"the tool's input schema is not valid JSON Schema ({keyword!r})"

    def check(self, raw: str) -> CheckedArguments:
        """The model's argument text, normalised, or refused with the reason."""
        parsed = _parse(raw)
        if isinstance(parsed, str):
            text = raw[:MAX_RAW_RECORDED].encode("utf-8", "backslashreplace").decode()
            return CheckedArguments({"raw_arguments": text}, parsed)
        if self._broken is not None:
            return CheckedArguments(parsed, self._broken)
        if self._validator is None:
            return CheckedArguments(parsed)
        declared = self._declared
        normalised = (
            parsed
            if declared is None
            else {name: value for name, value in parsed.items() if declared.names(name)}
        )
        try:
            error = best_match(self._validator.iter_errors(normalised))
        except (referencing.exceptions.Unresolvable, RecursionError, re.error):
            # A `$ref` to nowhere (remote ones are never fetched) or to itself.
            return CheckedArguments(parsed, "the tool's input schema cannot be resolved")
        if error is None:
            return CheckedArguments(normalised)
        return CheckedArguments(parsed, _reason(error)[:MAX_REASON_CHARS])

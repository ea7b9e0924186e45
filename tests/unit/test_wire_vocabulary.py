"""Error codes and live-event names are spelled once, in `services/contract/`: a code
typed as a literal somewhere else is one typo away from a code no client knows.

Checked from the source, as the layering is: a `code=` argument, an `error_response`
code, an `Event(...)` name or a comparison of an event's `name` that is a string literal
outside the contract fails here. (The SQL triggers' payloads are held to the contract by
`tests/integration/test_events_stream.py`.)"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from services.contract.events import EventName

ROOT = Path(__file__).resolve().parents[2]
EVENT_NAMES = {name.value for name in EventName}


def _literal(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _called(node: ast.Call) -> str:
    func = node.func
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")


def spelled_out(source: str) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.keyword) and node.arg == "code" and _literal(node.value):
            yield node.value.lineno, f"code={_literal(node.value)!r}"
        elif isinstance(node, ast.Call) and node.args:
            name = _called(node)
            if name == "error_response" and len(node.args) > 1 and _literal(node.args[1]):
                yield node.lineno, f"error_response(..., {_literal(node.args[1])!r})"
            elif name in ("Event", "LiveEvent") and _literal(node.args[0]) in EVENT_NAMES:
                yield node.lineno, f"{name}({_literal(node.args[0])!r})"
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            names = any(isinstance(side, ast.Attribute) and side.attr == "name" for side in sides)
            literals = EVENT_NAMES & {_literal(side) for side in sides}
            if names and literals:
                yield node.lineno, f"event name compared with {sorted(literals)}"


def _violations() -> list[str]:
    found = []
    for top in ("services", "tui"):
        for path in sorted((ROOT / top).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if relative.parts[:2] == ("services", "contract"):
                continue
            found += [f"{relative}:{line} {what}" for line, what in spelled_out(path.read_text())]
    return found


def test_no_error_code_or_event_name_is_spelled_outside_the_contract() -> None:
    assert _violations() == []


def test_the_check_sees_each_form() -> None:
    source = (
        'raise Conflict("x", code="stale_epoch")\n'
        'error_response(503, "not_ready", "x")\n'
        'Event("queue")\n'
        'if event.name == "resync": pass\n'
        "if event.name == EventName.RESYNC: pass\n"
        'Blueprint("queue", __name__)\n'
    )
    assert sorted(line for line, _ in spelled_out(source)) == [1, 2, 3, 4]

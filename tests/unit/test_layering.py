"""The layers of the tree, checked from the source: an import that crosses a boundary the
design draws fails here, naming the file, the line and what it imported.

Imports under `if TYPE_CHECKING:` count too: a type-only import is still a dependency a
reader has to follow, and cycles hide behind them."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ("services", "tui", "bench", "testbed", "tests")


@dataclass(frozen=True)
class Rule:
    """Modules under `source` may not import anything under the `forbidden` prefixes."""

    source: str
    forbidden: tuple[str, ...]
    allowed: tuple[str, ...] = ()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(source: str, module: str, is_package: bool = False) -> Iterator[tuple[int, str]]:
    """Every module a source imports, relative imports resolved against `module`."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield node.lineno, target
            for alias in node.names:
                yield node.lineno, f"{target}.{alias.name}"


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(rule: Rule, files: dict[str, tuple[str, bool]]) -> list[str]:
    """`files` maps a module name to its source and whether it is a package."""
    found = []
    for module, (source, is_package) in sorted(files.items()):
        if not within(module, rule.source):
            continue
        for line, target in imports(source, module, is_package):
            if any(within(target, allowed) for allowed in rule.allowed):
                continue
            if any(within(target, bad) for bad in rule.forbidden):
                found.append(f"{module}:{line} imports {target}")
    return sorted(set(found))


def project_files() -> dict[str, tuple[str, bool]]:
    files = {}
    for top in PROJECT:
        for path in (ROOT / top).rglob("*.py"):
            files[module_name(path)] = (path.read_text(), path.name == "__init__.py")
    return files


RULES = {
    "the worker never reaches into the gateway": Rule("services.worker", ("services.gateway",)),
    "the client is only an API client": Rule(
        "services.client", ("services.gateway", "services.worker", "asyncpg", "redis")
    ),
    "the deck is only an API client": Rule(
        "tui", ("services.gateway", "services.worker", "asyncpg", "redis")
    ),
    "the contract depends on no other part": Rule(
        "services.contract",
        ("services", "tui", "bench", "testbed", "tests"),
        allowed=("services.contract",),
    ),
    "the product depends on no test or benchmark": Rule("services", ("bench", "testbed", "tests")),
    "the deck depends on no test or benchmark": Rule("tui", ("bench", "testbed", "tests")),
    "benchmarks do not depend on the test suite": Rule("bench", ("tests",)),
    "the test bed belongs to neither suite": Rule("testbed", ("bench", "tests")),
    "the store depends on no route and not on the app's runtime": Rule(
        "services.gateway.store", ("services.gateway.routes", "services.gateway.runtime")
    ),
}


@pytest.mark.parametrize("name", sorted(RULES))
def test_layer(name: str) -> None:
    assert violations(RULES[name], project_files()) == [], name


def test_the_checker_sees_every_form_of_import() -> None:
    """Otherwise every rule above could pass on a checker that sees nothing."""
    rule = Rule("services.worker", ("services.gateway",))
    source = (
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "import services.gateway.app\n"
        "from services import gateway\n"
        "from ..gateway.store import runs\n"
        "if TYPE_CHECKING:\n"
        "    from services.gateway.runtime import Runtime\n"
        "from services.worker.llm import call\n"
    )
    found = violations(rule, {"services.worker.consumer": (source, False)})
    assert found == [
        "services.worker.consumer:3 imports services.gateway.app",
        "services.worker.consumer:4 imports services.gateway",
        "services.worker.consumer:5 imports services.gateway.store",
        "services.worker.consumer:5 imports services.gateway.store.runs",
        "services.worker.consumer:7 imports services.gateway.runtime",
        "services.worker.consumer:7 imports services.gateway.runtime.Runtime",
    ]

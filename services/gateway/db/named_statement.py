"""SQL written with `:name` placeholders, compiled once to asyncpg's `$n`.

A statement with two dozen positional parameters (the step insert) breaks silently when
one is added in the middle: `$17` becomes `$18` and a value lands in the wrong column,
often of a compatible type. Here the text names each value and `args` builds the list
from a mapping that must name exactly those values, so a missing or misspelt one is an
error at the call, not a wrong row. The compiled text is fixed, so asyncpg's statement
cache still prepares it once per connection.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

# `:name`, but not the second colon of a `::type` cast.
_PLACEHOLDER = re.compile(r"(?<!:):([a-z_][a-z0-9_]*)")


@dataclass(frozen=True)
class NamedStatement:
    sql: str
    names: tuple[str, ...]

    @classmethod
    def compile(cls, text: str) -> NamedStatement:
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in names:
                names.append(name)
            return f"${names.index(name) + 1}"

        return cls(_PLACEHOLDER.sub(number, text), tuple(names))

    def args(self, values: Mapping[str, object]) -> list[object]:
        """The positional arguments for `sql`; `values` must name each placeholder once."""
        missing = [name for name in self.names if name not in values]
        extra = sorted(set(values) - set(self.names))
        if missing or extra:
            raise ValueError(f"statement parameters: missing {missing}, unexpected {extra}")
        return [values[name] for name in self.names]

"""Tool names as the LLM APIs accept them.

FerrumDeck names tools `<server>.<tool>`, but function names for the model must match
`^[a-zA-Z0-9_-]{1,64}$`. Each agent's allowed tools get a stable, reversible mapping:
`time.get_current_time` becomes `time__get_current_time`; anything else is replaced by
`_`, long names are cut, and clashes get a numeric suffix. The mapping depends only on
the sorted set of names, so a run resumed on another worker sees the same names.
"""

from __future__ import annotations

import re

_MAX = 64
_INVALID = re.compile(r"[^a-zA-Z0-9_-]")


class ToolNames:
    def __init__(self, names: list[str]) -> None:
        self._to_llm: dict[str, str] = {}
        self._from_llm: dict[str, str] = {}
        for name in sorted(set(names)):
            server, _, tool = name.partition(".")
            candidate = _INVALID.sub("_", f"{server}__{tool}")[:_MAX]
            unique, n = candidate, 1
            while unique in self._from_llm:
                n += 1
                suffix = f"_{n}"
                unique = candidate[: _MAX - len(suffix)] + suffix
            self._to_llm[name] = unique
            self._from_llm[unique] = name

    def for_llm(self, name: str) -> str:
        return self._to_llm[name]

    def from_llm(self, llm_name: str) -> str | None:
        """The tool the model meant, or None if it named one it was never offered."""
        return self._from_llm.get(llm_name)

"""Regular expressions in linear time, for patterns that tenants write.

A policy regex is matched against model output on every tool call, inside the gateway's
event loop. Python's `re` backtracks: `^(a+)+$` on 26 a's and a `!` took 2.7 s and froze
the gateway for every project. RE2 (the engine Envoy and Vault use for the same reason)
matches in time linear in the input, by refusing the constructs that need backtracking:
backreferences and lookaround. A pattern using them is refused when the policy is
written, never accepted and then slow.
"""

from __future__ import annotations

from typing import Protocol

import re2

MAX_PATTERN_CHARS = 500
# RE2 builds its automaton lazily within this much memory; a pattern that needs more is
# refused at compile time instead of growing without bound.
_MAX_MEMORY = 8 << 20


class Pattern(Protocol):
    pattern: str

    def search(self, text: str) -> object | None: ...


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False
    options.max_mem = _MAX_MEMORY
    return options


_OPTIONS = _options()


def compile_linear(pattern: str) -> Pattern:
    """The pattern compiled by RE2, or ValueError saying why RE2 cannot run it."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ValueError(f"a regex is at most {MAX_PATTERN_CHARS} characters")
    try:
        compiled: Pattern = re2.compile(pattern, options=_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args else "invalid"
        raise ValueError(
            f"not a regular expression RE2 can run in linear time ({reason}); "
            "backreferences and lookaround are not supported"
        ) from None
    return compiled

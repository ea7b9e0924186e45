"""How `runs show` and `--follow` sum a step up in one line."""

from __future__ import annotations

from datetime import UTC, datetime

from services.cli.run_follow import step_summary
from services.contract.api import Step


def test_a_note_of_missing_tools_says_which_and_why() -> None:
    step = Step.model_validate(
        {
            "seq": 1,
            "kind": "note",
            "status": "completed",
            "output": {
                "tools_missing": [
                    {"pattern": "time.*", "reason": "server_unavailable"},
                    {"pattern": "crm.find", "reason": "no_such_tool"},
                ]
            },
            "model": None,
            "tool": None,
            "input": None,
            "error": None,
            "usage": None,
            "started_at": datetime.now(UTC).isoformat(),
            "finished_at": None,
        }
    )
    assert step_summary(step) == "without time.* (server_unavailable), crm.find (no_such_tool)"

"""What a claimed run's model is shown: never a tool of a server limited to other
projects, whatever the agent's `tools` patterns ask for."""

from __future__ import annotations

from services.contract.tools import ToolSpec
from services.worker.offered_tools import OfferedTools

CATALOGUE = [
    ToolSpec(name="vault.read_notes", server="vault", tool="read_notes", projects=["acme"]),
    ToolSpec(name="crm.find", server="crm", tool="find", projects=["acme", "beta"]),
    ToolSpec(name="time.now", server="time", tool="now"),
]


def _offered(project: str, allowed: list[str]) -> list[str]:
    offer = OfferedTools(CATALOGUE, allowed, project)
    return sorted(f["function"]["name"] for f in offer.functions)


def test_a_run_is_offered_shared_tools_and_those_of_servers_limited_to_its_project() -> None:
    assert _offered("acme", ["*"]) == ["crm__find", "time__now", "vault__read_notes"]
    assert _offered("beta", ["*"]) == ["crm__find", "time__now"]
    assert _offered("gamma", ["*"]) == ["time__now"]


def test_naming_a_scoped_tool_outright_does_not_offer_it_to_another_project() -> None:
    offer = OfferedTools(CATALOGUE, ["vault.read_notes"], "beta")
    assert offer.functions == []
    assert offer.tool("vault__read_notes") is None
    # Called anyway, it is recorded like a name nobody has: another project's tool is
    # not revealed by the step.
    assert offer.recorded_name("vault__read_notes") == "vault__read_notes (not offered)"


def test_a_tool_of_the_project_the_agent_was_not_given_is_recorded_by_its_own_name() -> None:
    offer = OfferedTools(CATALOGUE, ["crm.*"], "acme")
    assert offer.tool("time__now") is None
    assert offer.recorded_name("time__now") == "time.now"
    assert offer.recorded_name("crm__find") == "crm.find"


def test_a_name_nothing_has_is_the_models_own_marked_as_not_offered() -> None:
    offer = OfferedTools(CATALOGUE, ["*"], "acme")
    assert offer.recorded_name("time__convert_time") == "time__convert_time (not offered)"
    # A dotted name the model made up is never taken for a listed `<server>.<tool>`.
    assert offer.recorded_name("time.now") == "time.now (not offered)"
    assert offer.recorded_name("x" * 500) == "x" * 64 + " (not offered)"


def _why(offer: OfferedTools) -> list[tuple[str, str]]:
    return [(m.pattern, m.reason) for m in offer.missing]


def test_the_patterns_nothing_matched_are_missing_with_the_reason() -> None:
    offer = OfferedTools(
        CATALOGUE,
        ["time.*", "time.convert", "notes.*", "vault.*", "crm.find"],
        "beta",
        unavailable={"notes"},
    )
    assert _why(offer) == [
        ("time.convert", "no_such_tool"),
        ("notes.*", "server_unavailable"),
        # Limited to another project: reported as no server here, never named as theirs.
        ("vault.*", "not_on_this_worker"),
    ]
    assert OfferedTools(CATALOGUE, ["*"], "gamma").missing == []

from __future__ import annotations

import re

from services.worker.tool_names import ToolNames

VALID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def test_names_round_trip_and_are_valid_for_llm_apis() -> None:
    tools = ["time.get_current_time", "docs.search.v2", "x" * 40 + "." + "y" * 40, "a b.c"]
    names = ToolNames(tools)
    for tool in tools:
        llm_name = names.for_llm(tool)
        assert VALID.match(llm_name), llm_name
        assert names.from_llm(llm_name) == tool
    assert names.for_llm("time.get_current_time") == "time__get_current_time"


def test_clashing_names_stay_distinct() -> None:
    names = ToolNames(["a.b c", "a.b_c", "a.b-c"])
    assert len({names.for_llm(t) for t in ["a.b c", "a.b_c", "a.b-c"]}) == 3


def test_the_mapping_does_not_depend_on_order() -> None:
    tools = ["a.b c", "a.b_c", "z.q"]
    assert ToolNames(tools).for_llm("a.b_c") == ToolNames(tools[::-1]).for_llm("a.b_c")


def test_an_invented_name_maps_to_nothing() -> None:
    assert ToolNames(["time.now"]).from_llm("shell__exec") is None

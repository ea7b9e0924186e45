from __future__ import annotations

import pytest

from services.gateway.db.named_statement import NamedStatement


def test_names_become_numbers_in_order_of_first_use_and_casts_stay() -> None:
    statement = NamedStatement.compile(
        "SELECT :b::float8, :a, 'run:' || :b, x::jsonb FROM t WHERE id = :a"
    )
    assert statement.sql == "SELECT $1::float8, $2, 'run:' || $1, x::jsonb FROM t WHERE id = $2"
    assert statement.names == ("b", "a")
    assert statement.args({"a": 1, "b": 2.5}) == [2.5, 1]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"a": 1}, r"missing \['b'\]"),
        ({"a": 1, "b": 2, "c": 3}, r"unexpected \['c'\]"),
    ],
)
def test_a_missing_or_unexpected_value_is_an_error(values: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NamedStatement.compile("SELECT :a, :b").args(values)

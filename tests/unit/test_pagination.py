from __future__ import annotations

import pytest

from services.gateway.errors import BadRequest
from services.gateway.pagination import decode_cursor, encode_cursor, paginate


def test_cursor_round_trips() -> None:
    assert decode_cursor(encode_cursor(["abc", 3]), 2) == ["abc", 3]


def test_no_cursor_means_first_page() -> None:
    assert decode_cursor(None, 1) is None


@pytest.mark.parametrize("cursor", ["!!!", "bm90IGpzb24", encode_cursor(["a", "b"]), "e30"])
def test_foreign_cursors_are_a_bad_request(cursor: str) -> None:
    with pytest.raises(BadRequest) as caught:
        decode_cursor(cursor, 1)
    assert caught.value.code == "invalid_cursor"


def test_paginate_trims_the_extra_row_and_points_past_the_page() -> None:
    page, cursor = paginate([1, 2, 3], 2, lambda n: [n])
    assert page == [1, 2]
    assert decode_cursor(cursor, 1) == [2]


def test_paginate_last_page_has_no_cursor() -> None:
    assert paginate([1, 2], 2, lambda n: [n]) == ([1, 2], None)

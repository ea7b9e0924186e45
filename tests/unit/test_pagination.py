from __future__ import annotations

import uuid

import pytest

from services.gateway.errors import BadRequest
from services.gateway.pagination import decode_cursor, encode_cursor, paginate


def test_cursors_round_trip_with_their_kind() -> None:
    run_id = uuid.uuid4()
    assert decode_cursor(encode_cursor(["abc"]), str) == "abc"
    assert decode_cursor(encode_cursor([3]), int) == 3
    assert decode_cursor(encode_cursor([str(run_id)]), uuid.UUID) == run_id


def test_no_cursor_means_first_page() -> None:
    assert decode_cursor(None, int) is None


@pytest.mark.parametrize(
    ("cursor", "kind"),
    [
        ("!!!", str),
        ("bm90IGpzb24", str),
        (encode_cursor(["a", "b"]), str),
        ("e30", str),
        (encode_cursor([1]), str),
        (encode_cursor(["1"]), int),
        (encode_cursor([True]), int),
        (encode_cursor(["not-a-uuid"]), uuid.UUID),
    ],
)
def test_foreign_cursors_are_a_bad_request(cursor: str, kind: type) -> None:
    with pytest.raises(BadRequest) as caught:
        decode_cursor(cursor, kind)
    assert caught.value.code == "invalid_cursor"


def test_paginate_trims_the_extra_row_and_points_past_the_page() -> None:
    page, cursor = paginate([1, 2, 3], 2, lambda n: [n])
    assert page == [1, 2]
    assert decode_cursor(cursor, int) == 2


def test_paginate_last_page_has_no_cursor() -> None:
    assert paginate([1, 2], 2, lambda n: [n]) == ([1, 2], None)

from __future__ import annotations

import pytest

from services.gateway.prefer import preferred_wait


@pytest.mark.parametrize(
    ("header", "wait"),
    [
        ("wait=10", 10),
        ("respond-async, wait=5", 5),
        ("WAIT = 7", 7),
        ('wait="3"', 3),
        ("wait=2; ignored=param", 2),
        ("return=minimal", None),
        ("wait=soon", None),
        ("wait=-1", None),
        ("wait=٣", None),
        ("", None),
        (None, None),
        ("wait=" + "9" * 2000, None),
    ],
)
def test_the_wait_a_client_prefers(header: str | None, wait: int | None) -> None:
    assert preferred_wait(header) == wait

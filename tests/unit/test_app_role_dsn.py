"""The app role's DSN is the owner's with another user: same server, socket and
database, whatever form the owner's DSN takes."""

from __future__ import annotations

import pytest

from services.gateway.db.app_role import AppRoleError, as_role, grant_app_role


@pytest.mark.parametrize(
    ("owner", "password", "expected"),
    [
        (
            "postgresql://postgres:@/ferrumdeck?host=/tmp/pg",
            None,
            "postgresql://fd_app@/ferrumdeck?host=/tmp/pg",
        ),
        ("postgresql://ops:pw@db:5432/x", "p@ss:/", "postgresql://fd_app:p%40ss%3A%2F@db:5432/x"),
        ("postgresql://db.internal/x", None, "postgresql://fd_app@db.internal/x"),
    ],
)
def test_the_app_roles_dsn_keeps_everything_but_the_user(
    owner: str, password: str | None, expected: str
) -> None:
    assert as_role(owner, "fd_app", password) == expected


async def test_a_role_name_that_is_not_a_plain_identifier_is_refused_before_any_sql() -> None:
    with pytest.raises(AppRoleError, match="role name"):
        await grant_app_role(None, 'x"; DROP TABLE runs; --', None)

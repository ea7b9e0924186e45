"""Who may approve a call of a run under `approvals.distinct_approver`, decided without a
database from the run's creator and the approving key."""

from __future__ import annotations

import uuid

import pytest

from services.contract.api import Role
from services.contract.policy import DistinctApprover, PolicySet
from services.gateway.separation_of_duties import Party, refusal, strictest

KEY, ROLE = DistinctApprover.KEY, DistinctApprover.ROLE
CREATOR = Party(uuid.uuid4(), Role.ADMIN)
SAME_ROLE = Party(uuid.uuid4(), Role.ADMIN)
OTHER_ROLE = Party(uuid.uuid4(), Role.OPERATOR)
UNRECORDED = Party(None, None)


def test_role_is_stricter_than_key_which_is_stricter_than_none() -> None:
    assert strictest(None, None) is None
    assert strictest(KEY, None) is KEY
    assert strictest(None, ROLE) is ROLE
    assert strictest(ROLE, KEY) is ROLE


@pytest.mark.parametrize(
    ("setting", "approver", "refused"),
    [
        (None, CREATOR, False),
        (KEY, CREATOR, True),
        (KEY, SAME_ROLE, False),
        (ROLE, CREATOR, True),
        (ROLE, SAME_ROLE, True),
        (ROLE, OTHER_ROLE, False),
    ],
)
def test_who_may_approve(setting: DistinctApprover | None, approver: Party, refused: bool) -> None:
    assert (refusal(setting, CREATOR, approver) is not None) is refused


def test_an_unrecorded_creator_fails_closed_only_under_the_setting() -> None:
    assert refusal(None, UNRECORDED, OTHER_ROLE) is None
    for setting in (KEY, ROLE):
        why = refusal(setting, UNRECORDED, OTHER_ROLE)
        assert why is not None
        assert "reject the call, or start the run again" in why
    # A recorded key whose role is unknown cannot be told apart by role either.
    assert refusal(ROLE, Party(uuid.uuid4(), None), OTHER_ROLE) is not None


def test_the_setting_is_off_unless_written() -> None:
    assert PolicySet(rules=[]).approvals.distinct_approver is None

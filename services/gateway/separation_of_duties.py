"""Separation of duties: whether a key may approve a tool call of a run, when policy says
the approver must not be the run's creator (`approvals.distinct_approver`).

Pure functions, decided from what the approval's locked row, its run and the policy
versions say (`store.approvals` reads them); tested without a database.

Only approving is restricted. Separation of duties exists so that no one key alone both
asks for a run and lets its dangerous call happen; rejecting lets nothing happen (the
model is told the call was not made), and a creator who no longer wants the call could
as well have cancelled the run.

The setting that applies is the stricter of the policy version that asked for the
approval and the version in force when it is decided (`role` is stricter than `key`,
which is stricter than none). The version that asked binds because an admin, who may
both start runs and write policy, must not lift the requirement from a call already
waiting for someone else; the version in force counts too, so switching the setting
on covers the calls already waiting.

A run started before runs recorded their creator (migration 0010) has no creator to
compare with: under the setting no key can be shown not to be its creator, so its
calls can be rejected but not approved (fail closed, as policy conditions do).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from services.contract.api import Role
from services.contract.policy import DistinctApprover

_STRICTNESS: dict[DistinctApprover | None, int] = {
    None: 0,
    DistinctApprover.KEY: 1,
    DistinctApprover.ROLE: 2,
}


def strictest(*settings: DistinctApprover | None) -> DistinctApprover | None:
    """The setting that applies when several versions have a say (see above)."""
    return max(settings, key=_STRICTNESS.__getitem__, default=None)


@dataclass(frozen=True)
class Party:
    """A key, by id and role; both None when the run's creator was never recorded."""

    key_id: uuid.UUID | None
    role: Role | None


def refusal(setting: DistinctApprover | None, creator: Party, approver: Party) -> str | None:
    """Why `approver` may not approve a call of `creator`'s run, or None if it may."""
    if setting is None:
        return None
    rule = f"policy requires approvals.distinct_approver: {setting.value}"
    if creator.key_id is None or (setting is DistinctApprover.ROLE and creator.role is None):
        return (
            f"this run was started before FerrumDeck recorded who starts runs, so no key can "
            f"be shown not to be its creator, and {rule}: reject the call, or start the run "
            "again"
        )
    if approver.key_id == creator.key_id:
        return f"this key started the run, and {rule}: another key must approve its calls"
    if setting is DistinctApprover.ROLE and approver.role == creator.role:
        assert creator.role is not None
        return (
            f"a key of role {creator.role.value} started the run, and {rule}: a key of "
            "another role must approve its calls"
        )
    return None

"""The audit key every test gateway links and seals under, and the seal test code appends
audit events with when it writes through the store directly: what one writes, the others
verify."""

from __future__ import annotations

from services.contract.audit_keys import AuditKeys
from services.contract.audit_mac import EventSeal

TEST_AUDIT_KEY = "test-audit-key-" + "k" * 32
SEAL = EventSeal(AuditKeys.of([TEST_AUDIT_KEY]))

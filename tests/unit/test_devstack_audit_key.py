"""`make dev` keys the audit chain with a key it makes once and keeps outside the
database, so a restarted stack still verifies what it linked before."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from services.devstack.audit_key import audit_key_settings
from services.gateway.settings import GatewaySettings


def test_the_dev_stack_makes_a_private_key_file_once_and_keeps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FERRUMDECK_AUDIT_KEY", raising=False)
    monkeypatch.delenv("FERRUMDECK_AUDIT_KEY_FILE", raising=False)
    monkeypatch.delenv("FERRUMDECK_AUDIT_SIGNING_KEY_FILE", raising=False)
    first = audit_key_settings(tmp_path)
    key_file = Path(first["FERRUMDECK_AUDIT_KEY_FILE"])
    signing_file = Path(first["FERRUMDECK_AUDIT_SIGNING_KEY_FILE"])
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(signing_file.stat().st_mode) == 0o600
    settings = GatewaySettings(audit_key_file=key_file, audit_signing_key_file=signing_file)
    keys, signer = settings.audit_keys(), settings.checkpoint_signer()
    assert audit_key_settings(tmp_path) == first
    assert settings.audit_keys() == keys
    assert settings.checkpoint_signer().id == signer.id


def test_the_operators_own_key_wins_over_the_dev_stacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FERRUMDECK_AUDIT_KEY", "x" * 40)
    monkeypatch.setenv("FERRUMDECK_AUDIT_SIGNING_KEY_FILE", str(tmp_path / "mine.pem"))
    assert audit_key_settings(tmp_path) == {
        "FERRUMDECK_AUDIT_SIGNING_KEY_FILE": str(tmp_path / "mine.pem")
    }
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("key", "says"), [("short", "shorter than 32"), (" , ", "no audit key given")]
)
def test_an_unusable_key_is_refused_in_one_line(key: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        GatewaySettings(audit_key=key).audit_keys()

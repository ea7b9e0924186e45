"""The deployment as documented runs the gateway as the app role, with the audit keys
as credentials, and migrations alone as the schema's owner."""

from __future__ import annotations

from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "systemd"


def _settings(path: Path) -> dict[str, str]:
    pairs = (line.partition("=") for line in path.read_text().splitlines())
    return {k: v for k, _, v in pairs if k and not k.startswith("#")}


def test_the_gateway_connects_as_the_role_migrate_grants_and_migrations_as_the_owner() -> None:
    migrate = (DEPLOY / "ferrumdeck-migrate.service").read_text()
    assert "ferrumdeck migrate --app-role ferrumdeck_app" in migrate
    assert migrate.index("EnvironmentFile=/etc/ferrumdeck/ferrumdeck.env") < migrate.index(
        "EnvironmentFile=/etc/ferrumdeck/migrate.env"
    )
    gateway_url = _settings(DEPLOY / "ferrumdeck.env.example")["FERRUMDECK_DATABASE_URL"]
    owner_url = _settings(DEPLOY / "migrate.env.example")["FERRUMDECK_DATABASE_URL"]
    assert gateway_url.startswith("postgresql://ferrumdeck_app:")
    assert not owner_url.startswith("postgresql://ferrumdeck_app:")
    gateway = (DEPLOY / "ferrumdeck-gateway.service").read_text()
    assert "migrate.env" not in gateway
    assert "LoadCredential=audit.key:" in gateway
    assert "Environment=FERRUMDECK_AUDIT_KEY_FILE=%d/audit.key" in gateway

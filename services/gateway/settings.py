"""Gateway settings (`FERRUMDECK_*`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from services.contract.audit_checkpoint import CheckpointError, CheckpointSigner
from services.contract.audit_keys import AuditKeyError, AuditKeys
from services.contract.settings import CommonSettings
from services.gateway.client_address import Network, parse_networks


class GatewaySettings(CommonSettings):
    database_url: str = "postgresql://postgres@127.0.0.1:5432/ferrumdeck"
    host: str = "127.0.0.1"
    port: int = Field(default=8700, ge=0, le=65535)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    provider_models: Annotated[frozenset[str], NoDecode] = Field(
        default=frozenset(),
        description="LiteLLM providers (comma-separated, e.g. `openai,anthropic`) whose "
        "plain `provider/model` strings agents may name; by default only the models file's "
        "entries are allowed. Providers that default to a local server are never allowed "
        "this way.",
    )
    policy_max_bytes: int = Field(
        default=960 * 1024,
        ge=1024,
        description="Largest PUT /v1/policies body (413 policy_too_large beyond it; the "
        "smaller of this and max_body_bytes applies). Every byte of a policy is decoded, "
        "validated and compiled on each new version, and held in every gateway's memory.",
    )
    auth_failure_limit: int = Field(
        default=30, ge=1, description="Failed authentications a client may make per window."
    )
    auth_failure_window_seconds: int = Field(default=60, ge=1)
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Addresses or CIDRs (comma-separated) of reverse proxies whose "
        "`client_address_header` names the client for the failed-authentication limit; "
        "by default the peer's address counts.",
    )
    client_address_header: str = Field(default="X-Forwarded-For", min_length=1)
    metrics_token: SecretStr | None = Field(
        default=None,
        description="When set, GET /metrics needs `Authorization: Bearer <token>`.",
    )
    key_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How long a valid key's identity is remembered in the process (0: not "
        "at all). Revocation still takes effect at once: it is announced to every gateway.",
    )
    agent_cache_entries: int = Field(
        default=1024,
        ge=0,
        description="Agent versions remembered in the process for starting and claiming "
        "runs (0: none).",
    )
    max_queue_lag: int = Field(
        default=10_000,
        ge=1,
        description="Runs waiting for a worker beyond which POST /v1/runs answers 429.",
    )
    run_wait_max_seconds: int = Field(
        default=60,
        ge=0,
        le=600,
        description="Longest a request may wait for a run to settle (`Prefer: wait=N` on "
        "POST /v1/runs, `?wait=N` on GET /v1/runs/{id}); keep it under the idle timeout of "
        "any proxy in front of the gateway.",
    )
    max_run_streams: int = Field(
        default=500,
        ge=1,
        description="Run streams (GET /v1/runs/{id}/stream) one gateway holds open; more "
        "answer 503 too_many_streams. Each holds a Redis connection while it is open.",
    )
    webhook_allow_private: bool = Field(
        default=False,
        description="Let webhooks call loopback, link-local and private addresses (make dev "
        "sets it: its receivers are local). Off, a project cannot point the gateway at the "
        "operator's own network.",
    )
    webhook_retry_seconds: list[float] = Field(
        default=[5, 300, 1800, 7200, 18000, 36000, 36000],
        max_length=20,
        description="Delays between a webhook delivery's attempts (Standard Webhooks' "
        "schedule: about 27 hours in all); after the last, the delivery is failed.",
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, le=60, description="How long a webhook receiver has to answer."
    )
    webhook_poll_seconds: float = Field(
        default=1.0, gt=0, description="How often each gateway looks for due deliveries."
    )
    max_oldest_pending_seconds: float = Field(
        default=600.0,
        gt=0,
        description="Age of the oldest unfinished job beyond which POST /v1/runs answers 429.",
    )
    backpressure_refresh_seconds: float = Field(default=1.0, ge=0)
    lease_seconds: float = Field(default=30.0, gt=0)
    db_pool_min: int = Field(default=2, ge=1)
    db_pool_max: int = Field(default=20, ge=1)
    run_intake_batch: int = Field(
        default=256,
        ge=1,
        le=10_000,
        description="Most runs POST /v1/runs writes in one commit (group commit).",
    )
    run_intake_in_flight: int = Field(
        default=4,
        ge=1,
        le=16,
        description="Batches of new runs written at once, so one commit's flush overlaps "
        "the next batch (at most db_pool_max).",
    )
    relay_batch: int = Field(default=500, ge=1, le=10_000)
    platform_view: bool = Field(
        default=False,
        description="Show every project's keys what concerns the whole platform: the runs "
        "stream's figures (depth, pending, lag, oldest pending, dead letters) in GET "
        "/v1/queue and the queue event, and the workers and worker keys offering each tool "
        "in GET /v1/tools. By default each project sees only its own runs and tools.",
    )
    dispatch_window: int = Field(
        default=8,
        ge=1,
        description="Undelivered jobs the relay keeps in the runs stream; the rest wait in "
        "the outbox and leave it project by project in turn, so no project's backlog "
        "delays another's run by more than this many jobs. Raise it with the number of "
        "workers so none waits for the relay (8 keeps two workers fed at 70 runs/s; at 16 "
        "another project's run waited up to 1.6 s behind a flood on one worker, at 8 0.75 s).",
    )
    sweep_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How often undecided approvals are expired and stalled runs re-published.",
    )
    requeue_after_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A queued run with no job in the outbox, or a running one past its lease, "
        "untouched this long is published again.",
    )
    audit_key: Annotated[SecretStr | None, NoDecode] = Field(
        default=None,
        description="Secret key(s) the audit chain's links are HMACs under, comma-separated, "
        "the current one first: to rotate, put a new key in front and keep the old ones, "
        "which still verify their links. At least 32 characters each; the database must "
        "never hold them.",
    )
    audit_key_file: Path | None = Field(
        default=None,
        description="A file of audit keys, one a line, the current one first (instead of "
        "audit_key; `make dev` writes one under .ferrumdeck/).",
    )
    audit_signing_key_file: Path | None = Field(
        default=None,
        description="An Ed25519 private key (PEM) that signs audit checkpoints, statements of "
        "a chain's head kept outside the database; its public key checks them "
        "(`ferrumdeck audit public-key`). `make dev` writes one under .ferrumdeck/.",
    )
    audit_checkpoint_dir: Path | None = Field(
        default=None,
        description="Where the gateway writes a signed checkpoint of every project's chain "
        "head (`<dir>/<project>/<seq>.json`) each audit_checkpoint_seconds: storage the "
        "database's administrators cannot write. Needs audit_signing_key_file.",
    )
    audit_checkpoint_seconds: float = Field(default=3600.0, gt=0)
    audit_chain_seconds: float = Field(
        default=0.5, gt=0, description="How often new audit events are linked into the chain."
    )
    relay_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        description="How often the outbox relay looks for rows it was not told about "
        "(left by another gateway or by a failed publish).",
    )

    @field_validator("provider_models", "trusted_proxies", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        parse_networks(value)
        return value

    def audit_keys(self) -> AuditKeys:
        """The key ring; AuditKeyError when none is configured or one is unusable."""
        if self.audit_key is not None:
            return AuditKeys.of(self.audit_key.get_secret_value().split(","))
        if self.audit_key_file is not None:
            try:
                return AuditKeys.of(self.audit_key_file.read_text().splitlines())
            except OSError as exc:
                raise AuditKeyError(
                    f"cannot read FERRUMDECK_AUDIT_KEY_FILE {self.audit_key_file}: {exc.strerror}"
                ) from None
        raise AuditKeyError("set FERRUMDECK_AUDIT_KEY or FERRUMDECK_AUDIT_KEY_FILE")

    def checkpoint_signer(self) -> CheckpointSigner:
        """CheckpointError when no signing key is configured or it is unusable."""
        if self.audit_signing_key_file is None:
            raise CheckpointError("set FERRUMDECK_AUDIT_SIGNING_KEY_FILE (an Ed25519 PEM key)")
        return CheckpointSigner.from_file(self.audit_signing_key_file)

    @property
    def proxy_networks(self) -> tuple[Network, ...]:
        return parse_networks(self.trusted_proxies)

"""Signed checkpoints: statements of a chain's head kept outside the database.

Keyed links stop anyone without the key from rewriting a chain, but not from cutting
its newest events off, and nothing in the database can say how long the chain was. A
checkpoint (project, seq, hash of the link there, its key id, when) signed with Ed25519
and kept elsewhere can: a chain that no longer holds the checkpointed link at that seq,
or is shorter than it, was cut or rewritten. The signature lets a checkpoint be handed
around (a file, a bucket, a ticket) and still be trusted by whoever holds the public key;
the private key signs only, so the verifier needs nothing secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from datetime import datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, Field, ValidationError

FORMAT = "ferrumdeck-audit-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint or key that cannot be used, in one line."""


class Checkpoint(BaseModel):
    format: str = FORMAT
    project: str = Field(max_length=63)
    seq: int = Field(ge=1)
    hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    key_id: str | None = Field(default=None, max_length=64)
    created_at: datetime
    signer: str = Field(max_length=64)
    signature: str = Field(default="", max_length=200)

    def statement(self) -> bytes:
        """What is signed: every field but the signature, canonically."""
        fields = self.model_dump(mode="json", exclude={"signature"})
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()

    def token(self) -> str:
        """The checkpoint in one URL-safe word (`GET /v1/audit/verify?since_checkpoint=`)."""
        return base64.urlsafe_b64encode(self.model_dump_json().encode()).decode().rstrip("=")

    @classmethod
    def from_token(cls, token: str) -> Checkpoint:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            return cls.model_validate_json(raw)
        except (binascii.Error, ValueError, ValidationError):
            raise CheckpointError(
                "not a checkpoint (`ferrumdeck audit checkpoint` writes them)"
            ) from None

    @classmethod
    def from_file(cls, path: Path) -> Checkpoint:
        try:
            return cls.model_validate_json(path.read_bytes())
        except OSError as exc:
            raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror}") from None
        except ValidationError:
            raise CheckpointError(f"{path} is not a checkpoint") from None


def signer_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class CheckpointSigner:
    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public = private.public_key()
        self.id = signer_id(self.public)

    @classmethod
    def from_file(cls, path: Path) -> CheckpointSigner:
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except OSError as exc:
            raise CheckpointError(f"cannot read signing key {path}: {exc.strerror}") from None
        except (ValueError, TypeError):
            raise CheckpointError(f"{path} is not an unencrypted PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise CheckpointError(f"{path} is not an Ed25519 key")
        return cls(key)

    def sign(self, checkpoint: Checkpoint) -> Checkpoint:
        unsigned = checkpoint.model_copy(update={"signer": self.id, "signature": ""})
        signature = self._private.sign(unsigned.statement())
        return unsigned.model_copy(update={"signature": base64.b64encode(signature).decode()})

    def public_pem(self) -> str:
        return self.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()


def generate_signing_key(path: Path) -> None:
    """A new Ed25519 key in PEM, readable by its owner only."""
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.touch(mode=0o600, exist_ok=False)
    path.write_bytes(pem)


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise CheckpointError(f"cannot read public key {path}: {exc.strerror}") from None
    except ValueError:
        raise CheckpointError(f"{path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise CheckpointError(f"{path} is not an Ed25519 public key")
    return key


def check_signature(checkpoint: Checkpoint, public: Ed25519PublicKey) -> None:
    """CheckpointError unless `public` signed exactly this checkpoint."""
    if checkpoint.signer != signer_id(public):
        raise CheckpointError(
            f"checkpoint of {checkpoint.project!r} at seq {checkpoint.seq} is signed by "
            f"{checkpoint.signer}, not by the key given ({signer_id(public)})"
        )
    try:
        public.verify(base64.b64decode(checkpoint.signature, validate=True), checkpoint.statement())
    except (InvalidSignature, binascii.Error, ValueError):
        raise CheckpointError(
            f"checkpoint of {checkpoint.project!r} at seq {checkpoint.seq}: the signature "
            "does not verify; it was altered or forged"
        ) from None

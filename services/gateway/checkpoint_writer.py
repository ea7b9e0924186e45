"""Checkpoints on a schedule, written where the database cannot reach them.

With `audit_checkpoint_dir` set, each gateway signs every project's chain head every
`audit_checkpoint_seconds` into `<dir>/<project>/<seq>.json`, so checkpoints exist
without anyone remembering to run `ferrumdeck audit checkpoint`. The directory should
be storage the database's administrators cannot write (another host's mount, a synced
bucket). Each round verifies only what was linked since the newest checkpoint there,
so it stays cheap however long a chain grows. A chain that does not verify gets no
checkpoint, and an error in the log naming where it broke: a checkpoint would vouch
for the tamper. Several gateways writing the same head write the same file name; the
first one stays.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import asyncpg

from services.contract.audit_checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointSigner,
    check_signature,
)
from services.contract.audit_keys import AuditKeys
from services.gateway import audit
from services.gateway.background import BackgroundLoop

log = logging.getLogger(__name__)

# Every project with a chain, by a walk of the (project, seq) index: one probe each.
_CHAINED_PROJECTS = """
WITH RECURSIVE chained(project) AS (
    (SELECT project FROM audit_chain ORDER BY project LIMIT 1)
    UNION ALL
    SELECT (SELECT c.project FROM audit_chain c WHERE c.project > p.project
             ORDER BY c.project LIMIT 1)
      FROM chained p WHERE p.project IS NOT NULL
)
SELECT project FROM chained WHERE project IS NOT NULL"""


class CheckpointWriter(BackgroundLoop):
    name = "audit-checkpoints"

    def __init__(
        self,
        pool: asyncpg.Pool,
        keys: AuditKeys,
        signer: CheckpointSigner,
        directory: Path,
        *,
        every_seconds: float,
    ) -> None:
        super().__init__()
        self._pool = pool
        self._keys = keys
        self._signer = signer
        self._directory = directory
        self._every_seconds = every_seconds

    async def step(self) -> float:
        try:
            projects = [row["project"] for row in await self._pool.fetch(_CHAINED_PROJECTS)]
            for project in projects:
                await self._checkpoint(project)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("audit checkpoints not written, retrying: %s", exc)
        return self._every_seconds

    async def _checkpoint(self, project: str) -> None:
        last = await asyncio.to_thread(self._newest, project)
        verification, checkpoint = await audit.checkpoint(
            self._pool, project, self._keys, self._signer, since=last
        )
        if not verification.intact:
            log.error(
                "audit chain of %s does not verify, no checkpoint written: %s",
                project,
                (verification.first_broken or verification.checkpoint_failure),
            )
            return
        if checkpoint is not None and (last is None or checkpoint.seq > last.seq):
            await asyncio.to_thread(self._write, checkpoint)

    def _newest(self, project: str) -> Checkpoint | None:
        """The newest checkpoint of `project` there that this gateway's key signed."""
        files = sorted((self._directory / project).glob("*.json"), reverse=True)
        for path in files:
            try:
                checkpoint = Checkpoint.from_file(path)
                check_signature(checkpoint, self._signer.public)
            except CheckpointError as exc:
                log.warning("ignoring %s: %s", path, exc)
                continue
            if checkpoint.project == project:
                return checkpoint
        return None

    def _write(self, checkpoint: Checkpoint) -> None:
        folder = self._directory / checkpoint.project
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{checkpoint.seq:012d}.json"
        if path.exists():
            return
        partial = folder / f".{path.name}.{os.getpid()}.tmp"
        partial.write_text(checkpoint.model_dump_json(indent=2) + "\n")
        os.replace(partial, path)

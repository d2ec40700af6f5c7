"""Checkpoints of the audit chain's head, kept where the database role cannot rewrite them.

The hash chain shows an edited or missing record in the middle, but not a missing tail:
whoever deletes the newest records leaves a shorter chain that is still whole. So after
every committed audit write the head (sequence number, digest, time) is published twice
outside the database:

- as a JSON log line (logger ``moai.audit``, message ``audit log head``), which lands in
  the cluster's log store;
- as a checkpoint file in blob storage, ``audit/checkpoints/<shard>/<seq>.json``, signed
  with the audit key and never overwritten.

``verify_audit_log --checkpoints`` then fails when the table ends before the last
checkpoint or holds another digest at a checkpoint's sequence number.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from django.core.files.storage import default_storage

from base import blobs
from base.audit import AuditKey, ChainFault, keyring, signing_key, verify_chain
from base.models import AuditRecord

logger = logging.getLogger("moai.audit")
FOLDER = "audit/checkpoints"
# Files per folder, so that no folder grows without bound.
_SHARD = 10_000


@dataclass(frozen=True)
class Head:
    seq: int
    digest: str
    at: datetime


@dataclass(frozen=True)
class Checkpoint:
    name: str
    seq: int
    digest: str
    at: str


class BadCheckpoint(Exception):
    """A checkpoint file that cannot be read or is not signed by a known audit key."""


def checkpoint_name(seq: int) -> str:
    return f"{FOLDER}/{seq // _SHARD:010d}/{seq:020d}.json"


def _signed_fields(seq: int, digest: str, at: str, key_id: str) -> bytes:
    return json.dumps({"seq": seq, "digest": digest, "at": at, "key_id": key_id}, sort_keys=True).encode()


def _signature(key: AuditKey, seq: int, digest: str, at: str) -> str:
    return hmac.new(key.secret, _signed_fields(seq, digest, at, key.id), hashlib.sha256).hexdigest()


def publish(head: Head) -> None:
    """Log the head and append its signed checkpoint. Never raises: the records are committed already."""
    at = head.at.isoformat()
    logger.info("audit log head", extra={"audit_seq": head.seq, "audit_digest": head.digest, "audit_at": at})
    key = signing_key()
    body = {"seq": head.seq, "digest": head.digest, "at": at, "key_id": key.id}
    body["signature"] = _signature(key, head.seq, head.digest, at)
    name = checkpoint_name(head.seq)
    try:
        # Never overwritten: a name taken already (beat's minutely checkpoint of a head that a
        # writer published) raises, with no request to ask first; every audited request pays that one.
        blobs.save_bytes(name, json.dumps(body, sort_keys=True).encode())
    except FileExistsError:
        _compare_existing(name, head)
    except Exception:
        # The storage backend's own errors (a full disk, an object store's client errors) must
        # not turn a committed state change into a failed request; beat publishes again.
        logger.exception("cannot write the audit checkpoint %s", name)


def _compare_existing(name: str, head: Head) -> None:
    """Beat and a writer may publish the same head; another digest under that number is tampering."""
    try:
        existing = read(name)
    except BadCheckpoint as exc:
        logger.error("audit checkpoint %s cannot be checked: %s", name, exc)
        return
    if existing.digest != head.digest:
        logger.error(
            "audit record #%d disagrees with its checkpoint %s: the table was rewritten after it",
            head.seq,
            name,
            extra={"audit_seq": head.seq, "audit_digest": head.digest, "checkpoint_digest": existing.digest},
        )


def publish_current_head() -> Head | None:
    """Checkpoint the table's head now (beat), or None for an empty table."""
    row = AuditRecord.objects.order_by("-seq").values_list("seq", "digest", "at").first()
    if row is None:
        return None
    head = Head(*row)
    publish(head)
    return head


def read(name: str, keys: dict[str, AuditKey] | None = None) -> Checkpoint:
    keys = keyring() if keys is None else keys
    try:
        body = json.loads(blobs.read_bytes(name))
        seq, digest, at, key_id, signature = (body[f] for f in ("seq", "digest", "at", "key_id", "signature"))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadCheckpoint(f"{name} cannot be read: {exc}") from exc
    key = keys.get(key_id)
    if key is None:
        raise BadCheckpoint(f"{name} is signed with an unknown audit key (key id {key_id!r})")
    if not hmac.compare_digest(str(signature), _signature(key, seq, digest, at)):
        raise BadCheckpoint(f"{name} does not match its signature (the file was altered)")
    if name != checkpoint_name(seq):
        raise BadCheckpoint(f"{name} names record #{seq}, which belongs in {checkpoint_name(seq)}")
    return Checkpoint(name, seq, digest, at)


def names() -> list[str]:
    """Every checkpoint file, in sequence order."""
    # A bucket has no folders to test for (exists() is False for a prefix): an empty listing
    # there, FileNotFoundError on a filesystem that never had one.
    try:
        shards, _ = default_storage.listdir(FOLDER)
    except FileNotFoundError:
        return []
    found = []
    for shard in sorted(shards):
        _, files = default_storage.listdir(f"{FOLDER}/{shard}")
        found += [f"{FOLDER}/{shard}/{file}" for file in sorted(files) if file.endswith(".json")]
    return found


def load_all(keys: dict[str, AuditKey] | None = None) -> list[Checkpoint]:
    """Every checkpoint, checked; raises BadCheckpoint on the first that is not genuine."""
    keys = keyring() if keys is None else keys
    return [read(name, keys) for name in names()]


def verify_against(
    records: Iterable[AuditRecord], table_head: int, checkpoints: list[Checkpoint], keys: dict[str, AuditKey]
) -> ChainFault | None:
    """The chain checked as :func:`verify_chain` does, and against the checkpoints: the first bad number.

    ``records`` in sequence order; ``table_head`` is the table's highest sequence number (0 if empty).
    """
    disagreements: list[ChainFault] = []

    def compared(rows: Iterable[AuditRecord]) -> Iterator[AuditRecord]:
        pending = iter(checkpoints)
        checkpoint = next(pending, None)
        for row in rows:
            while checkpoint is not None and checkpoint.seq < row.seq:
                checkpoint = next(pending, None)  # its record is missing: the chain names the gap
            if checkpoint is not None and checkpoint.seq == row.seq:
                if checkpoint.digest != row.digest and not disagreements:
                    problem = (
                        f"disagrees with checkpoint {checkpoint.name} of {checkpoint.at} (the table was rewritten)"
                    )
                    disagreements.append(ChainFault(row.seq, problem))
                checkpoint = next(pending, None)
            yield row

    chain_fault = verify_chain(compared(records), keys)
    faults = [*disagreements, *([chain_fault] if chain_fault else [])]
    if checkpoints and checkpoints[-1].seq > table_head:
        last = checkpoints[-1]
        faults.append(
            ChainFault(
                table_head + 1,
                f"is missing: the table ends at #{table_head}, but checkpoint {last.name} of {last.at} "
                f"names #{last.seq} (the newest records were deleted)",
            )
        )
    return min(faults, key=lambda fault: fault.seq, default=None)

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

The log line is written at once, by the committing thread. The checkpoint file is not: an
object store takes milliseconds a write, and every audited request would wait for it. One
writer thread per process writes them, and only the newest head waiting: a checkpoint
covers every record before it (the chain links them, and a table ending before any
checkpoint fails the check), so a head overtaken before its turn is not worth a write of
its own. Records between two written checkpoints are still checked: deleting them from the
middle breaks the chain, deleting them with the tail leaves the table short of the later
checkpoint. Each file is still written once under its own sequence number.

What a crash can lose: the head waiting (and the one being written) when the process dies,
nothing before them, which the earlier checkpoints already cover. Their log lines were
written already, and beat's minutely checkpoint of the table's head covers those records
again. :func:`flush` waits for the writer (at process exit, and for whoever must read the
checkpoints of this process's writes: ``verify_audit_log``, tests). A fork waits for it too,
so that no lock of the store's client is copied held into the child, which gets a writer of
its own (gunicorn's and Celery's workers are forked, and Celery's parent writes records).
"""

from __future__ import annotations

import atexit
import hashlib
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from django.core.files.storage import default_storage

from base import audit, blobs
from base.audit import Actor, AuditKey, ChainFault, keyring, signing_key, verify_chain
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


@dataclass(frozen=True)
class _Signed:
    """A head with its checkpoint file, signed by the thread that committed it (with its settings' key)."""

    head: Head
    body: bytes


def publish(head: Head) -> None:
    """Log the head now and hand its checkpoint to the writer thread. Never raises: the records are committed."""
    _log(head)
    try:
        _writer().submit(_signed(head))
    except Exception:
        # Beat checkpoints the head within a minute; a committed state change never fails here.
        logger.exception("cannot queue the audit checkpoint of record #%d", head.seq)


def _log(head: Head) -> None:
    logger.info(
        "audit log head", extra={"audit_seq": head.seq, "audit_digest": head.digest, "audit_at": head.at.isoformat()}
    )


def flush(timeout: float = 30.0) -> bool:
    """Wait until this process's checkpoints handed to the writer are written; False if ``timeout`` passed first."""
    return _writer().flush(timeout)


def _signed(head: Head) -> _Signed:
    at = head.at.isoformat()
    key = signing_key()
    body = {"seq": head.seq, "digest": head.digest, "at": at, "key_id": key.id}
    body["signature"] = _signature(key, head.seq, head.digest, at)
    return _Signed(head, json.dumps(body, sort_keys=True).encode())


def _write(signed: _Signed) -> None:
    """Append one checkpoint file. Never raises: the writer thread must outlive a store's bad minute."""
    head = signed.head
    name = checkpoint_name(head.seq)
    try:
        # Never overwritten: a name taken already (beat's minutely checkpoint of a head that a
        # writer published) raises, with no request to ask first; every audited request pays that one.
        blobs.save_bytes(name, signed.body)
    except FileExistsError:
        _compare_existing(name, head)
    except Exception:
        # The storage backend's own errors (a full disk, an object store's client errors) must
        # not turn a committed state change into a failed request; beat publishes again.
        logger.exception("cannot write the audit checkpoint %s", name)


class _Writer:
    """The process's checkpoint writer: a daemon thread and the newest head waiting for it."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._waiting: _Signed | None = None
        self._writing = False
        self._thread: threading.Thread | None = None

    def submit(self, signed: _Signed) -> None:
        with self._changed:
            # Threads commit in one order and run their on-commit hooks in another: keep the newest.
            if self._waiting is None or signed.head.seq > self._waiting.head.seq:
                self._waiting = signed
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="audit-checkpoints", daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def flush(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._waiting is not None or self._writing:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def hold_for_fork(self, timeout: float) -> None:
        """Let the writer finish and keep it idle until :meth:`release_after_fork`.

        A fork copies every lock as it is at that moment: one the writer holds inside the
        store's client (its connection pool, ``blobs``' client lock) would stay held forever
        in the child, whose first request to the store would then hang.
        """
        deadline = time.monotonic() + timeout
        self._changed.acquire()
        while (self._waiting is not None or self._writing) and (left := deadline - time.monotonic()) > 0:
            self._changed.wait(left)

    def release_after_fork(self) -> None:
        self._changed.release()

    def _run(self) -> None:
        while True:
            with self._changed:
                while self._waiting is None:
                    self._changed.wait()
                signed, self._waiting, self._writing = self._waiting, None, True
            try:
                _write(signed)
            finally:
                with self._changed:
                    self._writing = False
                    self._changed.notify_all()


_current = _Writer()


def _writer() -> _Writer:
    return _current


def _before_fork() -> None:
    _current.hold_for_fork(timeout=10.0)


def _after_fork_in_parent() -> None:
    _current.release_after_fork()


def _after_fork_in_child() -> None:
    # A forked child (gunicorn's and Celery's workers) has no writer thread, and the writer's
    # condition is held by the forking thread: a writer of its own.
    global _current
    _current = _Writer()


def _flush_at_exit() -> None:
    if not flush(timeout=10.0):
        logger.error("audit checkpoints still unwritten at exit; beat checkpoints the head again")


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)
atexit.register(_flush_at_exit)


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
    _log(head)
    _write(_signed(head))  # beat's own task: written before it returns, no request waits on it
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
    return [name for shard in _shards() for name in _shard_names(shard)]


def _shards() -> list[str]:
    """The shard folders, in sequence order (their names are zero-padded numbers)."""
    # A bucket has no folders to test for (exists() is False for a prefix): an empty listing
    # there, FileNotFoundError on a filesystem that never had one.
    try:
        shards, _ = default_storage.listdir(FOLDER)
    except FileNotFoundError:
        return []
    return sorted(shards)


def _shard_names(shard: str) -> list[str]:
    _, files = default_storage.listdir(f"{FOLDER}/{shard}")
    return [f"{FOLDER}/{shard}/{file}" for file in sorted(files) if file.endswith(".json")]


@dataclass(frozen=True)
class Thinned:
    shards: int
    removed: int


def thin(older_than: datetime, max_shards: int = 100) -> Thinned:
    """Reduce every shard whose newest checkpoint is older than ``older_than`` to that checkpoint.

    Every audited write leaves a file, so a busy service made a million a day and kept them
    for good, and ``verify_audit_log --checkpoints`` reads them all. One checkpoint a shard
    finds what all of them did: the records are chained, so a record deleted or rewritten
    before a checkpoint changes every digest up to it, and the table ending early is still
    measured against the newest checkpoint. So the newest shard, where heads are written, is
    never thinned, nor any shard whose newest checkpoint is not genuine or disagrees with the
    table: that is evidence, and the shard's other checkpoints narrow down what happened.
    At most ``max_shards`` shards a call, so that a long backlog is worked off over several.
    """
    shards = _shards()
    thinned = removed = 0
    for shard in shards[:-1]:
        if thinned == max_shards:
            break
        files = _shard_names(shard)
        if len(files) < 2:
            continue
        try:
            newest = read(files[-1])
        except BadCheckpoint as exc:
            logger.error("audit checkpoint shard %s not thinned: %s", shard, exc)
            continue
        if datetime.fromisoformat(newest.at) >= older_than:
            break  # the later shards hold later records still
        if not AuditRecord.objects.filter(seq=newest.seq, digest=newest.digest).exists():
            # The table was cut or rewritten at or before this record: every checkpoint of the
            # shard stays, to narrow down where (verify_audit_log --checkpoints reports it).
            logger.error("audit checkpoint shard %s not thinned: the table disagrees with %s", shard, newest.name)
            continue
        _remove_shard_but_newest(shard, files[:-1], newest)
        thinned, removed = thinned + 1, removed + len(files) - 1
    return Thinned(thinned, removed)


def _remove_shard_but_newest(shard: str, older: list[str], newest: Checkpoint) -> None:
    blobs.delete_many(older)
    audit.record(
        Actor.system("beat"),
        "audit.checkpoints_thinned",
        "audit_checkpoints",
        shard,
        kept_seq=newest.seq,
        removed=len(older),
        first_removed=older[0],
        last_removed=older[-1],
    )


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

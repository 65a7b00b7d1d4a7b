"""Append-only audit log of the action gateway, hash-chained so that edits are detectable.

Each line is a JSON object whose ``prev`` field is the sha256 (hex) of the previous line's
bytes, without its newline; the first line has 64 zeros. Editing, removing or reordering
a line breaks the chain at the next line. Edits of the last line and truncation of the
tail leave a valid chain, so they are detectable only against a copy of the last hash
kept elsewhere (:meth:`AuditLog.append` returns it) or against a checkpoint of an earlier
verification (:func:`verify_chain`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from saodf.errors import SaodfError

logger = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64


class AuditChainError(SaodfError):
    """An audit log whose hash chain is broken: a line was edited, removed or reordered."""


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def _last_line(path: Path) -> bytes | None:
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        end = handle.tell()
        position = end
        chunk = b""
        while position > 0:
            step = min(4096, position)
            position -= step
            handle.seek(position)
            chunk = handle.read(step) + chunk
            stripped = chunk.rstrip(b"\n")
            if b"\n" in stripped:
                return stripped.rsplit(b"\n", 1)[1]
        stripped = chunk.rstrip(b"\n")
        return stripped or None


class AuditLog:
    """A JSON Lines audit log; :meth:`append` is safe to call from many threads."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        last = _last_line(self.path) if self.path.exists() else None
        self._prev = line_hash(last) if last else GENESIS_HASH

    def append(self, event: str, **fields: Any) -> str:
        """Append one record and return its hash, which the next record will carry as ``prev``."""
        with self._lock:
            record = {
                "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                "event": event,
                **fields,
                "prev": self._prev,
            }
            line = json.dumps(record, separators=(",", ":"), sort_keys=True).encode("utf-8")
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            self._prev = line_hash(line)
            return self._prev


def verify_chain(path: Path, checkpoint: tuple[int, str] | None = None) -> tuple[int, str]:
    """Check the hash chain of an audit log and return its record count and last hash.

    Args:
        path: the JSON Lines log.
        checkpoint: ``(records, hash)`` of an earlier verification, kept outside the log.
            The log must still hold a record with that hash at that position, so records
            removed or edited up to that position since then are detected.

    Raises:
        AuditChainError: naming the first line whose ``prev`` does not match, or that is not
            a JSON object, or the checkpoint that the log no longer holds.
    """
    expected = GENESIS_HASH
    count = 0
    with Path(path).open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.rstrip(b"\n")
            try:
                record = json.loads(line)
            except ValueError:
                raise AuditChainError(
                    f"{path} line {number} is not JSON; the log was edited"
                ) from None
            if not isinstance(record, dict) or record.get("prev") != expected:
                raise AuditChainError(
                    f"{path} line {number} does not carry the hash of line {number - 1}; "
                    "a line before it was edited, removed or reordered"
                )
            expected = line_hash(line)
            count += 1
            if checkpoint is not None and count == checkpoint[0] and expected != checkpoint[1]:
                raise AuditChainError(
                    f"{path} record {count} has hash {expected}, but an earlier verification "
                    f"stored {checkpoint[1]} for it; that record or one before it was replaced"
                )
    if checkpoint is not None and count < checkpoint[0]:
        raise AuditChainError(
            f"{path} has {count} records, but an earlier verification counted "
            f"{checkpoint[0]} ending at hash {checkpoint[1]}; records were removed from its tail"
        )
    return count, expected


def verify_audit_log(path: Path, expected_last_hash: str | None = None) -> int:
    """Check the hash chain of an audit log and return its number of records.

    Args:
        path: the JSON Lines log.
        expected_last_hash: the hash that :meth:`AuditLog.append` returned for the last
            record, kept outside the log. With it, edits of the last line and a truncated
            tail are detected too.

    Raises:
        AuditChainError: naming the first line whose ``prev`` does not match, or that is not
            a JSON object, or saying that the last record is not the expected one.
    """
    count, last_hash = verify_chain(path)
    if expected_last_hash is not None and last_hash != expected_last_hash:
        raise AuditChainError(
            f"{path} ends at record {count} with hash {last_hash}, not the expected "
            f"{expected_last_hash}; its tail was truncated or its last line edited"
        )
    return count

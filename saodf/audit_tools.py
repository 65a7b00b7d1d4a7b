"""Verify the audit logs and scan them for unauthorized access.

The action gateway writes ``SAODF_HOME/logs/audit.jsonl``, the ingest gateway
``ingest_audit.jsonl``, the MQTT bridge ``mqtt_audit.jsonl``, each tenant lake writer
process ``lake_audit-<consumer id>.jsonl`` and each tenant SQS drain
``sqs_drain_audit-<queue>.jsonl`` there. All are hash-chained (see :mod:`actions.audit`).
The detection rules read their records and raise one :class:`Alert` per rule, actor and
time window:

- ``brute_force``: wrong or malformed basic credentials at the action gateway;
- ``cross_tenant``: a valid key used on another namespace's path;
- ``invalid_token_burst``: missing or unknown device tokens at the ingest gateway;
- ``malformed_input``: bodies that are not JSON objects, over the size limit, without a
  usable length, or device ids that break the telemetry contract (path traversal);
- ``unusual_volume``: an actor's calls in one window far above its usual rate;
- ``unknown_source_guess``: even one wrong gateway key or unknown device token from a
  source address that had not authenticated before, below the brute-force threshold;
- ``revoked_key``: a gateway key or device token that ``saodf tenant rotate-keys`` or
  ``saodf device token create`` rotated out, or that ``saodf device token revoke`` removed
  (:func:`record_revoked_keys`), from any source, matched by the ``key_digest`` of the
  action gateway's and the ``token_digest`` of the ingest gateway's 401 records.

An actor is the key's subject uuid or device id when the caller authenticated, else
``client:<address>``.

NOTE: the rules distinguish sources by address only. Callers behind one NAT or proxy share an
address, so a guesser there counts as known once a legal caller of that address
authenticated.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from actions.audit import AuditChainError, verify_audit_log, verify_chain
from saodf.config import Settings, get_settings
from saodf.secrets import secrets_dir, write_json_secret

logger = logging.getLogger(__name__)

AUDIT_FILES = ("audit.jsonl", "ingest_audit.jsonl", "mqtt_audit.jsonl", "admin_audit.jsonl")
# Logs with one file per writer process.
AUDIT_GLOBS = ("lake_audit-*.jsonl", "sqs_drain_audit-*.jsonl")
MALFORMED_STATUSES = frozenset({400, 411, 413})
INGEST_PREFIX = "/v1/"
REVOKED_KEYS_FILE = "revoked_keys.json"
# Per log, the record count and last hash that ``verify_checkpointed`` last verified.
CHECKPOINTS_FILE = "audit_checkpoints.json"
# Hex characters of sha256(secret) that identify a presented key or token. The ingest
# gateway logs the same prefix as ``token_digest``.
DIGEST_CHARS = 16
# Events of callers that authenticated, so a later wrong key from their address is not new.
AUTHENTICATED_EVENTS = frozenset({"invoke", "ingest"})


@dataclass(frozen=True)
class RuleConfig:
    """Thresholds of the detection rules, and the digests of revoked keys and tokens.

    Counts are per actor and window. ``revoked_digests`` maps the first
    :data:`DIGEST_CHARS` hex characters of sha256(secret) to ``(tenant, owner)``, where the
    owner is the gateway key's uuid or the token's device id.
    """

    window_seconds: float = 300.0
    brute_force_failures: int = 3
    invalid_token_failures: int = 3
    malformed_requests: int = 1
    volume_window_seconds: float = 60.0
    volume_min_calls: int = 50
    volume_factor: float = 5.0
    revoked_digests: dict[str, tuple[str, str]] = field(default_factory=dict, hash=False)


@dataclass
class Alert:
    """One finding: the rule, the actor, and the records that triggered it."""

    rule: str
    actor: str
    count: int
    first: str
    last: str
    evidence: list[str] = field(default_factory=list)
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def key(self) -> tuple[str, str, str]:
        return self.rule, self.actor, self.first


@dataclass(frozen=True)
class Record:
    """An audit record with where it came from (``file:line``) and its time in epoch seconds."""

    ref: str
    at: float
    data: dict[str, Any]

    @property
    def time_text(self) -> str:
        value = self.data.get("time")
        return value if isinstance(value, str) else ""

    @property
    def actor(self) -> str:
        actor = self.data.get("actor") or self.data.get("subject")
        return str(actor) if actor else f"client:{self.data.get('client', '?')}"


def audit_paths(settings: Settings | None = None) -> list[Path]:
    """Return the audit logs of a home that exist."""
    settings = settings or get_settings()
    paths = [settings.log_dir / name for name in AUDIT_FILES if (settings.log_dir / name).exists()]
    for pattern in AUDIT_GLOBS:
        paths += sorted(settings.log_dir.glob(pattern))
    return paths


def verify(paths: Iterable[Path], expected_last: dict[str, str] | None = None) -> dict[str, int]:
    """Check the hash chain of each log and return ``{path: records}``.

    Args:
        paths: the logs.
        expected_last: ``{path: last hash}`` kept outside the logs; detects a cut tail too.

    Raises:
        AuditChainError: naming the log and the first record that breaks its chain.
    """
    counts = {}
    for path in paths:
        expected = (expected_last or {}).get(str(path))
        counts[str(path)] = verify_audit_log(Path(path), expected)
    return counts


def checkpoints_path(settings: Settings | None = None) -> Path:
    """Return the file of the audit checkpoints, ``SAODF_HOME/logs/audit_checkpoints.json``."""
    return (settings or get_settings()).log_dir / CHECKPOINTS_FILE


def load_checkpoints(settings: Settings | None = None) -> dict[str, dict[str, Any]]:
    """Return ``{log path: {"records", "last_hash", "verified_at"}}`` of earlier verifications.

    Raises:
        AuditChainError: when the checkpoint file is not a JSON object of that shape.
    """
    path = checkpoints_path(settings)
    if not path.exists():
        return {}
    try:
        logs = json.loads(path.read_text(encoding="utf-8"))["logs"]
        checkpoints = {
            str(name): {
                "records": int(entry["records"]),
                "last_hash": str(entry["last_hash"]),
                "verified_at": entry.get("verified_at"),
            }
            for name, entry in logs.items()
        }
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise AuditChainError(
            f"audit checkpoint file {path} is unreadable ({exc}), so it was edited or damaged. Inspect it, "
            "then run saodf audit verify --reset-checkpoints to store new checkpoints"
        ) from None
    return checkpoints


def _save_checkpoints(checkpoints: dict[str, dict[str, Any]], settings: Settings | None) -> None:
    path = checkpoints_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"logs": checkpoints}, indent=2, sort_keys=True) + "\n"
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def verify_checkpointed(
    paths: Iterable[Path],
    settings: Settings | None = None,
    *,
    reset: bool = False,
    check_missing: bool = False,
) -> dict[str, int]:
    """Check each log's chain against its stored checkpoint, then store new checkpoints.

    A hash chain alone cannot see removed tail records. The checkpoint of a log is the record
    count and last hash of its last successful verification. A later run requires the log to
    still hold that hash at that position, so records removed after a verification are
    detected. Logs that fail keep their old checkpoint.

    NOTE: the checkpoint file sits next to the logs, so someone who can rewrite both can hide
    a cut. Records appended after the last verification and then removed are not detected.

    Args:
        paths: the logs.
        settings: selects the home of the checkpoint file.
        reset: ignore the stored checkpoints of ``paths`` and store new ones.
        check_missing: also fail for checkpointed logs of the home's log folder that no
            longer exist (used when ``paths`` are the home's own logs).

    Returns:
        ``{path: records}``.

    Raises:
        AuditChainError: naming each failed log, its checkpoint and the fix.
    """
    settings = settings or get_settings()
    checkpoints = load_checkpoints(settings)
    counts: dict[str, int] = {}
    failures: list[str] = []
    names = [str(Path(path).resolve()) for path in paths]
    for name in names:
        stored = None if reset else checkpoints.get(name)
        checkpoint = (stored["records"], stored["last_hash"]) if stored else None
        try:
            count, last_hash = verify_chain(Path(name), checkpoint)
        except AuditChainError as exc:
            if stored:
                failures.append(
                    f"{exc} (checkpoint: {stored['records']} records, "
                    f"verified at {stored['verified_at']})"
                )
            else:
                failures.append(str(exc))
            continue
        counts[name] = count
        checkpoints[name] = {
            "records": count,
            "last_hash": last_hash,
            "verified_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        }
    if check_missing:
        log_dir = settings.log_dir.resolve()
        missing = [
            name
            for name in sorted(checkpoints)
            if name not in names and Path(name).parent == log_dir and not Path(name).exists()
        ]
        for name in missing:
            if reset:
                del checkpoints[name]
                continue
            failures.append(
                f"{name} is missing, but an earlier verification counted "
                f"{checkpoints[name]['records']} records in it at "
                f"{checkpoints[name]['verified_at']}; the whole log was removed"
            )
    _save_checkpoints(checkpoints, settings)
    if failures:
        logger.warning("audit verification failed for %d log(s)", len(failures))
        raise AuditChainError(
            "; ".join(failures) + ". Restore the logs from a backup; if the change was "
            "intended (a rotated log), run saodf audit verify --reset-checkpoints"
        )
    return counts


def _epoch(text: Any) -> float:
    try:
        return datetime.fromisoformat(str(text)).timestamp()
    except ValueError:
        return 0.0


def read_records(paths: Iterable[Path]) -> list[Record]:
    """Return the records of every log, oldest first; lines that are not JSON are skipped."""
    records = []
    for path in paths:
        with Path(path).open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    data = json.loads(raw)
                except ValueError:
                    logger.warning("audit log %s line %d is not JSON; verify the log", path, number)
                    continue
                if isinstance(data, dict):
                    records.append(Record(f"{path}:{number}", _epoch(data.get("time")), data))
    records.sort(key=lambda record: record.at)
    return records


def _windows(
    records: list[Record], rule: str, window: float, threshold: int, detail: str
) -> Iterator[Alert]:
    """Group each actor's records into windows from its first record; alert at ``threshold``."""
    by_actor: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        by_actor[record.actor].append(record)
    for actor, items in sorted(by_actor.items()):
        group: list[Record] = []
        for record in items + [None]:  # type: ignore[list-item]
            if record is not None and (not group or record.at - group[0].at <= window):
                group.append(record)
                continue
            if len(group) >= threshold:
                yield Alert(
                    rule=rule,
                    actor=actor,
                    count=len(group),
                    first=group[0].time_text,
                    last=group[-1].time_text,
                    evidence=[item.ref for item in group],
                    detail=detail,
                )
            group = [record] if record is not None else []


def brute_force(records: list[Record], config: RuleConfig) -> Iterator[Alert]:
    failed = [
        r
        for r in records
        if r.data.get("event") == "reject"
        and r.data.get("http_status") == 401
        and not str(r.data.get("path", "")).startswith(INGEST_PREFIX)
    ]
    yield from _windows(
        failed,
        "brute_force",
        config.window_seconds,
        config.brute_force_failures,
        "wrong or missing gateway credentials",
    )


def cross_tenant(records: list[Record], config: RuleConfig) -> Iterator[Alert]:
    attempts = [
        r
        for r in records
        if r.data.get("http_status") == 403
        or (
            r.data.get("target_namespace") is not None
            and r.data.get("target_namespace") != r.data.get("namespace")
        )
    ]
    yield from _windows(
        attempts, "cross_tenant", config.window_seconds, 1, "valid key used on another namespace"
    )


def invalid_token_burst(records: list[Record], config: RuleConfig) -> Iterator[Alert]:
    failed = [
        r
        for r in records
        if r.data.get("event") == "reject"
        and r.data.get("http_status") == 401
        and str(r.data.get("path", "")).startswith(INGEST_PREFIX)
    ]
    yield from _windows(
        failed,
        "invalid_token_burst",
        config.window_seconds,
        config.invalid_token_failures,
        "missing or unknown device tokens",
    )


def malformed_input(records: list[Record], config: RuleConfig) -> Iterator[Alert]:
    bad = [
        r
        for r in records
        if (r.data.get("event") == "reject" and r.data.get("http_status") in MALFORMED_STATUSES)
        or r.data.get("bad_device_id") is not None
        or (r.data.get("event") == "ingest" and r.data.get("invalid"))
    ]
    yield from _windows(
        bad,
        "malformed_input",
        config.window_seconds,
        config.malformed_requests,
        "malformed, oversized or path-traversing requests",
    )


def unusual_volume(records: list[Record], config: RuleConfig) -> Iterator[Alert]:
    calls: dict[str, dict[int, list[Record]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        if record.data.get("event") in ("invoke", "ingest"):
            bucket = int(record.at // config.volume_window_seconds)
            calls[record.actor][bucket].append(record)
    for actor, buckets in sorted(calls.items()):
        counts = {bucket: len(items) for bucket, items in buckets.items()}
        for bucket, items in sorted(buckets.items()):
            others = [count for other, count in counts.items() if other != bucket]
            usual = statistics.median(others) if others else 0.0
            limit = max(config.volume_min_calls, config.volume_factor * usual)
            if len(items) > limit:
                yield Alert(
                    rule="unusual_volume",
                    actor=actor,
                    count=len(items),
                    first=items[0].time_text,
                    last=items[-1].time_text,
                    evidence=[item.ref for item in items],
                    detail=(
                        f"{len(items)} calls in {config.volume_window_seconds:.0f} s, "
                        f"usually {usual:.0f}; the limit is {limit:.0f}"
                    ),
                )


def _authenticated(record: Record) -> bool:
    event = record.data.get("event")
    return isinstance(event, str) and event in AUTHENTICATED_EVENTS


def _presented_guess(record: Record) -> bool:
    """Return whether a record is a 401 for a key or token that was sent but is not valid."""
    data = record.data
    if data.get("event") != "reject" or data.get("http_status") != 401:
        return False
    if str(data.get("path", "")).startswith(INGEST_PREFIX):
        return bool(data.get("token_digest"))
    if data.get("key_digest"):
        return True
    # Clients may send a first request without credentials and retry after the 401
    # challenge, so only presented credentials count. Action gateway records without
    # ``key_digest`` come from gateway versions that did not log it.
    return "missing" not in str(data.get("reason", ""))


def _namespace_of(path: Any) -> str | None:
    parts = str(path).split("/")
    if len(parts) > 4 and parts[1:4] == ["api", "v1", "namespaces"]:
        return parts[4]
    return None


def unknown_source_guess(records: list[Record], config: RuleConfig) -> Iterator[Alert]:
    """Flag every wrong key or token from an address that had not authenticated before it."""
    authenticated: set[str] = set()
    for record in records:
        client = record.data.get("client")
        if client is None:
            continue
        client = str(client)
        if _authenticated(record):
            authenticated.add(client)
            continue
        if client in authenticated or not _presented_guess(record):
            continue
        namespace = _namespace_of(record.data.get("path"))
        target = f"namespace {namespace}" if namespace else str(record.data.get("path", "?"))
        yield Alert(
            rule="unknown_source_guess",
            actor=record.actor,
            count=1,
            first=record.time_text,
            last=record.time_text,
            evidence=[record.ref],
            detail=f"invalid credentials for {target} from an address that never authenticated",
        )


def _presented_digest(record: Record) -> str | None:
    data = record.data
    digest = data.get("token_digest") or data.get("key_digest")
    return str(digest) if digest else None


def revoked_key(records: list[Record], config: RuleConfig) -> Iterator[Alert]:
    """Flag each use of a rotated-out key or token, naming its tenant and the source.

    The source is new when the key's owner (its uuid, or the token's device) never
    authenticated from that address before.
    """
    if not config.revoked_digests:
        return
    owner_sources: dict[str, set[str]] = defaultdict(set)
    for record in records:
        client = str(record.data.get("client", "?"))
        if _authenticated(record):
            owner_sources[record.actor].add(client)
            continue
        digest = _presented_digest(record)
        if digest is None or digest not in config.revoked_digests:
            continue
        tenant, owner = config.revoked_digests[digest]
        known = client in owner_sources[owner]
        origin = "an address its owner used before" if known else "a new address"
        yield Alert(
            rule="revoked_key",
            actor=record.actor,
            count=1,
            first=record.time_text,
            last=record.time_text,
            evidence=[record.ref],
            detail=f"rotated-out key {owner} of tenant {tenant} presented from {origin} ({client})",
        )


RULES: dict[str, Callable[[list[Record], RuleConfig], Iterator[Alert]]] = {
    "brute_force": brute_force,
    "cross_tenant": cross_tenant,
    "invalid_token_burst": invalid_token_burst,
    "malformed_input": malformed_input,
    "unusual_volume": unusual_volume,
    "unknown_source_guess": unknown_source_guess,
    "revoked_key": revoked_key,
}


def secret_digest(secret: str) -> str:
    """Return the prefix of sha256(secret) that audit records carry instead of the secret."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()[:DIGEST_CHARS]


def record_revoked_keys(
    settings: Settings, tenant: str, gateway_key: str | None, device_ids: Iterable[str] = ()
) -> int:
    """Add a tenant's current gateway key and device tokens to the revoked list.

    Call it before the keys are replaced. Only digests are kept: the gateway key's
    :func:`secret_digest` and uuid, and each device token's digest from the token store.

    Returns:
        The number of entries added.
    """
    from streaming.tokens import TOKENS_FILE

    revoked_at = datetime.now().astimezone().isoformat(timespec="seconds")
    entries = []
    if gateway_key:
        entries.append(
            {
                "tenant": tenant,
                "kind": "gateway_key",
                "key_id": gateway_key.split(":", 1)[0],
                "digest": secret_digest(gateway_key),
                "revoked_at": revoked_at,
            }
        )
    tokens_path = secrets_dir(settings) / TOKENS_FILE
    stored = json.loads(tokens_path.read_text(encoding="utf-8")) if tokens_path.exists() else {}
    for device_id in device_ids:
        digest = stored.get("devices", {}).get(device_id, {}).get("sha256")
        if digest:
            entries.append(
                {
                    "tenant": tenant,
                    "kind": "device_token",
                    "device_id": device_id,
                    "digest": digest[:DIGEST_CHARS],
                    "revoked_at": revoked_at,
                }
            )
    if entries:
        write_json_secret(
            REVOKED_KEYS_FILE, {"revoked": [*revoked_keys(settings), *entries]}, settings
        )
        logger.info("recorded %d revoked keys of tenant %s", len(entries), tenant)
    return len(entries)


def revoked_keys(settings: Settings | None = None) -> list[dict[str, Any]]:
    """Return the revoked-key entries of a home, oldest first; [] when there are none."""
    settings = settings or get_settings()
    path = secrets_dir(settings) / REVOKED_KEYS_FILE
    if not path.exists():
        return []
    try:
        entries = json.loads(path.read_text(encoding="utf-8")).get("revoked", [])
    except (ValueError, AttributeError) as exc:
        logger.error("revoked-key list %s is unreadable, ignoring it: %s", path, exc)
        return []
    return [entry for entry in entries if isinstance(entry, dict) and entry.get("digest")]


def rule_config(settings: Settings | None = None, **thresholds: Any) -> RuleConfig:
    """Return the rule settings with a home's revoked keys and the given threshold overrides."""
    revoked = {
        str(entry["digest"]): (
            str(entry.get("tenant", "?")),
            str(entry.get("key_id") or entry.get("device_id") or "?"),
        )
        for entry in revoked_keys(settings)
    }
    return RuleConfig(**thresholds, revoked_digests=revoked)


def detect(records: list[Record], config: RuleConfig | None = None) -> list[Alert]:
    """Run every rule over ``records`` and return the alerts, oldest first."""
    config = config or RuleConfig()
    alerts = [alert for rule in RULES.values() for alert in rule(records, config)]
    alerts.sort(key=lambda alert: (alert.first, alert.rule, alert.actor))
    return alerts


def scan(paths: Iterable[Path], config: RuleConfig | None = None) -> list[Alert]:
    """Read the logs and return their alerts."""
    return detect(read_records(paths), config)


def watch(
    paths: Iterable[Path],
    on_alert: Callable[[Alert], None],
    config: RuleConfig | None = None,
    interval: float = 5.0,
    max_seconds: float = 60.0,
) -> int:
    """Scan the logs every ``interval`` seconds for ``max_seconds``; report each alert once.

    Returns:
        The number of alerts reported.
    """
    paths = list(paths)
    config = config or rule_config()
    seen: set[tuple[str, str, str]] = set()
    deadline = time.monotonic() + max_seconds
    while True:
        for alert in scan([path for path in paths if Path(path).exists()], config):
            if alert.key() not in seen:
                seen.add(alert.key())
                logger.warning("alert %s for %s: %d records", alert.rule, alert.actor, alert.count)
                on_alert(alert)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return len(seen)
        time.sleep(min(interval, remaining))


__all__ = [
    "Alert",
    "AuditChainError",
    "Record",
    "RuleConfig",
    "audit_paths",
    "detect",
    "read_records",
    "record_revoked_keys",
    "revoked_keys",
    "rule_config",
    "run_detection",
    "scan",
    "secret_digest",
    "verify",
    "watch",
]


def run_detection(
    settings: Settings | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    config: RuleConfig | None = None,
) -> list[Alert]:
    """Scan a home's audit logs, append the alerts ending in ``[since, until)`` to alerts.jsonl.

    Records before ``since`` still count towards windows and usual volumes, so a burst that
    started in the previous interval is reported once, in the interval where it ends.
    """
    settings = settings or get_settings()
    config = config or rule_config(settings)
    low = since.timestamp() if since else float("-inf")
    high = until.timestamp() if until else float("inf")
    alerts = [
        alert for alert in scan(audit_paths(settings), config) if low <= _epoch(alert.last) < high
    ]
    if alerts:
        out = settings.log_dir / "alerts.jsonl"
        with out.open("a", encoding="utf-8") as handle:
            for alert in alerts:
                handle.write(json.dumps(alert.to_dict(), sort_keys=True) + "\n")
        logger.warning("%d audit alerts written to %s", len(alerts), out)
    return alerts

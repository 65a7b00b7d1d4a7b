"""Attack replay: legal calls and attacks against the action and ingest gateways.

The benchmark starts a private Tansu broker and moto_server on free 127.0.0.1 ports, then
an action gateway and an ingest gateway in this process, in a fresh home with two tenants,
``acme`` and ``beta``, each with three devices. The action gateway runs an ``echo`` action
that, like ``forecast``, rejects device ids that break the telemetry contract. Before the
replay, ``acme``'s keys are rotated, so its old gateway key and device tokens are
rotated out, and the token of ``beta.pump-3`` is revoked as ``saodf device token revoke``
does it.

Legal calls come from 127.0.0.1 with the tenants' current gateway keys and the device
tokens of ``acme.pump-1``, ``acme.pump-2``, ``beta.pump-1`` and ``beta.pump-2``. They are
interleaved with bursts of attacks, each burst from its own loopback source address
(127.0.0.10 and up). Both gateways get these classes:

- ``missing_credentials``: no Authorization header;
- ``wrong_credentials``: a random ``uuid:key`` or a random bearer token;
- ``cross_tenant``: ``acme``'s key on ``beta``'s namespace, or ``acme.pump-1``'s token with
  readings of ``beta``'s devices;
- ``path_traversal``: device ids such as ``../../etc/passwd`` with valid credentials;
- ``oversized_body``: a body over the gateway's size limit, or at the ingest gateway also a
  batch over its reading limit;
- ``malformed_body``: bodies that are not JSON objects or not valid readings;
- ``replayed_key``: ``acme``'s gateway key or device tokens from before the rotation;
- ``single_wrong_credentials``: one wrong key or token per source address, below the
  brute-force and invalid-token thresholds, to measure what a careful guesser gets past
  the rules;
- ``single_replayed_key``: one call with a rotated-out key or token per source address;
- ``replayed_key_legal_source``: calls with a rotated-out key or token from 127.0.0.1, the
  address of the legal calls, so that only the key itself can give it away. Per gateway
  there are fewer of them than the brute-force or invalid-token threshold. The
  ``revoked_key`` rule matches the ``key_digest`` or ``token_digest`` of their 401 records
  against the rotated-out keys.

The ingest gateway also gets ``revoked_token``, bursts with the revoked token of
``beta.pump-3``, and ``revoked_token_legal_source``, one call with that token from 127.0.0.1.

Each call leaves one or more audit records in its gateway's log, all written before the
response. The benchmark notes the log's size before and after each call to tell which
records are whose. A call is rejected when the gateway returns 4xx or 5xx, and detected
when one of its records is evidence in an alert of :func:`saodf.audit_tools.scan` over
both logs.
"""

from __future__ import annotations

import base64
import bisect
import http.client
import json
import logging
import os
import random
import secrets
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from saodf.audit_tools import Alert, RuleConfig
from saodf.config import Settings
from saodf.telemetry import format_timestamp

logger = logging.getLogger(__name__)

ECHO_CODE = """
import re

PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def main(args):
    device_id = args.get("device_id")
    if not isinstance(device_id, str) or not PATTERN.match(device_id):
        return {"error": f"device_id {device_id!r} is invalid"}
    return {"device_id": device_id, "mean": [1.0, 2.0]}
"""
GATEWAYS = ("action", "ingest")
MAX_BODY_BYTES = 64 * 1024
INGEST_MAX_BATCH = 100
DEVICES = ("pump-1", "pump-2", "pump-3")
# Devices that send legal readings. beta.pump-3's token is revoked before the replay.
LEGAL_DEVICES = ("acme.pump-1", "acme.pump-2", "beta.pump-1", "beta.pump-2")
REVOKED_DEVICE = "beta.pump-3"
SHARED_CLASSES = (
    "missing_credentials",
    "wrong_credentials",
    "cross_tenant",
    "path_traversal",
    "oversized_body",
    "malformed_body",
    "replayed_key",
    "single_wrong_credentials",
    "single_replayed_key",
    "replayed_key_legal_source",
)
ATTACK_CLASSES = {
    "action": SHARED_CLASSES,
    "ingest": (*SHARED_CLASSES, "revoked_token", "revoked_token_legal_source"),
}
# Classes sent as one call per source address instead of a burst.
SINGLE_CALL_CLASSES = (
    "single_wrong_credentials",
    "single_replayed_key",
    "replayed_key_legal_source",
    "revoked_token_legal_source",
)
# Classes sent from the legal calls' address instead of an address of their own.
LEGAL_SOURCE_CLASSES = ("replayed_key_legal_source", "revoked_token_legal_source")
TRAVERSALS = ("../../etc/passwd", "..%2f..%2fetc", "a/../../b", "/etc/shadow", "..\\..\\win.ini")
INGEST_TRAVERSALS = (*TRAVERSALS, "acme.pump-1/../../beta.pump-1", "../beta.pump-1")
MALFORMED = (b"{not json", b"[1, 2, 3]", b'"text"', b"\xff\xfe", b'{"device_id": ')
INGEST_MALFORMED = (
    *MALFORMED,
    b"[]",
    b"[" * 20 + b"]" * 20,
    b'{"device_id": "acme.pump-1", "temperature": 21.5}',
    b'{"device_id": "acme.pump-1", "timestamp": "yesterday", "temperature": 21.5}',
)
TELEMETRY_PATH = "/v1/telemetry"
T0 = datetime(2025, 4, 20, tzinfo=timezone.utc)


@dataclass
class Credentials:
    """The keys and tokens that legal calls and attacks present."""

    gateway_keys: dict[str, str]
    old_gateway_key: str
    device_tokens: dict[str, str]
    old_device_tokens: dict[str, str]
    revoked_token: str


@dataclass
class Call:
    """One request: its class, status, and the byte range its records take in the audit log."""

    gateway: str
    kind: str
    status: int
    start: int
    end: int
    lines: range = range(0)


def _basic(key: str) -> str:
    return "Basic " + base64.b64encode(key.encode("utf-8")).decode("ascii")


def _bearer(token: str) -> str:
    return f"Bearer {token}"


def _send(
    port: int,
    source: str,
    path: str,
    body: bytes,
    authorization: str | None,
) -> int:
    """Send one POST from ``source`` and return the HTTP status."""
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=30, source_address=(source, 0)
    )
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    if authorization is not None:
        headers["Authorization"] = authorization
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    except (ConnectionError, http.client.HTTPException) as exc:
        # The gateway may close the socket before reading a rejected body, so the client can
        # see a reset instead of the status: the request still got no service.
        logger.info("call from %s to %s ended without a response: %s", source, path, exc)
        return 499
    finally:
        connection.close()


def _action_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/actions/echo?blocking=true&result=true"


def _action_attack(kind: str, credentials: Credentials, rng: random.Random) -> tuple:
    """Return ``(path, body, authorization)`` of one attack on the action gateway."""
    acme = _basic(credentials.gateway_keys["acme"])
    legal_body = json.dumps({"device_id": "acme.pump-1"}).encode()
    if kind == "missing_credentials":
        return _action_path("acme"), legal_body, None
    if kind in ("wrong_credentials", "single_wrong_credentials"):
        return (
            _action_path("acme"),
            legal_body,
            _basic(f"{uuid.uuid4()}:{secrets.token_urlsafe(48)}"),
        )
    if kind == "cross_tenant":
        return _action_path(rng.choice(["beta", "saodf"])), legal_body, acme
    if kind == "path_traversal":
        return (
            _action_path("acme"),
            json.dumps({"device_id": rng.choice(TRAVERSALS)}).encode(),
            acme,
        )
    if kind == "oversized_body":
        padding = "x" * (MAX_BODY_BYTES + 1)
        return (
            _action_path("acme"),
            json.dumps({"device_id": "acme.pump-1", "pad": padding}).encode(),
            acme,
        )
    if kind == "malformed_body":
        return _action_path("acme"), rng.choice(MALFORMED), acme
    if kind in ("replayed_key", "single_replayed_key", "replayed_key_legal_source"):
        return _action_path("acme"), legal_body, _basic(credentials.old_gateway_key)
    raise ValueError(f"attack class {kind!r} is unknown; use one of {ATTACK_CLASSES['action']}")


def _reading(device_id: str, number: int) -> dict[str, Any]:
    """Return a valid reading of ``device_id`` taken ``number`` seconds after :data:`T0`."""
    return {
        "device_id": device_id,
        "timestamp": format_timestamp(T0 + timedelta(seconds=number)),
        "temperature": 20.0 + number % 10,
    }


def _ingest_attack(kind: str, credentials: Credentials, rng: random.Random) -> tuple:
    """Return ``(path, body, authorization)`` of one attack on the ingest gateway."""
    acme = _bearer(credentials.device_tokens["acme.pump-1"])
    legal_body = json.dumps(_reading("acme.pump-1", rng.randrange(86_400))).encode()
    if kind == "missing_credentials":
        return TELEMETRY_PATH, legal_body, None
    if kind in ("wrong_credentials", "single_wrong_credentials"):
        return TELEMETRY_PATH, legal_body, _bearer(secrets.token_urlsafe(32))
    if kind == "cross_tenant":
        other = rng.choice(["beta.pump-1", "beta.pump-2"])
        return TELEMETRY_PATH, json.dumps(_reading(other, rng.randrange(86_400))).encode(), acme
    if kind == "path_traversal":
        reading = _reading(rng.choice(INGEST_TRAVERSALS), rng.randrange(86_400))
        return TELEMETRY_PATH, json.dumps(reading).encode(), acme
    if kind == "oversized_body":
        if rng.random() < 0.5:
            reading = {**_reading("acme.pump-1", 0), "pad": "x" * (MAX_BODY_BYTES + 1)}
            return TELEMETRY_PATH, json.dumps(reading).encode(), acme
        batch = [_reading("acme.pump-1", number) for number in range(INGEST_MAX_BATCH + 1)]
        return TELEMETRY_PATH, json.dumps(batch).encode(), acme
    if kind == "malformed_body":
        return TELEMETRY_PATH, rng.choice(INGEST_MALFORMED), acme
    if kind in ("replayed_key", "single_replayed_key", "replayed_key_legal_source"):
        token = credentials.old_device_tokens[rng.choice(["acme.pump-1", "acme.pump-2"])]
        return TELEMETRY_PATH, legal_body, _bearer(token)
    if kind in ("revoked_token", "revoked_token_legal_source"):
        reading = _reading(REVOKED_DEVICE, rng.randrange(86_400))
        return TELEMETRY_PATH, json.dumps(reading).encode(), _bearer(credentials.revoked_token)
    raise ValueError(f"attack class {kind!r} is unknown; use one of {ATTACK_CLASSES['ingest']}")


def _legal_request(
    gateway: str, credentials: Credentials, rng: random.Random, number: int
) -> tuple:
    """Return ``(path, body, authorization)`` of one legal call to ``gateway``."""
    if gateway == "action":
        tenant = rng.choice(["acme", "beta"])
        body = json.dumps({"device_id": f"{tenant}.pump-{rng.randint(1, 3)}"}).encode()
        return _action_path(tenant), body, _basic(credentials.gateway_keys[tenant])
    device_id = rng.choice(LEGAL_DEVICES)
    readings = [_reading(device_id, number * 5 + offset) for offset in range(rng.randint(1, 5))]
    body = json.dumps(readings[0] if len(readings) == 1 else readings).encode()
    return TELEMETRY_PATH, body, _bearer(credentials.device_tokens[device_id])


def _plan(
    legal_calls: int, bursts_per_class: int, thresholds: dict[str, int], rng: random.Random
) -> list[tuple[str, str, str]]:
    """Return the shuffled ``(gateway, kind, burst)`` entries of the replay.

    ``thresholds`` maps each gateway to the failed-login count per address that the
    brute-force or invalid-token rule flags. The legal-source classes of a gateway share
    fewer calls than that, because more calls from one address within the rules' window
    would add up to a burst instead of testing lone calls.
    """
    plan: list[tuple[str, str, str]] = []
    for gateway in GATEWAYS:
        plan += [(gateway, "legal", "") for _ in range(legal_calls)]
        legal_source = [k for k in ATTACK_CLASSES[gateway] if k in LEGAL_SOURCE_CLASSES]
        legal_source_calls = max(1, (thresholds[gateway] - 1) // len(legal_source))
        for kind in ATTACK_CLASSES[gateway]:
            count = bursts_per_class
            if kind in LEGAL_SOURCE_CLASSES:
                count = min(count, legal_source_calls)
            plan += [(gateway, kind, f"{gateway}:{kind}:{burst}") for burst in range(count)]
    rng.shuffle(plan)
    return plan


def _log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _replay(
    plan: list[tuple[str, str, str]],
    ports: dict[str, int],
    logs: dict[str, Path],
    credentials: Credentials,
    rng: random.Random,
    burst_size: int,
) -> list[Call]:
    """Send every call of ``plan`` in order and return them with their audit byte ranges."""
    sources: dict[str, str] = {}
    calls: list[Call] = []
    legal_number = 0
    for gateway, kind, burst in plan:
        if kind == "legal":
            requests = [_legal_request(gateway, credentials, rng, legal_number)]
            legal_number += 1
            source = "127.0.0.1"
        else:
            attack = _action_attack if gateway == "action" else _ingest_attack
            size = 1 if kind in SINGLE_CALL_CLASSES else burst_size
            requests = [attack(kind, credentials, rng) for _ in range(size)]
            if kind in LEGAL_SOURCE_CLASSES:
                source = "127.0.0.1"
            else:
                source = sources.setdefault(
                    burst, f"127.0.{len(sources) // 240}.{10 + len(sources) % 240}"
                )
        for path, body, authorization in requests:
            start = _log_size(logs[gateway])
            status = _send(ports[gateway], source, path, body, authorization)
            calls.append(Call(gateway, kind, status, start, _log_size(logs[gateway])))
    return calls


def _assign_lines(calls: list[Call], logs: dict[str, Path]) -> None:
    """Set each call's audit line numbers from its byte range.

    Raises:
        RuntimeError: when a call left no record, or a log has records of no call.
    """
    for gateway, path in logs.items():
        data = path.read_bytes() if path.exists() else b""
        starts: list[int] = []
        offset = 0
        for line in data.split(b"\n"):
            if line:
                starts.append(offset)
            offset += len(line) + 1
        covered = 0
        for call in calls:
            if call.gateway != gateway:
                continue
            first = bisect.bisect_left(starts, call.start)
            last = bisect.bisect_left(starts, call.end)
            call.lines = range(first + 1, last + 1)
            if not call.lines:
                raise RuntimeError(
                    f"a {call.kind} call to the {gateway} gateway (status {call.status}) left no "
                    f"record in {path}; every call must leave at least one"
                )
            covered += len(call.lines)
        if covered != len(starts):
            raise RuntimeError(
                f"{path} has {len(starts)} records but the calls account for {covered}; "
                "something else wrote to the log during the replay"
            )


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _figures(calls: list[Call], logs: dict[str, Path], alerts: list[Alert]) -> dict[str, Any]:
    """Return the calls, rejected share and detected share per gateway and class, and overall."""
    flagged = {ref for alert in alerts for ref in alert.evidence}
    refs = {gateway: str(path) for gateway, path in logs.items()}

    def detected(call: Call) -> bool:
        return any(f"{refs[call.gateway]}:{line}" in flagged for line in call.lines)

    figures: dict[str, Any] = {}
    totals: dict[tuple[str, bool], list[int]] = {}
    kinds = ["legal", *dict.fromkeys(k for gateway in GATEWAYS for k in ATTACK_CLASSES[gateway])]
    for scope in (*GATEWAYS, ""):
        prefix = f"{scope}_" if scope else ""
        for kind in kinds:
            chosen = [c for c in calls if c.kind == kind and (not scope or c.gateway == scope)]
            if not chosen:
                continue
            rejected = sum(1 for call in chosen if call.status >= 400)
            found = sum(1 for call in chosen if detected(call))
            group = totals.setdefault((scope, kind == "legal"), [0, 0, 0])
            group[0] += len(chosen)
            group[1] += rejected
            group[2] += found
            figures[f"{prefix}{kind}_calls"] = len(chosen)
            figures[f"{prefix}{kind}_rejected_share"] = _share(rejected, len(chosen))
            figures[f"{prefix}{kind}_detected_share"] = _share(found, len(chosen))
    for scope in (*GATEWAYS, ""):
        prefix = f"{scope}_" if scope else ""
        attack_total, attack_rejected, attack_detected = totals[(scope, False)]
        legal_total, _, legal_flagged = totals[(scope, True)]
        figures[f"{prefix}attacks_rejected_share"] = _share(attack_rejected, attack_total)
        figures[f"{prefix}attacks_detected_share"] = _share(attack_detected, attack_total)
        figures[f"{prefix}legal_flagged_share"] = _share(legal_flagged, legal_total)
    figures["alerts"] = len(alerts)
    return figures


def _goals(figures: dict[str, Any]) -> dict[str, Any]:
    from saodf.bench import goal

    return {
        "attacks_rejected_share": goal(1.0, figures["attacks_rejected_share"]),
        "attacks_detected_share": goal(0.999, figures["attacks_detected_share"]),
        "legal_flagged_share": goal(0.001, figures["legal_flagged_share"], direction="min"),
    }


def _notes(
    legal_calls: int, bursts_per_class: int, burst_size: int, config: RuleConfig
) -> list[str]:
    return [
        f"{legal_calls} legal calls per gateway and {bursts_per_class} bursts of {burst_size} "
        "calls per attack class and gateway, shuffled, each burst from its own 127.0.x.y "
        "source address.",
        "Targets: an in-process action gateway with an echo action that rejects invalid "
        "device ids, and an in-process ingest gateway on a private Tansu broker and "
        "moto_server, both on 127.0.0.1. Redis, MQTT and the lake writer are not attacked "
        "by this benchmark.",
        f"Both gateways reject bodies over {MAX_BODY_BYTES} bytes, and the ingest gateway "
        f"batches over {INGEST_MAX_BATCH} readings.",
        f"Rules use their default thresholds except volume_min_calls={config.volume_min_calls}, "
        "set above the legal rate because the legal traffic has no earlier history.",
        "Figures named action_* and ingest_* are per gateway, the others over both. Detected "
        "share counts an attack call as detected when one of its audit records is evidence in "
        "an alert. Lone wrong-credential calls stay below the brute-force threshold of "
        f"{config.brute_force_failures} and the invalid-token threshold of "
        f"{config.invalid_token_failures} failures per {config.window_seconds:.0f} s. The "
        "unknown_source_guess rule flags them because their address never authenticated.",
        "replayed_key_legal_source and revoked_token_legal_source come from the legal calls' "
        "address, so neither the brute-force, invalid-token nor unknown_source_guess rule can "
        "flag them. The revoked_key rule matches the key_digest or token_digest of their 401 "
        "records against the rotated-out and revoked keys.",
    ]


def _credentials(settings: Settings) -> Credentials:
    """Create the tenants, rotate ``acme``'s keys, revoke one token and return the credentials."""
    from saodf.cli_device import revoke_token
    from saodf.secrets import gateway_keys
    from saodf.tenants import create_tenant, rotate_keys

    gateway_keys(settings)
    keys: dict[str, str] = {}
    tokens: dict[str, str] = {}
    for name in ("acme", "beta"):
        issued = create_tenant(name, devices=DEVICES, settings=settings)[1]
        keys[name] = issued["gateway_key"]
        tokens.update(issued["device_tokens"])
    old_key = keys["acme"]
    old_tokens = {device: token for device, token in tokens.items() if device.startswith("acme.")}
    rotated = rotate_keys("acme", settings=settings)
    keys["acme"] = rotated["gateway_key"]
    tokens.update(rotated["device_tokens"])
    revoked = tokens.pop(REVOKED_DEVICE)
    if not revoke_token(REVOKED_DEVICE, settings):
        raise RuntimeError(f"device {REVOKED_DEVICE} had no token to revoke")
    return Credentials(keys, old_key, tokens, old_tokens, revoked)


def run(settings: Settings, quick: bool) -> dict:
    """Replay legal calls and attack bursts against both gateways and score the audit rules."""
    from actions.gateway import serve
    from actions.pool import ActionSpec
    from saodf.audit_tools import rule_config, scan
    from saodf.bench import local_services
    from saodf.stack import process
    from streaming.ingest_config import IngestConfig
    from streaming.ingest_gateway import IngestGateway

    legal_calls = 200 if quick else 2000
    bursts_per_class = 5 if quick else 30
    burst_size = 3
    rng = random.Random(7)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    with tempfile.TemporaryDirectory(prefix="saodf-bench-security-") as scratch:
        with local_services(["broker", "moto"], settings, Path(scratch)) as local:
            credentials = _credentials(local)
            # Legal traffic arrives as a burst with no earlier history, so the volume rule only
            # has its floor to go by. The floor sits above the bench's legal rate per key.
            config = rule_config(local, volume_min_calls=legal_calls)
            thresholds = {
                "action": config.brute_force_failures,
                "ingest": config.invalid_token_failures,
            }
            plan = _plan(legal_calls, bursts_per_class, thresholds, rng)
            action = serve(
                local,
                actions=[ActionSpec(name="echo", code=ECHO_CODE, timeout_seconds=30.0)],
                port=0,
                max_body_bytes=MAX_BODY_BYTES,
            )
            ingest = None
            try:
                ingest = IngestGateway(
                    local,
                    IngestConfig(
                        http_port=process.free_port(),
                        max_body_bytes=MAX_BODY_BYTES,
                        max_batch=INGEST_MAX_BATCH,
                    ),
                )
                ingest.start()
                ports = {"action": action.port, "ingest": ingest.server.server_address[1]}
                logs = {"action": action.gateway.audit.path, "ingest": ingest.audit.path}
                started = time.perf_counter()
                calls = _replay(plan, ports, logs, credentials, rng, burst_size)
                elapsed = time.perf_counter() - started
            finally:
                if ingest is not None:
                    ingest.stop()
                action.close()
            _assign_lines(calls, logs)
            alerts = scan(list(logs.values()), config)
            figures = _figures(calls, logs, alerts)
    figures["calls_per_s"] = len(calls) / elapsed
    return {
        "figures": figures,
        "reference": {},
        "ratios": {},
        "goals": _goals(figures),
        "notes": _notes(legal_calls, bursts_per_class, burst_size, config),
    }

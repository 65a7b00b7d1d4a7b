"""Device ingest gateway: ``POST /v1/telemetry`` over HTTP on 127.0.0.1, routed by load.

Routes:

- ``POST /v1/telemetry``: the body is one reading (a JSON object) or a batch (a JSON
  array of up to ``max_batch`` readings), sent with ``Authorization: Bearer <token>``
  where the token is the device's own (see :mod:`streaming.tokens`). Every reading must
  carry the token's ``device_id``. The response is 202 when every reading was stored in
  Kafka or SQS, or dead-lettered because no broker could take it. It is 400 when some
  readings were invalid: those went to the dead-letter queue with the reason and the raw
  payload, and the others were stored. The body lists each reading's outcome.
  401 means a missing or unknown token, 411 a missing or invalid Content-Length, 413 a
  body or batch over the limit, and 500 a dead-letter write that failed everywhere.
  Nothing is stored for those, so the client must send the request again.
- ``GET /health``: liveness and each broker's reachability and load score.
- ``GET /metrics``: Prometheus text of the routing decisions and broker loads of the
  default deployment's readings.
- ``GET /openapi.json``: the OpenAPI 3 description of these routes (``ingest_openapi.json``
  beside this module), served without a token.

Other methods on these paths get 405 with an ``Allow`` header, and other paths get 404.

Readings of a tenant's device go through a router of the tenant's own (see
:class:`TenantRouters`): to its topics ``t.<tenant>.telemetry.raw`` and
``t.<tenant>.telemetry.dlq`` and its SQS queues ``t-<tenant>-telemetry-raw``, never to
another tenant's or the default deployment's. A reading whose ``device_id`` is not the
authenticated device's is invalid. The attempt is also audited as a ``reject`` record
whose ``target_namespace`` is the namespace of the claimed device.

A claimed ``device_id`` may be a secret sent by mistake (a device token, say). Responses
and dead-letter reasons therefore name it only by ``sha256:`` and the first 16 hex
characters of its SHA-256 digest (the prefix that ``token_digest`` uses too). Audit records
and logs name registered device ids verbatim and unknown ids by that digest.

Run it with ``python -m streaming.ingest_gateway`` (port ``SAODF_INGEST_PORT``).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from actions.audit import AuditLog
from saodf.audit_tools import secret_digest
from saodf.config import Settings, get_settings
from saodf.errors import InvalidTelemetryError
from saodf.log import configure_logging
from saodf.secrets import secrets_dir
from saodf.telemetry import validate_message
from saodf.tenants import Tenant, TenantRegistry, tenant_settings
from streaming.ingest_config import IngestConfig, with_name_overrides
from streaming.ingest_router import DeadLetter, DeadLetterError, IngestReading, IngestRouter
from streaming.kafka import admin_config
from streaming.tokens import TOKENS_FILE, DeviceTokens, list_token_devices

logger = logging.getLogger(__name__)

TELEMETRY_PATH = "/v1/telemetry"
OPENAPI_PATH = "/openapi.json"
OPENAPI_FILE = Path(__file__).with_name("ingest_openapi.json")
# The method each route accepts. Other methods on these paths get 405 with it as Allow.
ROUTE_METHODS = {
    TELEMETRY_PATH: "POST",
    "/health": "GET",
    "/metrics": "GET",
    OPENAPI_PATH: "GET",
}
# A batch of readings claiming many other devices gets one audit record per device for the
# first ones only, so that one request cannot make the gateway fsync a thousand records.
MAX_AUDITED_CLAIMS = 10
# A batch is an array of flat reading objects, so two levels. Deeper bodies are rejected whole.
MAX_NESTING = 8
# How long /health reuses its last check that the raw topic exists.
TOPIC_CHECK_TTL_S = 2.0


class BatchTooLargeError(InvalidTelemetryError):
    """A batch with more readings than the gateway accepts in one request."""


@dataclass
class IngestResult:
    """Outcome of one request or MQTT message: counts and each reading's status."""

    request_id: str
    results: list[dict[str, Any]] = field(default_factory=list)
    # The device_id strings, of any form, that readings claimed while another device had
    # authenticated. They may be secrets: see redacted_device_id.
    claimed_devices: list[str] = field(default_factory=list)

    @property
    def invalid(self) -> int:
        return sum(1 for r in self.results if r.get("kind") == "invalid")

    @property
    def dead_lettered(self) -> int:
        return sum(1 for r in self.results if r["status"] == "dlq")

    @property
    def accepted(self) -> int:
        return sum(1 for r in self.results if r["status"] in ("kafka", "sqs"))

    @property
    def audit_outcome(self) -> str:
        """The audit ``outcome``: ``rejected`` when every reading was invalid.

        It is ``accepted`` when no reading was invalid, and ``partly rejected`` otherwise.
        A valid reading dead-lettered because no broker could take it counts as accepted.
        """
        if not self.invalid:
            return "accepted"
        if self.invalid == len(self.results):
            return "rejected"
        return "partly rejected"

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "accepted": self.accepted,
            "dead_lettered": self.dead_lettered,
            "invalid": self.invalid,
            "results": self.results,
        }


def _nesting_depth(value: Any, limit: int) -> int:
    """Return how deeply ``value`` nests lists and dicts, counting no further than ``limit + 1``."""
    deepest = 0
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if not isinstance(item, (list, dict)):
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        children = item.values() if isinstance(item, dict) else item
        pending.extend((child, depth + 1) for child in children)
    return deepest


def _split_payload(body: bytes, max_batch: int) -> tuple[list[tuple[Any, bytes]], str | None]:
    """Decode ``body`` into ``(item, raw_item)`` pairs, or return the reason it is invalid.

    Raises:
        BatchTooLargeError: when the batch has more than ``max_batch`` readings.
    """
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return [], f"payload is not JSON ({exc})"
    depth = _nesting_depth(decoded, MAX_NESTING)
    if depth > MAX_NESTING:
        # The contract quotes bad values with repr(), and batch items are encoded again. Both
        # raise RecursionError or TypeError on values nested about 1,000 or 255 levels deep.
        return [], (
            f"payload nests arrays or objects more than {MAX_NESTING} levels deep; "
            "send one flat reading object or an array of them"
        )
    if isinstance(decoded, dict):
        return [(decoded, body)], None
    if not isinstance(decoded, list):
        return [], (
            f"payload is a JSON {type(decoded).__name__}, not a reading object or an array of "
            "reading objects"
        )
    if not decoded:
        return [], "batch is empty; send one reading object or a non-empty array"
    if len(decoded) > max_batch:
        raise BatchTooLargeError(
            f"batch has {len(decoded)} readings; the maximum is {max_batch}, so split it"
        )
    return [(item, orjson.dumps(item)) for item in decoded], None


_PLAIN_SEGMENT = re.compile(r"^[A-Za-z0-9._-]{0,16}$")


def path_label(path: str) -> str:
    """Return ``path`` for messages, logs and audit records, or a digest if it may hold a secret.

    Known routes and paths made of short plain segments are kept, so a typo stays readable.
    A longer segment could be a token pasted into the URL, so such a path is named by its
    digest and length only. The query string is never kept.
    """
    route = path.split("?", 1)[0]
    if route in ROUTE_METHODS:
        return route
    segments = route.split("/")
    if len(route) <= 100 and all(_PLAIN_SEGMENT.match(part) for part in segments):
        return route
    return f"sha256:{secret_digest(route)} ({len(route)} characters)"


def redacted_device_id(device_id: str) -> str:
    """Return ``sha256:`` and the digest prefix that names a device id without quoting it."""
    return f"sha256:{secret_digest(device_id)}"


class KnownDevices:
    """Device ids with an ingest token or listed by a tenant, read again when the files change."""

    def __init__(self, settings: Settings, registry: TenantRegistry):
        self.settings = settings
        self.registry = registry
        self._path = secrets_dir(settings) / TOKENS_FILE
        self._mtime_ns: int | None = None
        self._devices: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def __contains__(self, device_id: object) -> bool:
        if not isinstance(device_id, str):
            return False
        if self.registry.owner(device_id) is not None:
            return True
        with self._lock:
            try:
                mtime = self._path.stat().st_mtime_ns
            except FileNotFoundError:
                mtime = None
            if mtime != self._mtime_ns:
                self._devices = frozenset(list_token_devices(self.settings))
                self._mtime_ns = mtime
            return device_id in self._devices


class IngestAuditor:
    """Audit records of one ingest process about readings that claimed other devices."""

    def __init__(self, settings: Settings, log: AuditLog, registry: TenantRegistry):
        self.settings = settings
        self.log = log
        self.registry = registry
        self.known = KnownDevices(settings, registry)

    def device_label(self, device_id: str) -> str:
        """Return ``device_id`` when it is registered, else its :func:`redacted_device_id`."""
        return device_id if device_id in self.known else redacted_device_id(device_id)

    def claimed_fields(self, claimed: str) -> dict[str, Any]:
        """Return the audit fields naming a claimed device: its digest, and its id if registered."""
        label = self.device_label(claimed)
        fields: dict[str, Any] = {
            "resource": f"/devices/{label}",
            "claimed_device_digest": secret_digest(claimed),
            "target_namespace": self.registry.owner_namespace(
                claimed, self.settings.gateway_namespace
            ),
        }
        if label == claimed:
            fields["claimed_device_id"] = claimed
        return fields

    def audit_claimed(self, result: IngestResult, identity: dict[str, Any], **request: Any) -> None:
        """Append one ``reject`` record per device that readings claimed without its token.

        Args:
            result: the outcome whose ``claimed_devices`` to audit.
            identity: the authenticated device's actor, device_id, tenant, namespace, action.
            request: fields of the request (method, path, client, http_status).
        """
        own = identity["namespace"] or self.settings.gateway_namespace
        for claimed in result.claimed_devices[:MAX_AUDITED_CLAIMS]:
            fields = self.claimed_fields(claimed)
            label = fields["resource"].removeprefix("/devices/")
            self.log.append(
                "reject",
                **request,
                outcome="rejected",
                reason=f"reading of device {label} sent with the token of another device",
                **{**identity, "namespace": own},
                **fields,
            )
            logger.warning(
                "device %s sent a reading of device %s (namespace %s)",
                identity["device_id"],
                label,
                fields["target_namespace"],
            )
        skipped = len(result.claimed_devices) - MAX_AUDITED_CLAIMS
        if skipped > 0:
            logger.warning(
                "device %s claimed %d more device(s) in request %s; not audited one by one",
                identity["device_id"],
                skipped,
                result.request_id,
            )


def ingest_payload(
    router: IngestRouter,
    body: bytes,
    device_id: str,
    source: str,
    max_batch: int,
    request_id: str | None = None,
) -> IngestResult:
    """Validate the readings in ``body`` sent by ``device_id`` and store or dead-letter each.

    Raises:
        BatchTooLargeError: for a batch over ``max_batch``; nothing is stored.
        DeadLetterError: when an invalid reading could not be kept anywhere.
    """
    result = IngestResult(request_id or uuid.uuid4().hex)
    extra = {"request_id": result.request_id, "device": device_id, "transport": source}
    items, body_error = _split_payload(body, max_batch)
    if body_error is not None:
        letter = DeadLetter(body, body_error, f"ingest-{source}", {**extra, "kind": "invalid"})
        sink = router.dead_letter([letter])[0]
        router.metrics.count_readings(source, "invalid")
        result.results.append(
            {"index": None, "status": "dlq", "sink": sink, "kind": "invalid", "reason": body_error}
        )
        return result
    readings: list[tuple[int, IngestReading]] = []
    letters: list[tuple[int, DeadLetter]] = []
    for index, (item, raw) in enumerate(items):
        try:
            claimed = item.get("device_id") if isinstance(item, dict) else None
            # Checked before the contract, whose messages quote the invalid value.
            # NOTE: for the device's own readings they still do (a bad timestamp or metric),
            # and the router logs dead-letter reasons, so a secret sent there is logged.
            if isinstance(claimed, str) and claimed != device_id:
                if claimed not in result.claimed_devices:
                    result.claimed_devices.append(claimed)
                raise InvalidTelemetryError(
                    f"device_id {redacted_device_id(claimed)} does not match the authenticated "
                    f"device {device_id!r}; send each device's readings with its own token"
                )
            message = validate_message(item)
        except InvalidTelemetryError as exc:
            letter_extra = {**extra, "kind": "invalid", "index": index}
            letters.append((index, DeadLetter(raw, exc.reason, f"ingest-{source}", letter_extra)))
            continue
        readings.append((index, IngestReading.create(message, source)))
    statuses: dict[int, dict[str, Any]] = {}
    if letters:
        sinks = router.dead_letter([letter for _, letter in letters])
        router.metrics.count_readings(source, "invalid", len(letters))
        for (index, letter), sink in zip(letters, sinks, strict=True):
            statuses[index] = {
                "index": index,
                "status": "dlq",
                "sink": sink,
                "kind": "invalid",
                "reason": letter.reason,
            }
    if readings:
        outcomes = router.submit([reading for _, reading in readings])
        for (index, reading), outcome in zip(readings, outcomes, strict=True):
            status: dict[str, Any] = {
                "index": index,
                "status": outcome.route,
                "ingest_id": reading.ingest_id,
            }
            if outcome.route == "dlq":
                status.update({"sink": outcome.sink, "kind": "overload", "reason": outcome.reason})
            statuses[index] = status
    result.results = [statuses[index] for index in sorted(statuses)]
    return result


class TenantRouters:
    """The ingest router of each tenant, started on its first reading, beside the default one.

    A tenant's router sends to the topics and queues of :func:`saodf.tenants.tenant_settings`,
    so one tenant's readings and dead letters never reach another tenant's topics.
    """

    def __init__(self, settings: Settings, config: IngestConfig, default: IngestRouter):
        self.settings = settings
        self.config = config
        self.default = default
        self.registry = TenantRegistry(settings)
        self._routers: dict[str, IngestRouter] = {}
        self._lock = threading.Lock()

    def for_device(self, device_id: str) -> tuple[Tenant | None, IngestRouter]:
        """Return the tenant of an authenticated device (None for the stack's own) and its router."""
        tenant = self.registry.device_tenant(device_id)
        if tenant is None:
            return None, self.default
        with self._lock:
            router = self._routers.get(tenant.name)
            if router is None:
                router = IngestRouter(tenant_settings(tenant, self.settings), self.config)
                router.start()
                self._routers[tenant.name] = router
                logger.info(
                    "ingest router of tenant %s started on topic %s",
                    tenant.name,
                    router.settings.topic_raw,
                )
            return tenant, router

    def close(self) -> None:
        """Close every tenant's router; the default router is its owner's to close."""
        with self._lock:
            routers, self._routers = self._routers, {}
        for name, router in sorted(routers.items()):
            router.close()
            logger.info("ingest router of tenant %s stopped", name)


class IngestGateway:
    """The HTTP server of the ingest gateway, bound to ``settings.host``."""

    def __init__(
        self,
        settings: Settings,
        config: IngestConfig | None = None,
        router: IngestRouter | None = None,
        port: int | None = None,
    ):
        self.settings = settings
        self.config = config or IngestConfig()
        self.router = router or IngestRouter(settings, self.config)
        self.routers = TenantRouters(settings, self.config, self.router)
        self.tokens = DeviceTokens(settings)
        # Its own file: the action gateway's process appends to audit.jsonl, and two writers
        # of one hash chain would interleave their records.
        self.audit = AuditLog(settings.log_dir / "ingest_audit.jsonl")
        self.auditor = IngestAuditor(settings, self.audit, self.routers.registry)
        port = self.config.http_port if port is None else port
        self.server = ThreadingHTTPServer((settings.host, port), _handler_class(self))
        self.server.daemon_threads = True
        self._thread: threading.Thread | None = None
        self._admin = None
        self._topic_check: tuple[float, str | None] = (0.0, None)
        self._topic_lock = threading.Lock()

    def raw_topic_problem(self) -> str | None:
        """Return why the raw topic cannot take readings now, or None when it exists.

        A broker that restarted with memory storage accepts connections but has no topics.
        """
        with self._topic_lock:
            checked_at, problem = self._topic_check
            if checked_at and time.monotonic() - checked_at < TOPIC_CHECK_TTL_S:
                return problem
            topic = self.settings.topic_raw
            if self._admin is None:
                self._admin = AdminClient(admin_config(self.settings))
            try:
                topics = self._admin.list_topics(timeout=2).topics
            except KafkaException as exc:
                problem = f"listing topics on {self.settings.kafka_bootstrap} failed: {exc}"
            else:
                problem = None
                if topic not in topics:
                    problem = (
                        f"topic {topic!r} does not exist on {self.settings.kafka_bootstrap}; "
                        "run saodf stack up to create it"
                    )
            if problem is not None:
                logger.warning("ingest gateway on %s not ready: %s", self.config.http_port, problem)
            self._topic_check = (time.monotonic(), problem)
            return problem

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> str:
        """Start the router and serve in a background thread; return the base URL."""
        self.router.start()
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="ingest-http", daemon=True
        )
        self._thread.start()
        logger.info("ingest gateway listening on %s", self.url)
        return self.url

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.routers.close()
        self.router.close()
        logger.info("ingest gateway on %s stopped", self.url)


def _handler_class(gateway: IngestGateway) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "saodf-ingest"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            logger.debug("%s %s", self.address_string(), format % args)

        def _send(self, status: int, payload: Any, content_type="application/json", headers=None):
            body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _audit(self, event: str, status: int, outcome: str, **fields: Any) -> None:
            client = self.client_address[0]
            gateway.audit.append(
                event,
                method=self.command,
                path=path_label(self.path),
                resource=fields.pop("resource", None) or path_label(self.path),
                client=client,
                http_status=int(status),
                outcome=outcome,
                actor=fields.pop("actor", None) or f"client:{client}",
                **fields,
            )

        def _reject(
            self, status: HTTPStatus, message: str, headers=None, close=False, **fields: Any
        ) -> None:
            gateway.router.metrics.count_request("http", int(status))
            self._audit("reject", status, "rejected", reason=message, **fields)
            logger.info(
                "rejected %s %s from %s with %d: %s",
                self.command,
                path_label(self.path),
                self.client_address[0],
                int(status),
                message,
            )
            if close:
                self.close_connection = True
                headers = {**(headers or {}), "Connection": "close"}
            self._send(int(status), {"error": message}, headers=headers)

        def _route_allows(self) -> bool:
            """Reject a request to an unknown path (404) or with another method (405)."""
            path = self.path.split("?", 1)[0]
            allowed = ROUTE_METHODS.get(path)
            # A rejected request's body is not read, so its connection cannot carry another one.
            if allowed is None:
                self._reject(
                    HTTPStatus.NOT_FOUND,
                    f"no route {path_label(path)}; use {TELEMETRY_PATH}",
                    close=True,
                )
                return False
            if self.command != allowed:
                self._reject(
                    HTTPStatus.METHOD_NOT_ALLOWED,
                    f"method {self.command} is not allowed on {path}; use {allowed}",
                    headers={"Allow": allowed},
                    close=True,
                )
                return False
            return True

        def __getattr__(self, name: str) -> Any:
            # BaseHTTPRequestHandler returns 501 for a method without a do_<METHOD>. Every
            # such method, standard or not, gets 405 on a known path and 404 elsewhere.
            if name.startswith("do_"):
                return self._route_allows
            raise AttributeError(name)

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            if not self._route_allows():
                return
            path = self.path.split("?", 1)[0]
            if path == "/health":
                brokers = gateway.router.health()
                problem = gateway.raw_topic_problem()
                brokers["kafka"]["ready"] = problem is None
                brokers["kafka"]["topic_reason"] = problem
                if problem is None:
                    self._send(200, {"status": "ok", "brokers": brokers})
                else:
                    self._send(503, {"status": "degraded", "brokers": brokers})
            elif path == "/metrics":
                text = gateway.router.render_metrics().encode("utf-8")
                self._send(200, text, content_type="text/plain; version=0.0.4")
            else:
                self._send(200, OPENAPI_FILE.read_bytes())

        def do_POST(self) -> None:  # noqa: N802 - stdlib name
            if not self._route_allows():
                return
            length_text = self.headers.get("Content-Length")
            if length_text is None:
                self._reject(HTTPStatus.LENGTH_REQUIRED, "Content-Length is missing", close=True)
                return
            if not length_text.isdigit():
                # Quoted in the response, the audit log and the log, so a long value is cut.
                quoted = length_text[:20] + ("..." if len(length_text) > 20 else "")
                self._reject(
                    HTTPStatus.LENGTH_REQUIRED,
                    f"Content-Length {quoted!r} is invalid; send the body's length in bytes "
                    "as a decimal integer",
                    close=True,
                )
                return
            length = int(length_text)
            if length > gateway.config.max_body_bytes:
                self._reject(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    f"body has {length} bytes; the maximum is {gateway.config.max_body_bytes}",
                    close=True,
                )
                return
            body = self.rfile.read(length)
            auth = self.headers.get("Authorization", "")
            token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
            device_id = gateway.tokens.authenticate(token)
            if device_id is None:
                # A digest prefix tells repeated guesses apart without keeping the token.
                presented = secret_digest(token) if token else None
                self._reject(
                    HTTPStatus.UNAUTHORIZED,
                    "missing or unknown device token; send Authorization: Bearer <token>",
                    headers={"WWW-Authenticate": 'Bearer realm="saodf-ingest"'},
                    token_digest=presented,
                )
                return
            tenant, router = gateway.routers.for_device(device_id)
            identity = {
                "actor": device_id,
                "device_id": device_id,
                "tenant": tenant.name if tenant is not None else None,
                "namespace": tenant.namespace if tenant is not None else None,
                "action": "ingest",
            }
            try:
                result = ingest_payload(router, body, device_id, "http", gateway.config.max_batch)
            except BatchTooLargeError as exc:
                self._reject(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, exc.reason, **identity)
                return
            except DeadLetterError as exc:
                logger.error("request from device %s not stored: %s", device_id, exc)
                self._reject(
                    HTTPStatus.INTERNAL_SERVER_ERROR, f"{exc}; send the request again", **identity
                )
                return
            status = HTTPStatus.BAD_REQUEST if result.invalid else HTTPStatus.ACCEPTED
            gateway.router.metrics.count_request("http", int(status))
            gateway.auditor.audit_claimed(
                result,
                identity,
                method=self.command,
                path=TELEMETRY_PATH,
                client=self.client_address[0],
                http_status=int(status),
            )
            self._audit(
                "ingest",
                status,
                result.audit_outcome,
                readings=len(result.results),
                invalid=result.invalid,
                claimed_devices=len(result.claimed_devices),
                **identity,
            )
            self._send(int(status), result.to_dict())

    return Handler


def main(argv: list[str] | None = None) -> int:
    """Serve the ingest gateway until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m streaming.ingest_gateway", description="Serve POST /v1/telemetry."
    )
    parser.add_argument("--port", type=int, default=None, help="port (default SAODF_INGEST_PORT)")
    args = parser.parse_args(argv)
    configure_logging()
    settings = with_name_overrides(get_settings())
    config = IngestConfig.from_env()
    gateway = IngestGateway(settings, config, port=args.port)
    stop = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        logger.info("received signal %d; stopping the ingest gateway", signum)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    gateway.start()
    logger.info("ingest config: %s", json.dumps(config.env(), sort_keys=True))
    stop.wait()
    gateway.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Action gateway: the subset of the OpenWhisk REST API that SAODF clients use, on 127.0.0.1.

Routes:

- ``POST /api/v1/namespaces/{ns}/actions/{name}?blocking=true[&result=true]``: the JSON body
  is the action's parameters. A blocking call returns the activation record (or only its
  result with ``result=true``): HTTP 200 on success and 502 when the action failed. It
  returns 503 with ``Retry-After`` when no runtime could run the activation, because the
  runtime would not start, died during the activation, or every runtime stayed busy. Without ``blocking=true`` it returns 202 with the
  activation id, and the record is available from the activations route when it ends.
- ``GET /api/v1/namespaces/{ns}/activations/{id}``: a stored activation record.
- ``GET /health``: liveness, without authentication.
- ``GET /api/v1/openapi.json``: the OpenAPI 3 description of these routes
  (``actions/openapi.json``), without authentication.
- ``GET /metrics``: Prometheus text. It requires a namespace key like the API, because the
  counters name the namespaces and actions in use.

Authentication is HTTP basic with the OpenWhisk key ``uuid:key`` of a namespace: 401 without
or with wrong credentials, 403 for another namespace's path (``_`` is the caller's own
namespace), 404 for an unknown action or route, 405 with ``Allow`` for a method the route
does not serve, 400 for ``blocking`` or ``result`` values other than ``true`` and ``false``,
and 413 for a body over the size limit.

Each namespace gets its own :mod:`actions.runtime` processes of each action (see
:mod:`actions.pool`), as OpenWhisk never shares a container between namespaces: module
state of one namespace's activations is invisible to another's. The pools of the
stack's own namespace start with the gateway, the others on their first activation. A
namespace exists when ``SAODF_HOME/secrets/gateway_keys.json`` holds a key for it
(:func:`add_namespace`); the gateway reads the keys when it starts.

A namespace that is a tenant (:mod:`saodf.tenants`) gets runtimes with ``SAODF_TENANT``
set, so its actions reach Redis only as the tenant's ACL user and under its key prefix.
The gateway returns 404 to a tenant's call naming a device id of another tenant or of the
default deployment (``device_id``, ``reading`` or ``readings``), as for a device that does
not exist, and audits it with the device's owning namespace as ``target_namespace``.
``/metrics`` covers every namespace, so tenants' keys get 403 there.

Activations whose result carries ``"degraded": true`` (an action served without Redis)
are counted in ``saodf_gateway_degraded_total``. Every invocation and every rejected
request is appended to the hash-chained audit log ``SAODF_HOME/logs/audit.jsonl``.

Audit records of rejected requests never carry a presented key. A 401 for presented
credentials carries ``key_digest``, the first 16 hex characters of their sha256
(:func:`saodf.audit_tools.secret_digest`), so that rotated-out keys can be recognised, and
``key_id``, the user part of the basic credentials. A ``key_id`` or a namespace in the
request path that no key of the gateway has is replaced by ``<redacted N characters>``,
and paths are cut to :data:`MAX_AUDIT_PATH_CHARS`, so a secret pasted into the user
field or the URL does not reach the log.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import re
import signal
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from actions.audit import AuditLog
from actions.metrics import GatewayMetrics
from actions.pool import (
    ActionPool,
    ActionSpec,
    ActivationTimeout,
    PoolBusy,
    RuntimeProcessError,
    runtime_env,
    start_pools,
)
from saodf.audit_tools import secret_digest
from saodf.config import Settings, get_settings
from saodf.errors import SaodfError
from saodf.telemetry import DEVICE_ID_PATTERN
from saodf.tenants import TENANT_ENV, TenantRegistry

logger = logging.getLogger(__name__)

DEFAULT_ACTIONS = (
    ActionSpec(name="forecast", module="actions.forecast", timeout_seconds=60.0),
    ActionSpec(name="detect_anomaly", module="actions.detect_anomaly", timeout_seconds=30.0),
)
MAX_BODY_BYTES = 1024 * 1024
MAX_STORED_ACTIVATIONS = 10_000
# Characters of a request path kept in audit records and log lines; http.server accepts
# request lines up to 64 KiB.
MAX_AUDIT_PATH_CHARS = 200
NAMESPACES_PREFIX = "/api/v1/namespaces/"
OPENAPI_PATH = "/api/v1/openapi.json"
# Characters of a request method kept in audit records; longer ones are redacted.
MAX_METHOD_CHARS = 16
OPENAPI_FILE = Path(__file__).with_name("openapi.json")
ACTION_ROUTE = re.compile(r"^/api/v1/namespaces/([^/]+)/actions/([A-Za-z0-9_.@-]+)$")
ACTIVATION_ROUTE = re.compile(r"^/api/v1/namespaces/([^/]+)/activations/([0-9a-f]{32})$")

# OpenWhisk activation statuses and their response.statusCode values.
SUCCESS = "success"
APPLICATION_ERROR = "application error"
DEVELOPER_ERROR = "action developer error"
INTERNAL_ERROR = "whisk internal error"
STATUS_CODES = {SUCCESS: 0, APPLICATION_ERROR: 1, DEVELOPER_ERROR: 2, INTERNAL_ERROR: 3}


RETRY_AFTER_SECONDS = 5


class GatewayError(SaodfError):
    """A gateway configuration that cannot be served."""


NAMESPACE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


def add_namespace(settings: Settings, namespace: str) -> str:
    """Generate an API key ``uuid:key`` for a new namespace, store it and return it.

    A running gateway serves the namespace after its next start.

    Raises:
        GatewayError: the name is invalid or the namespace already has a key.
    """
    import secrets as token_source

    from saodf.secrets import gateway_keys, write_json_secret

    if not NAMESPACE_PATTERN.match(namespace) or namespace == "_":
        raise GatewayError(
            f"namespace {namespace!r} is invalid; use 1-64 characters from A-Z a-z 0-9 _ . @ -, "
            "starting with a letter or digit"
        )
    keys = gateway_keys(settings)
    if namespace in keys:
        raise GatewayError(f"namespace {namespace!r} already has a key; reuse it")
    key = f"{uuid.uuid4()}:{token_source.token_urlsafe(48)}"
    write_json_secret("gateway_keys.json", {**keys, namespace: key}, settings)
    logger.info("namespace %s added to the gateway keys", namespace)
    return key


def _now_ms() -> int:
    return int(time.time() * 1000)


def redact(value: str) -> str:
    """Return the marker that replaces an unrecognised value in audit records and logs."""
    return f"<redacted {len(value)} characters>"


@dataclass(frozen=True)
class Authentication:
    """The result of checking a request's basic credentials.

    ``namespace`` and ``subject`` (the key's uuid) are set for valid credentials. For
    invalid ones, ``reason`` is the cause and ``evidence`` contains the audit fields that
    identify what was presented without revealing it (``key_digest``, ``key_id``).
    """

    namespace: str | None = None
    subject: str = ""
    reason: str = ""
    evidence: dict[str, str] = field(default_factory=dict)


class Gateway:
    """Routing state shared by the request threads: keys, pools, activations, audit, metrics."""

    def __init__(
        self,
        settings: Settings,
        specs: dict[str, ActionSpec],
        pools: dict[tuple[str, str], ActionPool],
        keys: dict[str, str],
        max_body_bytes: int,
        env: dict[str, str],
    ):
        self.settings = settings
        self.specs = specs
        self.pools = pools
        self.env = env
        self._pool_locks: dict[tuple[str, str], threading.Lock] = {}
        self._pools_lock = threading.Lock()
        self.keys = keys
        self._keys_path = settings.home / "secrets" / "gateway_keys.json"
        self._keys_mtime_ns = self._keys_stamp()
        self._keys_lock = threading.Lock()
        self.max_body_bytes = max_body_bytes
        self.audit = AuditLog(settings.log_dir / "audit.jsonl")
        self.metrics = GatewayMetrics()
        self.activations: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._activations_lock = threading.Lock()
        self.background = ThreadPoolExecutor(max_workers=4, thread_name_prefix="saodf-nonblocking")
        self.tenants = TenantRegistry(settings)
        self._cache = None
        self._openapi: str | None = None

    def _keys_stamp(self) -> int | None:
        try:
            return self._keys_path.stat().st_mtime_ns
        except OSError:
            return None

    def refresh_keys(self) -> None:
        """Read the keys file again when it changed, so rotated and deleted keys stop at once."""
        stamp = self._keys_stamp()
        if stamp is None or stamp == self._keys_mtime_ns:
            return
        with self._keys_lock:
            if stamp == self._keys_mtime_ns:
                return
            try:
                keys = json.loads(self._keys_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                logger.error(
                    "gateway keys file %s unreadable, keeping the old keys: %s",
                    self._keys_path,
                    exc,
                )
                return
            self.keys = {str(name): str(key) for name, key in keys.items()}
            self._keys_mtime_ns = stamp
            logger.info("gateway keys reloaded: %d namespaces", len(self.keys))

    def authenticate(self, header: str | None) -> Authentication:
        """Check an ``Authorization`` header against the namespace keys."""
        self.refresh_keys()
        scheme, _, token = (header or "").strip().partition(" ")
        token = token.strip()
        if not scheme:
            return Authentication(reason="missing basic credentials")
        # HTTP authentication scheme names are case-insensitive.
        if scheme.lower() != "basic":
            return Authentication(
                reason="unsupported authorization scheme; use Basic",
                evidence={"key_digest": secret_digest(header or "")},
            )
        if not token:
            return Authentication(reason="missing basic credentials")
        try:
            presented = base64.b64decode(token, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return Authentication(
                reason="malformed basic credentials",
                evidence={"key_digest": secret_digest(token)},
            )
        matched = None
        for namespace, key in self.keys.items():
            # Compare every key, so the time taken does not reveal which namespace matched.
            if hmac.compare_digest(presented.encode("utf-8"), key.encode("utf-8")):
                matched = namespace
        user = presented.split(":", 1)[0]
        if matched is None:
            return Authentication(
                reason="wrong credentials",
                evidence={
                    "key_digest": secret_digest(presented),
                    "key_id": self.audit_key_id(user),
                },
            )
        return Authentication(namespace=matched, subject=user)

    def audit_key_id(self, user: str) -> str:
        """Return the user part of basic credentials if it is a key's uuid, else its marker."""
        known = {key.split(":", 1)[0] for key in self.keys.values()}
        return user if user in known else redact(user)

    def audit_namespace(self, namespace: str) -> str:
        """Return a namespace from a request if the gateway has a key for it, else its marker."""
        return namespace if namespace == "_" or namespace in self.keys else redact(namespace)

    def audit_path(self, path: str) -> str:
        """Return a request path for audit records and logs: namespace redacted, length bounded."""
        if path.startswith(NAMESPACES_PREFIX):
            namespace, slash, rest = path[len(NAMESPACES_PREFIX) :].partition("/")
            path = f"{NAMESPACES_PREFIX}{self.audit_namespace(namespace)}{slash}{rest}"
        if len(path) > MAX_AUDIT_PATH_CHARS:
            extra = len(path) - MAX_AUDIT_PATH_CHARS
            path = f"{path[:MAX_AUDIT_PATH_CHARS]}...<{extra} more characters>"
        return path

    def pool_for(self, namespace: str, action: str) -> ActionPool:
        """Return the namespace's pool of an action, starting its runtimes on first use.

        Raises:
            RuntimeProcessError: a runtime did not start.
        """
        key = (namespace, action)
        with self._pools_lock:
            pool = self.pools.get(key)
            if pool is not None:
                return pool
            lock = self._pool_locks.setdefault(key, threading.Lock())
        # Only callers of this namespace and action wait while its runtimes start.
        with lock:
            with self._pools_lock:
                pool = self.pools.get(key)
            if pool is not None:
                return pool
            logger.info("starting the runtimes of action %s for namespace %s", action, namespace)
            env = dict(self.env)
            if self.tenants.tenant(namespace) is not None:
                env[TENANT_ENV] = namespace
            pool = ActionPool(self.specs[action], self.settings, env, namespace=namespace)
            try:
                pool.start()
            except RuntimeProcessError:
                pool.stop()
                raise
            with self._pools_lock:
                self.pools[key] = pool
            return pool

    def store(self, record: dict[str, Any]) -> None:
        with self._activations_lock:
            self.activations[record["activationId"]] = record
            while len(self.activations) > MAX_STORED_ACTIVATIONS:
                self.activations.popitem(last=False)

    def activation(self, activation_id: str) -> dict[str, Any] | None:
        with self._activations_lock:
            return self.activations.get(activation_id)

    def invoke(
        self, namespace: str, action: str, params: dict[str, Any], activation_id: str, api_key: str
    ) -> dict[str, Any]:
        """Run one activation to its end and return its OpenWhisk activation record."""
        spec = self.specs[action]
        start = _now_ms()
        body = {
            "value": params,
            "activation_id": activation_id,
            "namespace": namespace,
            "action_name": f"/{namespace}/{action}",
            "api_host": self.settings.gateway_url,
            "api_key": api_key,
            "deadline": str(start + int(spec.timeout_seconds * 1000)),
        }
        logs: list[str] = []
        try:
            pool = self.pool_for(namespace, action)
            reply = pool.run(body, wait_seconds=spec.timeout_seconds)
            logs = reply.logs
            if reply.status == 200 and isinstance(reply.body, dict) and "error" not in reply.body:
                status, result = SUCCESS, reply.body
            elif reply.status == 200 and isinstance(reply.body, dict):
                status, result = APPLICATION_ERROR, reply.body
            else:
                status = DEVELOPER_ERROR
                result = reply.body if isinstance(reply.body, dict) else {"error": str(reply.body)}
        except ActivationTimeout as exc:
            status, result = DEVELOPER_ERROR, {"error": str(exc)}
        except (PoolBusy, RuntimeProcessError) as exc:
            status = INTERNAL_ERROR
            result = {
                "error": f"The action runtime is unavailable: {exc}. Retry after "
                f"{RETRY_AFTER_SECONDS} s."
            }
        end = _now_ms()
        record = {
            "activationId": activation_id,
            "namespace": namespace,
            "name": action,
            "version": "0.0.1",
            "subject": namespace,
            "start": start,
            "end": end,
            "duration": end - start,
            "response": {
                "status": status,
                "statusCode": STATUS_CODES[status],
                "success": status == SUCCESS,
                "result": result,
            },
            "logs": logs,
            "annotations": [{"key": "kind", "value": "python:3.11"}],
        }
        self.store(record)
        self.metrics.observe(namespace, action, status, (end - start) / 1000)
        if isinstance(result, dict) and result.get("degraded") is True:
            self.metrics.degraded(namespace, action)
        if status == SUCCESS:
            logger.info(
                "activation %s of %s/%s succeeded in %d ms",
                activation_id,
                namespace,
                action,
                end - start,
            )
        else:
            logger.error(
                "activation %s of %s/%s ended with %s: %s",
                activation_id,
                namespace,
                action,
                status,
                result.get("error"),
            )
        return record

    def foreign_device(self, namespace: str, params: dict[str, Any]) -> str | None:
        """Return the first device id in ``params`` outside tenant ``namespace``, else None.

        Namespaces that are not tenants own every device. Ids that break the device id
        pattern are left to the action, which reports them invalid.
        """
        tenant = self.tenants.tenant(namespace)
        if tenant is None:
            return None
        for device_id in _device_ids(params):
            if not tenant.owns_device(device_id):
                return device_id
        return None

    def cache_stats(self) -> dict[str, Any] | None:
        import redis

        from actions.cache import ForecastCache
        from actions.redis_acl import GATEWAY

        try:
            if self._cache is None:
                self._cache = ForecastCache.from_settings(self.settings, role=GATEWAY)
            return self._cache.stats()
        except (redis.RedisError, OSError) as exc:
            logger.warning("cache statistics unavailable for /metrics: %s", exc)
            return None

    def openapi_text(self) -> str:
        """Return the OpenAPI description of the gateway's routes, read once."""
        if self._openapi is None:
            self._openapi = OPENAPI_FILE.read_text(encoding="utf-8")
        return self._openapi


def _device_ids(params: dict[str, Any]) -> list[str]:
    """Return the valid device ids of a call: ``device_id``, ``reading`` and ``readings``."""
    candidates = [params.get("device_id")]
    reading = params.get("reading")
    if isinstance(reading, dict):
        candidates.append(reading.get("device_id"))
    readings = params.get("readings")
    if isinstance(readings, list):
        candidates.extend(item.get("device_id") for item in readings if isinstance(item, dict))
    return [
        device_id
        for device_id in candidates
        if isinstance(device_id, str) and DEVICE_ID_PATTERN.match(device_id)
    ]


def _device_fields(device_id: Any) -> dict[str, str]:
    """Return the audit fields of a call's ``device_id``: the id, or a flagged invalid one."""
    if device_id is None:
        return {}
    if isinstance(device_id, str) and DEVICE_ID_PATTERN.match(device_id):
        return {"device_id": device_id}
    # Ids that break the contract (path traversal, wrong type) are kept, cut short, as evidence.
    return {"bad_device_id": repr(device_id)[:80]}


def allowed_methods(path: str) -> tuple[str, ...]:
    """Return the HTTP methods that a path serves; () for a path that is no route."""
    if path in ("/health", "/metrics", OPENAPI_PATH) or ACTIVATION_ROUTE.match(path):
        return ("GET",)
    if ACTION_ROUTE.match(path):
        return ("POST",)
    return ()


def _query_flag(query: dict[str, list[str]], name: str) -> bool | None:
    """Return a boolean query parameter (default false), or None when it is neither true nor false."""
    value = query.get(name, ["false"])[0].lower()
    if value not in ("true", "false"):
        return None
    return value == "true"


def _handler(gateway: Gateway) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # TCP_NODELAY: headers and body go out in separate writes, and Nagle's algorithm
        # with the client's delayed ACK would hold the body for about 40 ms on keep-alive.
        disable_nagle_algorithm = True
        server_version = "saodf-gateway"
        # Seconds a client may take to send its request; a body shorter than its
        # Content-Length would otherwise hold the handler thread forever.
        timeout = 30

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            logger.debug("%s %s", self.address_string(), format % args)

        def _send(
            self,
            status: int,
            body: Any,
            content_type: str = "application/json",
            headers: dict[str, str] | None = None,
        ) -> None:
            data = (
                body.encode("utf-8") if isinstance(body, str) else json.dumps(body).encode("utf-8")
            )
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if status == HTTPStatus.UNAUTHORIZED:
                self.send_header("WWW-Authenticate", 'Basic realm="saodf"')
            if status == HTTPStatus.SERVICE_UNAVAILABLE:
                self.send_header("Retry-After", str(RETRY_AFTER_SECONDS))
            if status >= 400 and status != HTTPStatus.BAD_GATEWAY:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            # A response to HEAD has the headers of the GET response and no body.
            if self.command != "HEAD":
                self.wfile.write(data)

        def _reject(
            self,
            status: int,
            reason: str,
            namespace: str | None = None,
            headers: dict[str, str] | None = None,
            **fields: Any,
        ) -> None:
            gateway.metrics.reject(status)
            path = gateway.audit_path(urlsplit(self.path).path)
            client = self.client_address[0]
            method = self.command if len(self.command) <= MAX_METHOD_CHARS else redact(self.command)
            gateway.audit.append(
                "reject",
                method=method,
                path=path,
                client=client,
                http_status=status,
                namespace=namespace,
                reason=reason,
                tenant=namespace,
                actor=fields.get("subject") or f"client:{client}",
                resource=fields.pop("resource", path),
                outcome="rejected",
                **fields,
            )
            logger.warning(
                "%s %s from %s rejected with %d: %s",
                method,
                path,
                client,
                status,
                reason,
            )
            self._send(status, {"error": reason, "code": uuid.uuid4().hex}, headers=headers)

        def _authorize(self, path_namespace: str | None) -> tuple[str, str] | None:
            auth = gateway.authenticate(self.headers.get("Authorization"))
            if auth.namespace is None:
                self._reject(
                    HTTPStatus.UNAUTHORIZED,
                    f"The supplied authentication is invalid: {auth.reason}.",
                    **auth.evidence,
                )
                return None
            if path_namespace not in (None, "_", auth.namespace):
                target = gateway.audit_namespace(path_namespace)
                self._reject(
                    HTTPStatus.FORBIDDEN,
                    f"The supplied authentication is not authorized to access namespace "
                    f"{target!r}.",
                    namespace=auth.namespace,
                    subject=auth.subject,
                    target_namespace=target,
                )
                return None
            return auth.namespace, auth.subject

        def _route_serves(self, path: str) -> bool:
            """Reject with 404 or 405 unless the path's route serves this method."""
            methods = allowed_methods(path)
            # HEAD is served like GET, without the body (see _send).
            if self.command in methods or (self.command == "HEAD" and "GET" in methods):
                return True
            if not methods:
                self._reject(
                    HTTPStatus.NOT_FOUND,
                    f"The requested resource {gateway.audit_path(path)} does not exist.",
                )
                return False
            method = self.command if len(self.command) <= MAX_METHOD_CHARS else redact(self.command)
            self._reject(
                HTTPStatus.METHOD_NOT_ALLOWED,
                f"Method {method} is not allowed on {gateway.audit_path(path)}; use "
                f"{' or '.join(methods)}.",
                headers={"Allow": ", ".join(methods)},
            )
            return False

        def do_GET(self) -> None:  # noqa: N802 - http.server naming
            path = urlsplit(self.path).path
            if not self._route_serves(path):
                return
            if path == OPENAPI_PATH:
                self._send(HTTPStatus.OK, gateway.openapi_text())
                return
            if path == "/health":
                self._send(HTTPStatus.OK, {"status": "ok", "actions": sorted(gateway.specs)})
                return
            if path == "/metrics":
                identity = self._authorize(None)
                if identity is None:
                    return
                if gateway.tenants.tenant(identity[0]) is not None:
                    self._reject(
                        HTTPStatus.FORBIDDEN,
                        "The supplied authentication is not authorized to read the gateway "
                        "metrics, which cover every namespace.",
                        namespace=identity[0],
                        subject=identity[1],
                        target_namespace=gateway.settings.gateway_namespace,
                    )
                    return
                text = gateway.metrics.render(gateway.cache_stats())
                self._send(HTTPStatus.OK, text, "text/plain; version=0.0.4; charset=utf-8")
                return
            match = ACTIVATION_ROUTE.match(path)
            identity = self._authorize(match.group(1))
            if identity is None:
                return
            record = gateway.activation(match.group(2))
            if record is None or record["namespace"] != identity[0]:
                self._reject(
                    HTTPStatus.NOT_FOUND,
                    f"The activation {match.group(2)} does not exist or has expired.",
                    namespace=identity[0],
                )
                return
            self._send(HTTPStatus.OK, record)

        do_HEAD = do_GET  # noqa: N815 - http.server naming

        def _method_not_allowed(self) -> None:
            self._route_serves(urlsplit(self.path).path)

        do_PUT = do_DELETE = do_PATCH = _method_not_allowed  # noqa: N815 - http.server naming
        do_OPTIONS = do_TRACE = _method_not_allowed  # noqa: N815 - http.server naming

        def __getattr__(self, name: str) -> Any:
            # http.server responds to a method without a do_ handler with an HTML 501. Here any
            # other method gets the JSON 405 (or 404) of the routes and an audit record instead.
            if name.startswith("do_"):
                return self._method_not_allowed
            raise AttributeError(name)

        def do_POST(self) -> None:  # noqa: N802 - http.server naming
            split = urlsplit(self.path)
            if not self._route_serves(split.path):
                return
            match = ACTION_ROUTE.match(split.path)
            identity = self._authorize(match.group(1))
            if identity is None:
                return
            namespace, subject = identity
            action = match.group(2)
            if action not in gateway.specs:
                named = action if len(action) <= 64 else redact(action)
                self._reject(
                    HTTPStatus.NOT_FOUND,
                    f"The requested action {named!r} does not exist; known actions: "
                    f"{sorted(gateway.specs)}.",
                    namespace=namespace,
                    subject=subject,
                )
                return
            params = self._read_params(namespace, subject, action)
            if params is None:
                return
            foreign = gateway.foreign_device(namespace, params)
            if foreign is not None:
                self._reject(
                    HTTPStatus.NOT_FOUND,
                    f"The requested device {foreign!r} does not exist in namespace {namespace!r}.",
                    namespace=namespace,
                    subject=subject,
                    action=action,
                    device_id=foreign,
                    resource=f"/{namespace}/devices/{foreign}",
                    target_namespace=gateway.tenants.owner_namespace(
                        foreign, gateway.settings.gateway_namespace
                    ),
                )
                return
            query = parse_qs(split.query)
            blocking = _query_flag(query, "blocking")
            result_only = _query_flag(query, "result")
            if blocking is None or result_only is None:
                self._reject(
                    HTTPStatus.BAD_REQUEST,
                    "The query parameters blocking and result must be true or false.",
                    namespace=namespace,
                    subject=subject,
                    action=action,
                )
                return
            activation_id = uuid.uuid4().hex
            api_key = gateway.keys.get(namespace, "")
            accepted = {
                "tenant": namespace,
                "actor": subject,
                "resource": f"/{namespace}/actions/{action}",
                **_device_fields(params.get("device_id")),
            }
            if not blocking:
                gateway.audit.append(
                    "invoke",
                    **accepted,
                    outcome="accepted",
                    namespace=namespace,
                    subject=subject,
                    action=action,
                    activation_id=activation_id,
                    client=self.client_address[0],
                    blocking=False,
                    http_status=HTTPStatus.ACCEPTED,
                )
                gateway.background.submit(
                    gateway.invoke, namespace, action, params, activation_id, api_key
                )
                self._send(HTTPStatus.ACCEPTED, {"activationId": activation_id})
                return
            record = gateway.invoke(namespace, action, params, activation_id, api_key)
            status = record["response"]["status"]
            if status == SUCCESS:
                http_status = HTTPStatus.OK
            elif status == INTERNAL_ERROR:
                http_status = HTTPStatus.SERVICE_UNAVAILABLE
            else:
                http_status = HTTPStatus.BAD_GATEWAY
            gateway.audit.append(
                "invoke",
                **accepted,
                outcome="succeeded" if status == SUCCESS else "failed",
                namespace=namespace,
                subject=subject,
                action=action,
                activation_id=activation_id,
                client=self.client_address[0],
                blocking=True,
                status=status,
                duration_ms=record["duration"],
                http_status=int(http_status),
            )
            self._send(http_status, record["response"]["result"] if result_only else record)

        def _read_params(self, namespace: str, subject: str, action: str) -> dict[str, Any] | None:
            rejection = {"namespace": namespace, "subject": subject, "action": action}
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                self._reject(
                    HTTPStatus.LENGTH_REQUIRED,
                    "Chunked bodies are not accepted; send Content-Length.",
                    **rejection,
                )
                return None
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                self._reject(
                    HTTPStatus.BAD_REQUEST, "Content-Length is not an integer.", **rejection
                )
                return None
            if length < 0:
                self._reject(
                    HTTPStatus.BAD_REQUEST,
                    f"Content-Length {length} is negative; send the body's size in bytes.",
                    **rejection,
                )
                return None
            if length > gateway.max_body_bytes:
                self._reject(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    f"The request content was {length} bytes, which exceeds the limit of "
                    f"{gateway.max_body_bytes} bytes; send fewer readings per call.",
                    **rejection,
                )
                return None
            raw = self.rfile.read(length) if length else b"{}"
            try:
                params = json.loads(raw)
            except ValueError as exc:
                self._reject(
                    HTTPStatus.BAD_REQUEST, f"The request body is not JSON: {exc}.", **rejection
                )
                return None
            except RecursionError:
                # json.loads recurses once per nesting level, so a body of a few thousand "["
                # exceeds the interpreter's recursion limit well under the size limit.
                self._reject(
                    HTTPStatus.BAD_REQUEST,
                    f"The request body of {length} bytes nests JSON arrays or objects too deeply "
                    "to decode; send a flat object of parameters.",
                    **rejection,
                )
                return None
            if not isinstance(params, dict):
                self._reject(
                    HTTPStatus.BAD_REQUEST,
                    f"The request body is a JSON {type(params).__name__}; send an object of parameters.",
                    **rejection,
                )
                return None
            return params

    return Handler


class GatewayServer(ThreadingHTTPServer):
    """The gateway's HTTP server; :meth:`close` stops serving and the runtime processes."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], gateway: Gateway):
        super().__init__(address, _handler(gateway))
        self.gateway = gateway
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.server_address[0]}:{self.port}"

    def start(self) -> "GatewayServer":
        """Serve in a daemon thread and return self."""
        self._thread = threading.Thread(
            target=self.serve_forever, name="saodf-gateway", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, wait for non-blocking activations and stop every runtime process."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join(10)
        self.server_close()
        self.gateway.background.shutdown(wait=True, cancel_futures=True)
        for pool in self.gateway.pools.values():
            pool.stop()
        logger.info("gateway on port %d stopped", self.port)


def serve(
    settings: Settings | None = None,
    actions: list[ActionSpec] | tuple[ActionSpec, ...] = DEFAULT_ACTIONS,
    port: int | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> GatewayServer:
    """Start the runtimes of ``actions`` and serve the gateway in a background thread.

    Args:
        settings: host, gateway port, home (audit log) and keys; defaults to get_settings().
        actions: the actions to deploy.
        port: the port to bind instead of ``settings.ports["gateway"]``; 0 picks a free one.
        max_body_bytes: the request body limit, above which calls get 413.

    Returns:
        The running server; call ``close()`` to stop it.
    """
    from saodf.secrets import gateway_keys

    settings = settings or get_settings()
    names = [spec.name for spec in actions]
    if len(set(names)) != len(names):
        raise GatewayError(f"action names {names} repeat; give each action its own name")
    keys = gateway_keys(settings)
    env = runtime_env(settings)
    # Only the runtimes of tenant namespaces serve a tenant (see Gateway.pool_for).
    env.pop(TENANT_ENV, None)
    started = start_pools(list(actions), settings, env, namespace=settings.gateway_namespace)
    pools = {(settings.gateway_namespace, name): pool for name, pool in started.items()}
    specs = {spec.name: spec for spec in actions}
    gateway = Gateway(settings, specs, pools, keys, max_body_bytes, env)
    bind_port = settings.ports["gateway"] if port is None else port
    try:
        server = GatewayServer((settings.host, bind_port), gateway)
    except OSError as exc:
        for pool in pools.values():
            pool.stop()
        raise GatewayError(
            f"cannot bind the gateway to {settings.host}:{bind_port} ({exc}); "
            "set SAODF_GATEWAY_PORT to a free port"
        ) from None
    server.start()
    logger.info(
        "gateway listening on %s with actions %s; audit log %s",
        server.url,
        names,
        gateway.audit.path,
    )
    return server


def main() -> int:
    from saodf.log import configure_logging

    configure_logging()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server = serve(get_settings())
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

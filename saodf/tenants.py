"""Tenant registry: one device fleet's namespace, keys, prefixes and device tokens.

The registry is ``SAODF_HOME/secrets/tenants.json`` (mode 0600). Each tenant owns:

- an OpenWhisk namespace named after it, with its key in ``gateway_keys.json``;
- the Kafka topic prefix ``t.<name>.`` and the lake prefix ``tenants/<name>/``;
- the Redis ACL user ``saodf-t-<name>``, limited to keys and channels under
  ``saodf:t:<name>:`` and to the commands of the forecast cache;
- the MLflow experiment and registered-model prefix ``<name>.``;
- device tokens of its devices (ids ``<name>.<device>``) in ``device_tokens.json``.

Rotating a tenant's keys replaces its gateway key, Redis password and device tokens. The
gateway checks its keys file on every request, so an old key fails on the next call. The
old Redis password works until :func:`apply_redis_acls` sets the new ACL.
"""

from __future__ import annotations

import fcntl
import json
import logging
import re
import secrets
import threading
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, Iterator

from actions.redis_acl import TENANT_COMMANDS
from saodf.config import Settings, get_settings
from saodf.errors import ConfigError, SaodfError
from saodf.secrets import gateway_keys, get_or_create_secret, secrets_dir, write_json_secret

logger = logging.getLogger(__name__)

TENANTS_FILE = "tenants.json"
REDIS_ADMIN_USER = "saodf-admin"
TENANT_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$")
# Commands that the ``forecast`` and ``detect_anomaly`` actions send on a tenant's keys.
# They are those of the forecast and detector roles, including the commands in scripts.
CACHE_COMMANDS = TENANT_COMMANDS
# Variable naming the tenant whose resources a process serves (see :func:`runtime_settings`).
TENANT_ENV = "SAODF_TENANT"
# Key of Settings.extra that marks settings scoped to one tenant.
TENANT_SETTING = "tenant"


class TenantError(SaodfError):
    """A tenant that is unknown, already exists or has an invalid name."""


@dataclass(frozen=True)
class Tenant:
    """The names and prefixes of one tenant's resources, without its secrets."""

    name: str
    namespace: str
    kafka_topic_prefix: str
    lake_prefix: str
    redis_user: str
    redis_key_prefix: str
    mlflow_prefix: str
    devices: tuple[str, ...] = ()
    created_at: str = ""
    rotated_at: str = ""

    def owns_key(self, key: str) -> bool:
        return key.startswith(self.redis_key_prefix)

    def owns_device(self, device_id: Any) -> bool:
        """Return whether ``device_id`` is a fleet-wide id of this tenant (``<name>.<device>``)."""
        return isinstance(device_id, str) and device_id.startswith(f"{self.name}.")

    def device_id(self, device: str) -> str:
        """Return the fleet-wide id of one of this tenant's devices."""
        return f"{self.name}.{device}"


def tenant_layout(name: str) -> Tenant:
    """Return the names and prefixes a tenant called ``name`` gets.

    Raises:
        TenantError: the name is not 2-32 characters of a-z 0-9 - starting with a letter.
    """
    if not TENANT_PATTERN.match(name or ""):
        raise TenantError(
            f"tenant name {name!r} is invalid; use 2-32 characters from a-z 0-9 -, "
            "starting with a letter and not ending with -"
        )
    return Tenant(
        name=name,
        namespace=name,
        kafka_topic_prefix=f"t.{name}.",
        lake_prefix=f"tenants/{name}/",
        redis_user=f"saodf-t-{name}",
        redis_key_prefix=f"saodf:t:{name}:",
        mlflow_prefix=f"{name}.",
    )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@contextmanager
def _locked(settings: Settings) -> Iterator[None]:
    lock_path = secrets_dir(settings) / f"{TENANTS_FILE}.lock"
    with open(lock_path, "a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _load(settings: Settings) -> dict[str, Any]:
    path = secrets_dir(settings) / TENANTS_FILE
    if not path.exists():
        return {"tenants": {}}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(
            f"tenant registry {path} is not valid JSON ({exc}); restore it from a backup"
        ) from None


def _from_entry(entry: dict[str, Any]) -> Tenant:
    layout = tenant_layout(entry["name"])
    return Tenant(
        **{
            **asdict(layout),
            "devices": tuple(entry.get("devices", ())),
            "created_at": entry.get("created_at", ""),
            "rotated_at": entry.get("rotated_at", ""),
        }
    )


def _set_gateway_key(settings: Settings, namespace: str, key: str | None) -> None:
    keys = dict(gateway_keys(settings))
    if key is None:
        keys.pop(namespace, None)
    else:
        keys[namespace] = key
    write_json_secret("gateway_keys.json", keys, settings)


def _new_gateway_key() -> str:
    return f"{uuid.uuid4()}:{secrets.token_urlsafe(48)}"


def create_tenant(
    name: str, devices: tuple[str, ...] | list[str] = (), settings: Settings | None = None
) -> tuple[Tenant, dict[str, Any]]:
    """Register a tenant and return it with its new secrets, shown to the caller once.

    Returns:
        The tenant and ``{"gateway_key": "uuid:key", "redis_password": ..., "device_tokens":
        {device_id: token}}``.

    Raises:
        TenantError: the name is invalid, taken by a tenant or by a gateway namespace.
    """
    from streaming.tokens import create_device_token

    settings = settings or get_settings()
    layout = tenant_layout(name)
    with _locked(settings):
        store = _load(settings)
        if name in store["tenants"]:
            raise TenantError(f"tenant {name!r} exists; rotate its keys or delete it first")
        if name in gateway_keys(settings) or name == settings.gateway_namespace:
            raise TenantError(
                f"tenant {name!r} would reuse the gateway namespace {name!r}; choose another name"
            )
        gateway_key = _new_gateway_key()
        redis_secret = secrets.token_urlsafe(24)
        device_ids = [layout.device_id(device) for device in devices]
        tokens = {device_id: create_device_token(device_id, settings) for device_id in device_ids}
        store["tenants"][name] = {
            "name": name,
            "devices": device_ids,
            "redis_password": redis_secret,
            "created_at": _now(),
            "rotated_at": "",
        }
        _set_gateway_key(settings, layout.namespace, gateway_key)
        write_json_secret(TENANTS_FILE, store, settings)
    logger.info("tenant %s created with %d devices", name, len(device_ids))
    tenant = _from_entry(store["tenants"][name])
    return tenant, {
        "gateway_key": gateway_key,
        "redis_password": redis_secret,
        "device_tokens": tokens,
    }


def list_tenants(settings: Settings | None = None) -> list[Tenant]:
    settings = settings or get_settings()
    return [_from_entry(entry) for _, entry in sorted(_load(settings)["tenants"].items())]


def get_tenant(name: str, settings: Settings | None = None) -> Tenant:
    """Return the tenant called ``name``.

    Raises:
        TenantError: no such tenant.
    """
    settings = settings or get_settings()
    entry = _load(settings)["tenants"].get(name)
    if entry is None:
        known = sorted(_load(settings)["tenants"])
        raise TenantError(f"tenant {name!r} does not exist; known tenants: {known}")
    return _from_entry(entry)


def tenant_not_found(name: str) -> TenantError:
    """Build the error for a tenant name that the registry does not contain."""
    return TenantError(f"tenant {name!r} not found; list tenants with `saodf tenant list`")


def rotate_keys(name: str, settings: Settings | None = None) -> dict[str, Any]:
    """Replace a tenant's gateway key, Redis password and device tokens; return the new ones.

    Raises:
        TenantError: no such tenant.
    """
    from saodf.audit_tools import record_revoked_keys
    from streaming.tokens import create_device_token

    settings = settings or get_settings()
    with _locked(settings):
        store = _load(settings)
        entry = store["tenants"].get(name)
        if entry is None:
            raise TenantError(f"tenant {name!r} does not exist; create it first")
        # Digests of the keys being replaced, so that detection flags their later use.
        record_revoked_keys(settings, name, gateway_keys(settings).get(name), entry["devices"])
        gateway_key = _new_gateway_key()
        entry["redis_password"] = secrets.token_urlsafe(24)
        entry["rotated_at"] = _now()
        tokens = {
            device_id: create_device_token(device_id, settings) for device_id in entry["devices"]
        }
        _set_gateway_key(settings, name, gateway_key)
        write_json_secret(TENANTS_FILE, store, settings)
    logger.info("keys of tenant %s rotated", name)
    return {
        "gateway_key": gateway_key,
        "redis_password": entry["redis_password"],
        "device_tokens": tokens,
    }


def delete_tenant(name: str, settings: Settings | None = None) -> Tenant:
    """Remove a tenant's registry entry, gateway key and device tokens; return what it was.

    Its data (lake files, cache keys, MLflow runs) stays; remove it with the tenant's prefixes.

    Raises:
        TenantError: no such tenant.
    """
    from streaming.tokens import revoke_device_token

    settings = settings or get_settings()
    with _locked(settings):
        store = _load(settings)
        entry = store["tenants"].pop(name, None)
        if entry is None:
            raise tenant_not_found(name)
        for device_id in entry["devices"]:
            revoke_device_token(device_id, settings)
        _set_gateway_key(settings, name, None)
        write_json_secret(TENANTS_FILE, store, settings)
    logger.info("tenant %s deleted", name)
    return _from_entry(entry)


def redis_admin_password(settings: Settings | None = None) -> str:
    return get_or_create_secret("redis_admin_password", settings)


def redis_acl_rules(tenant: Tenant, password: str) -> list[str]:
    """Return the ACL SETUSER rules of a tenant's Redis user, starting from ``reset``."""
    prefix = tenant.redis_key_prefix
    return [
        "reset",
        "on",
        f">{password}",
        f"~{prefix}*",
        "resetchannels",
        f"&{prefix}*",
        "-@all",
        *(f"+{command}" for command in CACHE_COMMANDS),
    ]


def redis_acl_lines(settings: Settings | None = None) -> list[str]:
    """Return one ``user ...`` line per tenant, as in redis.conf or an ACL file."""
    settings = settings or get_settings()
    lines = []
    for _, entry in sorted(_load(settings)["tenants"].items()):
        tenant = _from_entry(entry)
        rules = redis_acl_rules(tenant, entry["redis_password"])[1:]
        lines.append(" ".join(["user", tenant.redis_user, *rules]))
    return lines


def apply_redis_acls(client: Any, settings: Settings | None = None) -> list[str]:
    """Set every tenant's ACL user on a running Redis and drop users of deleted tenants.

    Args:
        client: a redis-py client logged in as a user allowed to run ACL (the admin user).

    Returns:
        The names of the users set.
    """
    settings = settings or get_settings()
    store = _load(settings)["tenants"]
    applied = []
    for _, entry in sorted(store.items()):
        tenant = _from_entry(entry)
        client.execute_command(
            "ACL", "SETUSER", tenant.redis_user, *redis_acl_rules(tenant, entry["redis_password"])
        )
        applied.append(tenant.redis_user)
    expected_users = set(applied)
    for user in client.execute_command("ACL", "USERS"):
        user = user.decode() if isinstance(user, bytes) else user
        if user.startswith("saodf-t-") and user not in expected_users:
            client.execute_command("ACL", "DELUSER", user)
            logger.info("dropped the Redis user %s of a deleted tenant", user)
    logger.info("applied the Redis ACL of %d tenants", len(applied))
    return applied


def tenant_redis_password(name: str, settings: Settings | None = None) -> str:
    """Return a tenant's current Redis password.

    Raises:
        TenantError: no such tenant.
    """
    settings = settings or get_settings()
    entry = _load(settings)["tenants"].get(name)
    if entry is None:
        raise TenantError(f"tenant {name!r} does not exist; create it first")
    return entry["redis_password"]


def admin_redis_client(settings: Settings | None = None, timeout: float = 5.0) -> Any:
    """Return a redis-py client logged in as the admin ACL user of the stack's Redis."""
    import redis

    from actions.cache import redis_tls_options

    settings = settings or get_settings()
    return redis.Redis(
        host=settings.redis_host,
        port=settings.redis_port,
        username=REDIS_ADMIN_USER,
        password=redis_admin_password(settings),
        decode_responses=True,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        **redis_tls_options(settings),
    )


def audit_admin(settings: Settings, action: str, resource: str, outcome: str) -> None:
    """Append an admin command to ``SAODF_HOME/logs/admin_audit.jsonl``."""
    import getpass

    from actions.audit import AuditLog

    AuditLog(settings.log_dir / "admin_audit.jsonl").append(
        "admin",
        tenant=resource.split("/", 1)[0],
        actor=f"user:{getpass.getuser()}",
        action=action,
        resource=resource,
        outcome=outcome,
        client="local",
    )


def tenant_lake_url(tenant: Tenant, lake_url: str, zone: str, device_id: str) -> str:
    """Return the folder of one of a tenant's devices in a lake zone.

    Raises:
        TenantError: the device id breaks the telemetry contract or belongs to another tenant.
    """
    from saodf.lake import zone_url
    from saodf.telemetry import DEVICE_ID_PATTERN

    if not isinstance(device_id, str) or not DEVICE_ID_PATTERN.match(device_id):
        raise TenantError(
            f"device_id {device_id!r} is invalid; use 1-128 characters from A-Z a-z 0-9 . _ - "
            "starting with a letter or digit"
        )
    if not device_id.startswith(f"{tenant.name}."):
        raise TenantError(
            f"device_id {device_id!r} is not a device of tenant {tenant.name!r}; "
            f"its ids start with {tenant.name}."
        )
    return zone_url(lake_url, tenant.lake_prefix.rstrip("/"), zone, f"device_id={device_id}")


def tenant_settings(tenant: Tenant | str, base: Settings | None = None) -> Settings:
    """Return ``base`` scoped to one tenant's topics, queues, lake, Redis user and MLflow names.

    Topic names get the tenant's topic prefix (``t.acme.telemetry.raw``). SQS queues get
    the prefix ``t-<name>-``, because SQS names allow no dots. The lake URL moves under the
    tenant's lake prefix and the Redis user becomes the tenant's ACL user. The MLflow
    experiment and registered-model prefix get the tenant's MLflow prefix
    (``acme.telemetry_pipeline``, ``acme.saodf-forecaster``). ``extra["tenant"]`` names the tenant, which
    :func:`settings_tenant` reads back. The tenant need not be registered: the names follow
    from :func:`tenant_layout` alone.

    Raises:
        TenantError: the name is invalid, or ``base`` is already scoped to a tenant.
    """
    tenant = tenant_layout(tenant) if isinstance(tenant, str) else tenant
    base = base or get_settings()
    scoped = base.extra.get(TENANT_SETTING)
    if scoped:
        raise TenantError(
            f"settings are already scoped to tenant {scoped!r}; pass the stack's settings to "
            f"scope them to {tenant.name!r}"
        )
    topic = tenant.kafka_topic_prefix
    queue = f"t-{tenant.name}-"
    return base.with_overrides(
        topic_raw=topic + base.topic_raw,
        topic_windows=topic + base.topic_windows,
        topic_anomalies=topic + base.topic_anomalies,
        topic_dlq=topic + base.topic_dlq,
        sqs_queue=queue + base.sqs_queue,
        sqs_dlq=queue + base.sqs_dlq,
        lake_url=base.lake_path(tenant.lake_prefix.rstrip("/")),
        redis_user=tenant.redis_user,
        mlflow_experiment=tenant.mlflow_prefix + base.mlflow_experiment,
        registered_model_prefix=tenant.mlflow_prefix + base.registered_model_prefix,
        extra={**base.extra, TENANT_SETTING: tenant.name},
    )


def settings_tenant(settings: Settings) -> Tenant | None:
    """Return the tenant that :func:`tenant_settings` scoped ``settings`` to, or None."""
    name = settings.extra.get(TENANT_SETTING)
    return tenant_layout(name) if name else None


def runtime_settings(base: Settings | None = None) -> Settings:
    """Return this process's settings, scoped to the tenant named by ``SAODF_TENANT`` if set.

    The action gateway sets ``SAODF_TENANT`` in the runtime processes of a tenant's
    namespace, so the actions there reach only that tenant's keys and lake.

    Raises:
        TenantError: ``SAODF_TENANT`` is not a valid tenant name.
    """
    import os

    base = base or get_settings()
    name = os.environ.get(TENANT_ENV)
    return tenant_settings(name, base) if name else base


class TenantRegistry:
    """Read-only view of the tenant registry, read again whenever the file changes on disk."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._path = settings.home / "secrets" / TENANTS_FILE
        self._mtime_ns: int | None = None
        self._tenants: dict[str, Tenant] = {}
        self._owners: dict[str, str] = {}
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        try:
            mtime = self._path.stat().st_mtime_ns
        except FileNotFoundError:
            self._tenants, self._owners, self._mtime_ns = {}, {}, None
            return
        if mtime == self._mtime_ns:
            return
        tenants = {
            name: _from_entry(entry) for name, entry in _load(self.settings)["tenants"].items()
        }
        self._tenants = tenants
        self._owners = {
            device_id: tenant.name for tenant in tenants.values() for device_id in tenant.devices
        }
        self._mtime_ns = mtime

    def tenant(self, name: str) -> Tenant | None:
        """Return the registered tenant called ``name``, or None."""
        with self._lock:
            self._refresh()
            return self._tenants.get(name)

    def owner(self, device_id: str) -> Tenant | None:
        """Return the tenant that lists ``device_id`` among its devices, or None."""
        with self._lock:
            self._refresh()
            name = self._owners.get(device_id)
            return self._tenants.get(name) if name else None

    def device_tenant(self, device_id: str) -> Tenant | None:
        """Return the tenant that ``device_id`` belongs to, or None for the stack's own devices.

        A device belongs to the tenant that lists it, or else to the registered tenant named
        by the part of its id before the first dot.
        """
        tenant = self.owner(device_id)
        if tenant is None and "." in device_id:
            tenant = self.tenant(device_id.split(".", 1)[0])
        return tenant

    def owner_namespace(self, device_id: str, default: str) -> str:
        """Return the namespace of ``device_id``'s tenant, or ``default`` for the stack's own."""
        tenant = self.device_tenant(device_id)
        return tenant.namespace if tenant is not None else default

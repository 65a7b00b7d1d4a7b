"""Service specs of the ingest path: mosquitto, the HTTP gateway, the MQTT bridge, the SQS drain.

:func:`ingest_service_specs` returns them in start order for the stack manager, with one
SQS drain per tenant registered at that time.
Mosquitto listens on ``SAODF_MQTT_PORT`` on ``settings.host`` only, without anonymous
access. Its password file lists the bridge user and every device that has an ingest
token, and its ACL lets each device publish only to ``devices/<device_id>/telemetry``.
"""

from __future__ import annotations

import getpass
import os
import shutil
from pathlib import Path

from saodf.config import Settings
from saodf.errors import ServiceError
from saodf.stack.process import ServiceSpec, http_ok, running_process, tcp_accepts
from saodf.stack.services import python_service_spec, saodf_env
from saodf.tenants import list_tenants
from streaming.ingest_config import IngestConfig, name_override_env
from streaming.mqtt_bridge import TOPIC_FILTER
from streaming.tokens import MQTT_BRIDGE_USER, mosquitto_password_lines

MOSQUITTO = "mosquitto"


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def mosquitto_dir(settings: Settings) -> Path:
    path = settings.home / "mosquitto"
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_mosquitto_files(settings: Settings, config: IngestConfig) -> Path:
    """Write mosquitto.conf, the password file and the ACL file; return the config path."""
    folder = mosquitto_dir(settings)
    passwords = folder / "passwords"
    acl = folder / "acl"
    _write_private(passwords, "\n".join(mosquitto_password_lines(settings)) + "\n")
    _write_private(
        acl,
        "\n".join(
            [
                f"user {MQTT_BRIDGE_USER}",
                f"topic read {TOPIC_FILTER}",
                "",
                "pattern write devices/%u/telemetry",
            ]
        )
        + "\n",
    )
    (folder / "data").mkdir(exist_ok=True)
    conf = folder / "mosquitto.conf"
    lines = [
        # Mosquitto started as root switches to this user: keep the owner of these files.
        f"user {getpass.getuser()}",
        "per_listener_settings false",
        f"listener {config.mqtt_port} {settings.host}",
        "allow_anonymous false",
        f"password_file {passwords}",
        f"acl_file {acl}",
        "persistence true",
        f"persistence_location {folder / 'data'}/",
        "max_queued_messages 100000",
        "log_dest stdout",
        "log_type error",
        "log_type warning",
        "log_type notice",
    ]
    _write_private(conf, "\n".join(lines) + "\n")
    return conf


def mosquitto_spec(settings: Settings, config: IngestConfig | None = None) -> ServiceSpec:
    config = config or IngestConfig.from_env()
    binary = shutil.which(MOSQUITTO) or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if binary is None:
        raise ServiceError(
            "mosquitto not found on PATH or in /usr/sbin; install it with "
            "`apt-get install mosquitto` (Debian/Ubuntu)"
        )
    conf = write_mosquitto_files(settings, config)
    return ServiceSpec(
        name="mosquitto",
        argv=[binary, "-c", str(conf)],
        run_dir=settings.run_dir,
        log_dir=settings.log_dir,
        port=config.mqtt_port,
        host=settings.host,
        cwd=settings.home,
        health=lambda: tcp_accepts(settings.host, config.mqtt_port),
        start_timeout=20,
        port_env_var="SAODF_MQTT_PORT",
    )


def reload_mosquitto(settings: Settings, config: IngestConfig | None = None) -> bool:
    """Rewrite the password and ACL files and send SIGHUP to our mosquitto; False if none runs."""
    import signal

    spec = mosquitto_spec(settings, config)
    process = running_process(spec)
    if process is None:
        return False
    process.send_signal(signal.SIGHUP)
    return True


def _python_spec(
    settings: Settings, config: IngestConfig, name: str, module: str, port=None, health=None
) -> ServiceSpec:
    spec = python_service_spec(settings, name, module, port, health=health)
    spec.env = {**saodf_env(settings), **config.env(), **name_override_env(settings)}
    return spec


def ingest_gateway_spec(settings: Settings, config: IngestConfig | None = None) -> ServiceSpec:
    """Return the spec of the ingest gateway process on ``config.http_port``."""
    config = config or IngestConfig.from_env()
    port = config.http_port
    gateway = _python_spec(
        settings,
        config,
        "ingest-gateway",
        "streaming.ingest_gateway",
        port,
        health=lambda: http_ok(f"http://{settings.host}:{port}/health"),
    )
    gateway.port_env_var = "SAODF_INGEST_PORT"
    return gateway


def ingest_service_specs(
    settings: Settings, config: IngestConfig | None = None
) -> list[ServiceSpec]:
    """Return the specs of mosquitto, the ingest gateway, the SQS drains and the MQTT bridge.

    The order is the start order: the bridge needs mosquitto, and the gateway and the
    drain need the Kafka broker and moto, which the stack starts before them.
    """
    config = config or IngestConfig.from_env()
    gateway = ingest_gateway_spec(settings, config)
    drains = [_python_spec(settings, config, "sqs-drain", "streaming.sqs_drain")]
    # NOTE: a tenant created after the stack started has no drain until the stack restarts,
    # so its readings routed to SQS wait in its queue until then.
    for tenant in list_tenants(settings):
        drain = _python_spec(settings, config, f"sqs-drain-{tenant.name}", "streaming.sqs_drain")
        drain.argv += ["--tenant", tenant.name]
        drains.append(drain)
    bridge = _python_spec(settings, config, "mqtt-bridge", "streaming.mqtt_bridge")
    return [mosquitto_spec(settings, config), gateway, *drains, bridge]

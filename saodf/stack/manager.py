"""``saodf stack up|down|status``: the whole local stack in dependency order."""

from __future__ import annotations

import logging
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from saodf.config import Settings
from saodf.errors import SaodfError, ServiceError
from saodf.stack import process, services

logger = logging.getLogger(__name__)

SERVICE_ORDER = [
    "broker",
    "redis",
    "moto",
    "mosquitto",
    "ingest-gateway",
    "sqs-drain",
    "mqtt-bridge",
    "mlflow",
    "gateway",
    "cache-monitor",
    "lake-writer",
    "anomaly-consumer",
    "airflow-api-server",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
]


def service_specs(settings: Settings) -> dict[str, process.ServiceSpec]:
    specs = {
        "broker": services.broker_spec(settings),
        "redis": services.redis_spec(settings),
        "moto": services.moto_spec(settings),
        "mlflow": services.mlflow_spec(settings),
        "gateway": services.gateway_spec(settings),
        "lake-writer": services.python_service_spec(
            settings, "lake-writer", "streaming.lake_writer"
        ),
        "anomaly-consumer": services.python_service_spec(
            settings, "anomaly-consumer", "streaming.anomaly_consumer"
        ),
    }
    from actions.services import realtime_service_specs
    from streaming.services import ingest_service_specs

    for spec in realtime_service_specs(settings):
        specs[spec.name] = spec

    for spec in ingest_service_specs(settings):
        specs[spec.name] = spec
    for spec in services.airflow_specs(settings):
        specs[spec.name] = spec
    return {name: specs[name] for name in SERVICE_ORDER}


def prepare_airflow(settings: Settings) -> None:
    """Migrate the Airflow metadata DB, create the heavy-task pool and write the admin password.

    Each step runs once per home: markers in AIRFLOW_HOME record what was done.
    """
    services.ensure_airflow_passwords(settings)
    env = services.airflow_env(settings)
    home = services.airflow_home(settings)
    marker = home / ".migrated"
    log_file = settings.log_dir / "airflow-db-migrate.log"
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    if not marker.exists():
        logger.info("migrating the Airflow metadata DB in %s (log %s)", home, log_file)
        _airflow_cli(env, ["db", "migrate"], log_file)
        marker.write_text(time.strftime("%Y-%m-%dT%H:%M:%S"), encoding="utf-8")
    for pool in airflow_pools(settings):
        pool_marker = home / f".pool-{pool.name}-{pool.slots}"
        if not pool_marker.exists():
            _airflow_cli(
                env, ["pools", "set", pool.name, str(pool.slots), pool.description], log_file
            )
            pool_marker.write_text(time.strftime("%Y-%m-%dT%H:%M:%S"), encoding="utf-8")


@dataclass(frozen=True)
class PoolSpec:
    """An Airflow pool that :func:`prepare_airflow` creates."""

    name: str
    slots: int
    description: str
    # True when each task in the pool keeps a CPU core busy for its whole run.
    cpu_heavy: bool


def airflow_pools(settings: Settings) -> tuple[PoolSpec, ...]:
    """Return the pools of the stack, sized by SAODF_HEAVY_POOL_SLOTS and SAODF_REMOTE_POOL_SLOTS."""
    return (
        PoolSpec(
            settings.heavy_pool,
            settings.heavy_pool_slots,
            "CPU-heavy pipeline tasks (preprocess, train, transform)",
            cpu_heavy=True,
        ),
        PoolSpec(
            settings.remote_pool,
            settings.remote_pool_slots,
            "tasks that wait on Glue and SageMaker jobs (aws target)",
            cpu_heavy=False,
        ),
    )


def _airflow_cli(env: dict[str, str], args: list[str], log_file: Path) -> None:
    import os

    with open(log_file, "ab") as log:
        result = subprocess.run(  # noqa: S603
            [services.find_binary("airflow"), *args],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=600,
            check=False,
        )
    if result.returncode != 0:
        raise ServiceError(
            f"`airflow {' '.join(args)}` failed with code {result.returncode}; see {log_file}"
        )


def ensure_topics(settings: Settings) -> None:
    from streaming.kafka import ensure_topics as create

    create(
        settings,
        [settings.topic_raw, settings.topic_windows, settings.topic_anomalies, settings.topic_dlq],
    )


# Services that keep Kafka clients open. The broker keeps its topics, offsets and producer ids
# in memory. After it restarted, the ingest gateway's producer was seen to time out until the
# gateway restarted, so every client is restarted with it.
BROKER_CLIENTS = [
    "ingest-gateway",
    "sqs-drain",
    "mqtt-bridge",
    "lake-writer",
    "anomaly-consumer",
    "airflow-triggerer",
]


def up(settings: Settings, only: list[str] | None = None, echo=print) -> dict[str, str]:
    """Start every service (or ``only`` these) that is not already healthy.

    When the broker was (re)started, the platform topics are created again and the running
    services in :data:`BROKER_CLIENTS` are restarted, whether or not ``only`` names them.
    """
    settings.home.mkdir(parents=True, exist_ok=True)
    specs = service_specs(settings)
    names = [n for n in SERVICE_ORDER if only is None or n in only]
    unknown = sorted(set(only or []) - set(SERVICE_ORDER))
    if unknown:
        raise ServiceError(f"unknown services {unknown}; choose from {SERVICE_ORDER}")
    _check_ports(specs, names)
    results: dict[str, str] = {}
    for name in names:
        if name.startswith("airflow-") and "airflow-prepared" not in results:
            echo("  preparing Airflow metadata DB ...")
            prepare_airflow(settings)
            results["airflow-prepared"] = "ok"
        if name in ("lake-writer", "ingest-gateway") and "topics" not in results:
            ensure_topics(settings)
            results["topics"] = "ok"
        started = time.monotonic()
        state = process.start(specs[name])
        results[name] = state
        echo(f"  {name:<22} {state:<8} ({time.monotonic() - started:4.1f} s)")
        if name == "broker" and state == "started":
            ensure_topics(settings)
            results["topics"] = "ok"
            results.update(restart_broker_clients(specs, names, echo))
    results.pop("airflow-prepared", None)
    results.pop("topics", None)
    return results


def restart_broker_clients(
    specs: dict[str, process.ServiceSpec], names: list[str], echo=print
) -> dict[str, str]:
    """Restart the running broker clients after a broker restart; stop those ``up`` will start.

    Returns:
        The state of each client restarted here ("restarted"); the clients in ``names`` are
        only stopped, so that ``up`` starts them in dependency order.
    """
    results: dict[str, str] = {}
    for name in BROKER_CLIENTS:
        spec = specs[name]
        if process.running_process(spec) is None:
            continue
        logger.warning("broker restarted: restarting %s (pid file %s)", name, spec.pid_file)
        process.stop(spec)
        if name in names:
            echo(f"  {name:<22} stopped  (the broker restarted; starting it again below)")
            continue
        started = time.monotonic()
        process.start(spec)
        results[name] = "restarted"
        echo(f"  {name:<22} restarted ({time.monotonic() - started:4.1f} s, the broker restarted)")
    return results


def _check_ports(specs: dict[str, process.ServiceSpec], names: list[str]) -> None:
    """Fail before starting anything when a port of a stopped service is taken."""
    busy = []
    for name in names:
        spec = specs[name]
        if spec.port is None or process.running_process(spec) is not None:
            continue
        if not process.port_is_free(spec.host, spec.port):
            hint = spec.port_env_var or "the service's port setting"
            busy.append(f"{name} needs {spec.host}:{spec.port} (set {hint} to move it)")
    if busy:
        raise ServiceError(
            "ports already in use by other processes, nothing was started: " + "; ".join(busy)
        )


# Services that only consume from others stop first, all at once; the stores they use after.
STOP_TIERS = [
    [
        "airflow-triggerer",
        "airflow-dag-processor",
        "airflow-scheduler",
        "airflow-api-server",
        "anomaly-consumer",
        "lake-writer",
        "cache-monitor",
        "mqtt-bridge",
        "sqs-drain",
        "ingest-gateway",
        "gateway",
    ],
    ["mlflow", "mosquitto", "moto", "redis", "broker"],
]


def down(settings: Settings, echo=print) -> dict[str, str]:
    """Stop the services whose pid files ``up`` wrote, consumers first, each tier in parallel."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    results: dict[str, str] = {}
    ports = _service_ports(settings)
    for tier in STOP_TIERS:
        with ThreadPoolExecutor(max_workers=len(tier)) as pool:
            futures = {
                pool.submit(process.stop, _spec_for_stop(settings, name, ports)): name
                for name in tier
            }
            for future in as_completed(futures):
                name = futures[future]
                try:
                    results[name] = future.result()
                except ServiceError as exc:
                    results[name] = f"failed: {exc}"
                echo(f"  {name:<22} {results[name]}")
    failed = [name for name, state in results.items() if state.startswith("failed")]
    if failed:
        raise ServiceError(
            f"stack down failed to stop {', '.join(failed)}; see the lines above for each, "
            "then run saodf stack down again"
        )
    return results


def _spec_for_stop(settings: Settings, name: str, ports: dict[str, int]) -> process.ServiceSpec:
    # Stopping needs only the pid file and the port. Do not require binaries that may be gone.
    return process.ServiceSpec(
        name=name,
        argv=[],
        run_dir=settings.run_dir,
        log_dir=settings.log_dir,
        port=ports.get(name),
        host=settings.host,
        # The scheduler can ignore SIGTERM for a long time. SIGKILL follows this timeout.
        stop_timeout=20 if name.startswith("airflow-") or name == "mlflow" else 10,
    )


def _service_ports(settings: Settings) -> dict[str, int]:
    """Return the port of each service that has one, or none when the specs cannot be built."""
    try:
        specs = service_specs(settings)
    except SaodfError as exc:
        logger.warning("service ports unknown, so stack down cannot check them: %s", exc)
        return {}
    return {name: spec.port for name, spec in specs.items() if spec.port is not None}


def status(settings: Settings) -> list[dict]:
    specs = service_specs(settings)
    return [process.status(specs[name]) for name in SERVICE_ORDER]


def urls(settings: Settings) -> dict[str, str]:
    from streaming.ingest_config import IngestConfig

    ingest = IngestConfig.from_env()
    return {
        "ingest": f"http://{settings.host}:{ingest.http_port}/v1/telemetry",
        "mqtt": f"mqtt://{settings.host}:{ingest.mqtt_port}",
        "airflow": f"http://{settings.host}:{settings.ports['airflow']}",
        "mlflow": settings.mlflow_tracking_uri,
        "gateway": settings.gateway_url,
        "kafka": settings.kafka_bootstrap,
        "redis": f"redis://{settings.redis_host}:{settings.redis_port}",
        "moto": settings.aws_endpoint_url or "",
    }


def secrets_location(settings: Settings) -> Path:
    return settings.home / "secrets"

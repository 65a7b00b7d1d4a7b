"""Settings of the device ingest path, read from ``SAODF_*`` environment variables.

They extend :class:`saodf.config.Settings` with the ingest ports, the routing policy, the
broker capacities that load scores are measured against and the SQS queue options.
``SAODF_TOPIC_RAW``, ``SAODF_TOPIC_DLQ``, ``SAODF_SQS_QUEUE`` and ``SAODF_SQS_DLQ`` override
the topic and queue names, so that several ingest stacks can share one broker.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from saodf.config import Settings
from saodf.errors import ConfigError
from streaming.router import RoutingPolicy

DEFAULT_INGEST_PORT = 13240
DEFAULT_MQTT_PORT = 11883
NAME_OVERRIDES = {
    "SAODF_TOPIC_RAW": "topic_raw",
    "SAODF_TOPIC_DLQ": "topic_dlq",
    "SAODF_SQS_QUEUE": "sqs_queue",
    "SAODF_SQS_DLQ": "sqs_dlq",
}


def _number(name: str, default: float, minimum: float = 0.0) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number; set it to e.g. {default}") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} is below the minimum {minimum}")
    return value


def _integer(name: str, default: int, minimum: int = 0) -> int:
    value = _number(name, default, minimum)
    if value != int(value):
        raise ConfigError(f"{name}={value} is not a whole number")
    return int(value)


@dataclass(frozen=True)
class IngestConfig:
    """Ports, routing policy, broker capacities and queue options of the ingest path.

    Capacities are in messages per second and messages; latencies and timeouts in seconds.
    """

    http_port: int = DEFAULT_INGEST_PORT
    mqtt_port: int = DEFAULT_MQTT_PORT
    policy: RoutingPolicy = RoutingPolicy()
    # NOTE: the capacities are starting points, not measured limits of any deployment.
    kafka_capacity_rate: float = 5000.0
    kafka_capacity_depth: int = 20_000
    sqs_capacity_rate: float = 500.0
    sqs_capacity_depth: int = 50_000
    ack_timeout_s: float = 10.0
    probe_interval_s: float = 0.25
    max_body_bytes: int = 1024 * 1024
    max_batch: int = 1000
    sqs_visibility_timeout_s: int = 30
    sqs_max_receive_count: int = 5

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ConfigError(f"max_batch={self.max_batch} is invalid; use 1 or more")
        if self.ack_timeout_s <= 0 or self.probe_interval_s <= 0:
            raise ConfigError(
                f"ack_timeout_s={self.ack_timeout_s} and probe_interval_s="
                f"{self.probe_interval_s} must both be seconds > 0"
            )

    @classmethod
    def from_env(cls) -> "IngestConfig":
        policy = RoutingPolicy(
            t_max_s=_number("SAODF_INGEST_T_MAX_S", 0.5),
            saturation=_number("SAODF_INGEST_SATURATION", 1.0),
            max_attempts=_integer("SAODF_INGEST_MAX_ATTEMPTS", 5),
            backoff_base_s=_number("SAODF_INGEST_BACKOFF_BASE_S", 0.05),
            backoff_max_s=_number("SAODF_INGEST_BACKOFF_MAX_S", 2.0),
            tie_margin=_number("SAODF_INGEST_TIE_MARGIN", 0.05),
        )
        return cls(
            http_port=_integer("SAODF_INGEST_PORT", DEFAULT_INGEST_PORT, minimum=1),
            mqtt_port=_integer("SAODF_MQTT_PORT", DEFAULT_MQTT_PORT, minimum=1),
            policy=policy,
            kafka_capacity_rate=_number("SAODF_INGEST_KAFKA_CAPACITY_RATE", 5000.0, 0.001),
            kafka_capacity_depth=_integer("SAODF_INGEST_KAFKA_CAPACITY_DEPTH", 20_000, 1),
            sqs_capacity_rate=_number("SAODF_INGEST_SQS_CAPACITY_RATE", 500.0, 0.001),
            sqs_capacity_depth=_integer("SAODF_INGEST_SQS_CAPACITY_DEPTH", 50_000, 1),
            ack_timeout_s=_number("SAODF_INGEST_ACK_TIMEOUT_S", 10.0, 0.1),
            probe_interval_s=_number("SAODF_INGEST_PROBE_INTERVAL_S", 0.25, 0.01),
            max_batch=_integer("SAODF_INGEST_MAX_BATCH", 1000, 1),
            sqs_visibility_timeout_s=_integer("SAODF_SQS_VISIBILITY_TIMEOUT_S", 30, 1),
            sqs_max_receive_count=_integer("SAODF_SQS_MAX_RECEIVE_COUNT", 5, 1),
        )

    def env(self) -> dict[str, str]:
        """Return the environment variables that give a child process this configuration."""
        policy = self.policy
        return {
            "SAODF_INGEST_PORT": str(self.http_port),
            "SAODF_MQTT_PORT": str(self.mqtt_port),
            "SAODF_INGEST_T_MAX_S": str(policy.t_max_s),
            "SAODF_INGEST_SATURATION": str(policy.saturation),
            "SAODF_INGEST_MAX_ATTEMPTS": str(policy.max_attempts),
            "SAODF_INGEST_BACKOFF_BASE_S": str(policy.backoff_base_s),
            "SAODF_INGEST_BACKOFF_MAX_S": str(policy.backoff_max_s),
            "SAODF_INGEST_TIE_MARGIN": str(policy.tie_margin),
            "SAODF_INGEST_KAFKA_CAPACITY_RATE": str(self.kafka_capacity_rate),
            "SAODF_INGEST_KAFKA_CAPACITY_DEPTH": str(self.kafka_capacity_depth),
            "SAODF_INGEST_SQS_CAPACITY_RATE": str(self.sqs_capacity_rate),
            "SAODF_INGEST_SQS_CAPACITY_DEPTH": str(self.sqs_capacity_depth),
            "SAODF_INGEST_ACK_TIMEOUT_S": str(self.ack_timeout_s),
            "SAODF_INGEST_PROBE_INTERVAL_S": str(self.probe_interval_s),
            "SAODF_INGEST_MAX_BATCH": str(self.max_batch),
            "SAODF_SQS_VISIBILITY_TIMEOUT_S": str(self.sqs_visibility_timeout_s),
            "SAODF_SQS_MAX_RECEIVE_COUNT": str(self.sqs_max_receive_count),
        }


def with_name_overrides(settings: Settings) -> Settings:
    """Apply the topic and queue names set in the environment to ``settings``."""
    changes = {
        field_name: os.environ[var]
        for var, field_name in NAME_OVERRIDES.items()
        if os.environ.get(var)
    }
    return settings.with_overrides(**changes) if changes else settings


def name_override_env(settings: Settings) -> dict[str, str]:
    """Return the variables that give a child process the topic and queue names of ``settings``."""
    return {var: getattr(settings, field_name) for var, field_name in NAME_OVERRIDES.items()}

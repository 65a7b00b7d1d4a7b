"""confluent-kafka client configuration, topic creation and delivery-report checks.

Every SAODF producer, consumer and admin client is built here from :class:`Settings`,
so that the broker address, session timeout and durability options agree everywhere.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from saodf.config import Settings
from saodf.errors import ConfigError, SaodfError

logger = logging.getLogger(__name__)

DEFAULT_FLUSH_TIMEOUT_S = 30.0


class StreamingError(SaodfError):
    """A Kafka operation (topic creation, produce, commit) failed."""


def _client_id(role: str) -> str:
    return f"saodf-{role}-{socket.gethostname()}"


def producer_config(settings: Settings, role: str = "producer", **overrides: Any) -> dict[str, Any]:
    """Build a durable producer configuration for ``settings.kafka_bootstrap``.

    ``acks=all`` with idempotence keeps retries from writing a message twice. Tansu 0.6
    accepts idempotent producers: with confluent-kafka 2.16 they deliver without errors.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "client.id": _client_id(role),
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "message.timeout.ms": 30_000,
        # Topics are created by ensure_topics with their partition count. A restarted broker
        # would otherwise auto-create a topic with its own default count (4 on Tansu 0.6) when
        # a producer with queued messages reconnects before the topics are ensured.
        "allow.auto.create.topics": False,
    }
    config.update(overrides)
    return config


def consumer_config(settings: Settings, group_id: str, **overrides: Any) -> dict[str, Any]:
    """Build a consumer configuration that commits offsets only when the caller says so.

    The short session timeout matters: joining a group takes about half of it.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "client.id": _client_id("consumer"),
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": settings.kafka_session_timeout_ms,
        "heartbeat.interval.ms": max(settings.kafka_session_timeout_ms // 3, 100),
    }
    config.update(overrides)
    return config


# Tansu 0.6 returns a fetch response only after fetch.wait.max.ms even when records are
# waiting, so librdkafka's default of 500 ms adds up to half a second to every read. A short
# wait costs the broker one fetch per partition per wait. NOTE: on Tansu's memory engine the
# round trip grows with the partition's length; the cause inside the broker is unmeasured.
# Measured with bench/realtime.py's bare consumer on 2 cores at 2,000 msg/s on one fresh
# partition for 60 s: 500 ms gave p50 132 ms; 5 ms gave p50 6 ms at first, but the broker
# saturated after about 40 s (10 s latencies); 10 ms gave p50 8-22 ms, rising with the
# partition, p99 81 ms; 25 ms gave p50 11-30 ms, p99 61 ms.
LATENCY_FETCH_WAIT_MAX_MS = 10
FETCH_WAIT_ENV = "SAODF_KAFKA_FETCH_WAIT_MAX_MS"
LATENCY_CONSUMER_CONFIG_ENV = "SAODF_KAFKA_LATENCY_CONSUMER_CONFIG"


def parse_client_overrides(text: str, source: str = LATENCY_CONSUMER_CONFIG_ENV) -> dict[str, str]:
    """Parse comma-separated librdkafka ``name=value`` pairs such as ``fetch.min.bytes=1``.

    Values stay strings, which librdkafka accepts for every property.

    Raises:
        ConfigError: a pair has no ``=`` or an empty name.
    """
    overrides: dict[str, str] = {}
    for pair in text.split(","):
        pair = pair.strip()
        if not pair:
            continue
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ConfigError(
                f"{source} entry {pair!r} is invalid; write librdkafka properties as "
                "name=value pairs separated by commas, e.g. fetch.wait.max.ms=5"
            )
        overrides[name.strip()] = value.strip()
    return overrides


def latency_consumer_config(settings: Settings, group_id: str, **overrides: Any) -> dict[str, Any]:
    """Build :func:`consumer_config` for a consumer that must see records within milliseconds.

    Sets ``fetch.wait.max.ms`` from ``SAODF_KAFKA_FETCH_WAIT_MAX_MS`` (default
    ``LATENCY_FETCH_WAIT_MAX_MS``), then the librdkafka properties listed in
    ``SAODF_KAFKA_LATENCY_CONSUMER_CONFIG`` (``name=value,...``), then ``overrides``.

    Raises:
        ConfigError: one of the two variables is invalid.
    """
    raw_wait = os.environ.get(FETCH_WAIT_ENV, "").strip()
    try:
        fetch_wait_ms = int(raw_wait) if raw_wait else LATENCY_FETCH_WAIT_MAX_MS
    except ValueError:
        raise ConfigError(
            f"{FETCH_WAIT_ENV}={raw_wait!r} is not an integer; set it to milliseconds, e.g. 5"
        ) from None
    if fetch_wait_ms < 0:
        raise ConfigError(f"{FETCH_WAIT_ENV}={fetch_wait_ms} is negative; set 0 or more ms")
    extra = parse_client_overrides(os.environ.get(LATENCY_CONSUMER_CONFIG_ENV, ""))
    return consumer_config(
        settings, group_id, **{"fetch.wait.max.ms": fetch_wait_ms, **extra, **overrides}
    )


def poll_batch(consumer: Consumer, max_messages: int, timeout: float) -> list[Any]:
    """Wait up to ``timeout`` s for one message, then add what is already fetched, up to a max.

    ``Consumer.consume(n, timeout)`` blocks until ``n`` messages or the timeout, so a batch
    of a slow stream waits the whole timeout. This returns as soon as one message is there,
    and a consumer that falls behind still gets full batches. The list contains error
    events (partition EOF among them) as the client returns them.
    """
    first = consumer.poll(timeout)
    if first is None:
        return []
    if max_messages <= 1:
        return [first]
    return [first, *consumer.consume(max_messages - 1, timeout=0)]


def admin_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "client.id": _client_id("admin"),
    }
    config.update(overrides)
    return config


def ensure_topics(
    settings: Settings,
    names: Iterable[str],
    partitions: int = 1,
    timeout: float = 15.0,
) -> list[str]:
    """Create the topics in ``names`` that do not exist yet and return the created names.

    Raises:
        StreamingError: when the broker rejects a topic or does not respond within ``timeout``.
    """
    wanted = sorted(set(names))
    if partitions < 1:
        raise StreamingError(f"partitions={partitions} is invalid; use 1 or more")
    require_broker(settings)
    admin = AdminClient(admin_config(settings))
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in wanted],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    created: list[str] = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                logger.debug("topic %s already exists", name)
                continue
            raise StreamingError(
                f"creating topic {name!r} on {settings.kafka_bootstrap} failed: {error.str()}; "
                "check that the broker is running and accepts topic creation"
            ) from exc
        except TimeoutError as exc:
            raise StreamingError(
                f"creating topic {name!r} on {settings.kafka_bootstrap} timed out after "
                f"{timeout} s; check that the broker is running"
            ) from exc
        logger.info("created topic %s with %d partition(s)", name, partitions)
        created.append(name)
    return sorted(created)


@dataclass
class DeliveryTracker:
    """Delivery-report callback that counts successes and keeps each failure with its key."""

    delivered: int = 0
    failures: list[tuple[str, str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __call__(self, error: KafkaError | None, message: Any) -> None:
        key = message.key()
        key_text = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
        with self._lock:
            if error is None:
                self.delivered += 1
                return
            self.failures.append((message.topic(), key_text, error.str()))
        # Only the first failures are logged one by one so that a dead broker does not flood the log.
        if len(self.failures) <= 10:
            logger.error(
                "delivery to %s failed for key %s: %s", message.topic(), key_text, error.str()
            )

    def raise_for_failures(self) -> None:
        """Raise :class:`StreamingError` naming the failed keys when any delivery failed."""
        with self._lock:
            failures = list(self.failures)
        if not failures:
            return
        topic, key, reason = failures[0]
        raise StreamingError(
            f"{len(failures)} message(s) were not delivered; first: topic {topic!r} key "
            f"{key!r}: {reason}; check the broker and produce them again"
        )


def flush_or_raise(
    producer: Producer,
    tracker: DeliveryTracker | None = None,
    timeout: float = DEFAULT_FLUSH_TIMEOUT_S,
) -> None:
    """Wait for every delivery report of ``producer`` and raise when any message is not delivered.

    Raises:
        StreamingError: when messages are still queued after ``timeout`` seconds, or when
            ``tracker`` recorded a failed delivery.
    """
    remaining = producer.flush(timeout)
    if remaining:
        raise StreamingError(
            f"{remaining} message(s) still undelivered after {timeout} s of flush; "
            "check that the broker is reachable"
        )
    if tracker is not None:
        tracker.raise_for_failures()


def produce_polling(
    producer: Producer, topic: str, value: bytes, key: bytes | str, **kwargs: Any
) -> None:
    """Produce one message, serving delivery reports when the local queue is full.

    The wait per full queue is bounded: after about 30 s of BufferError the error propagates.
    """
    for _ in range(300):
        try:
            producer.produce(topic, value=value, key=key, **kwargs)
            producer.poll(0)
            return
        except BufferError:
            producer.poll(0.1)
    producer.produce(topic, value=value, key=key, **kwargs)


def topic_id(settings: Settings, topic: str, timeout: float = 10.0) -> str | None:
    """Return the broker's id of ``topic`` as 32 hex digits, or None when it is not available.

    A topic that is deleted and created again, or that a memory-only broker (Tansu's
    ``memory://`` engine) creates anew after a restart, gets a new id and starts its offsets
    at 0 again. The id separates readings that share a partition and offset.
    """
    from confluent_kafka import TopicCollection

    admin = AdminClient(admin_config(settings))
    try:
        futures = admin.describe_topics(TopicCollection([topic]), request_timeout=timeout)
        description = futures[topic].result(timeout=timeout)
    except (KafkaException, TimeoutError) as exc:
        logger.warning(
            "reading the id of topic %s from %s failed: %s", topic, settings.kafka_bootstrap, exc
        )
        return None
    uuid = description.topic_id
    if uuid is None:
        return None
    high = uuid.get_most_significant_bits() & (2**64 - 1)
    low = uuid.get_least_significant_bits() & (2**64 - 1)
    if high == 0 and low == 0:
        return None
    return f"{high:016x}{low:016x}"


def require_broker(settings: Settings, timeout: float = 2.0) -> None:
    """Raise StreamingError unless one bootstrap server accepts a TCP connection.

    Without this check a client against a stopped broker retries for its whole timeout
    and librdkafka prints a connection-refused line for every attempt.
    """
    servers = [s.strip() for s in settings.kafka_bootstrap.split(",") if s.strip()]
    for server in servers:
        host, _, port = server.rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
                return
        except (OSError, ValueError):
            continue
    raise StreamingError(
        f"Kafka broker at {settings.kafka_bootstrap} is unreachable; start the stack with "
        "`saodf stack up` or set SAODF_KAFKA_BOOTSTRAP"
    )

"""Dead-letter topic: messages that cannot be processed, kept with the reason they failed."""

from __future__ import annotations

import base64
import logging
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, TopicPartition

from saodf.config import Settings
from saodf.telemetry import format_timestamp
from streaming.kafka import consumer_config, produce_polling

logger = logging.getLogger(__name__)


def dlq_record(
    raw_payload: bytes,
    reason: str,
    source: str,
    extra: dict[str, Any] | None = None,
    failed_at: datetime | None = None,
) -> dict[str, Any]:
    """Build the dead-letter record for ``raw_payload``.

    The payload is kept as text when it is UTF-8 and as base64 otherwise, with
    ``payload_encoding`` saying which.
    """
    try:
        payload = raw_payload.decode("utf-8")
        encoding = "utf-8"
    except UnicodeDecodeError:
        payload = base64.b64encode(raw_payload).decode("ascii")
        encoding = "base64"
    record: dict[str, Any] = dict(extra or {})
    record.update(
        {
            "reason": reason,
            "source": source,
            "payload": payload,
            "payload_encoding": encoding,
            "failed_at": format_timestamp(failed_at or datetime.now(timezone.utc)),
        }
    )
    return record


def decode_dlq_payload(record: dict[str, Any]) -> bytes:
    """Return the original payload bytes of a dead-letter record."""
    if record.get("payload_encoding") == "base64":
        return base64.b64decode(record["payload"])
    return str(record["payload"]).encode("utf-8")


def send_to_dlq(
    producer,
    settings: Settings,
    raw_payload: bytes | None,
    reason: str,
    source: str,
    extra: dict[str, Any] | None = None,
    on_delivery=None,
) -> dict[str, Any]:
    """Produce a dead-letter record to ``settings.topic_dlq`` and return it.

    The record is only queued: the caller flushes the producer (and checks its delivery
    reports) before it treats the failed message as processed.
    """
    record = dlq_record(raw_payload or b"", reason, source, extra)
    kwargs = {"on_delivery": on_delivery} if on_delivery is not None else {}
    produce_polling(producer, settings.topic_dlq, orjson.dumps(record), key=source, **kwargs)
    logger.warning("sent message from %s to %s: %s", source, settings.topic_dlq, reason)
    return record


def read_dlq(settings: Settings, limit: int = 100, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Read up to ``limit`` dead-letter records from the start of the topic, oldest first.

    Reading stops at the end of every partition or after ``timeout`` seconds. No offsets
    are committed, so repeated reads return the same records.
    """
    consumer = Consumer(
        consumer_config(
            settings,
            group_id=f"saodf-dlq-reader-{uuid.uuid4().hex[:12]}",
            **{"enable.partition.eof": True},
        )
    )
    records: list[dict[str, Any]] = []
    try:
        metadata = consumer.list_topics(settings.topic_dlq, timeout=timeout)
        topic = metadata.topics.get(settings.topic_dlq)
        if topic is None or topic.error is not None or not topic.partitions:
            logger.info("dead-letter topic %s does not exist yet", settings.topic_dlq)
            return records
        partitions = [
            TopicPartition(settings.topic_dlq, number, -2) for number in sorted(topic.partitions)
        ]
        consumer.assign(partitions)
        pending = {p.partition for p in partitions}
        deadline = time.monotonic() + timeout
        while pending and len(records) < limit and time.monotonic() < deadline:
            message = consumer.poll(min(1.0, max(deadline - time.monotonic(), 0.01)))
            if message is None:
                continue
            if message.error() is not None:
                if message.error().code() == KafkaError._PARTITION_EOF:
                    pending.discard(message.partition())
                    continue
                logger.error("reading %s failed: %s", settings.topic_dlq, message.error().str())
                continue
            try:
                records.append(orjson.loads(message.value()))
            except orjson.JSONDecodeError:
                logger.error(
                    "dead-letter record at %s[%d]@%d is not JSON",
                    settings.topic_dlq,
                    message.partition(),
                    message.offset(),
                )
        if pending and len(records) < limit:
            logger.warning(
                "read_dlq stopped after %.1f s before the end of partitions %s",
                timeout,
                sorted(pending),
            )
    finally:
        consumer.close()
    return records[:limit]

"""List, show and replay dead-letter records of the Kafka DLQ topic and the SQS DLQ.

Record ids are ``kafka:<partition>:<offset>`` and ``sqs:<message id>``. A Kafka replay
reads from the committed offset of the consumer group ``saodf-dlq-replay``, produces
the records whose payload is now valid to ``settings.topic_raw`` and commits, so each
record is replayed once. Records that are still invalid stay in the topic and are
counted. An SQS replay moves messages from ``settings.sqs_dlq`` back to
``settings.sqs_queue``, where the SQS drain picks them up, deleting each from the DLQ
only after the send succeeded.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from saodf.config import Settings
from saodf.errors import InvalidTelemetryError, SaodfError
from saodf.telemetry import decode_message
from streaming.dlq import decode_dlq_payload
from streaming.ingest_router import INGEST_ID_HEADER, SOURCE_HEADER
from streaming.kafka import (
    DeliveryTracker,
    consumer_config,
    flush_or_raise,
    producer_config,
    require_broker,
)
from streaming.sqs import (
    SQS_ERRORS,
    SqsEntry,
    SqsError,
    attribute_values,
    delete_handles,
    peek_messages,
    send_entries,
    sqs_client,
)

logger = logging.getLogger(__name__)

REPLAY_GROUP = "saodf-dlq-replay"
REPLAY_SOURCE = "dlq-replay"


@dataclass
class DlqEntry:
    """One dead-letter record with its id (``kafka:p:o`` or ``sqs:id``)."""

    id: str
    record: dict[str, Any]


@dataclass
class ReplayReport:
    """Counts of one replay; ``invalid`` lists the ids whose payload is still invalid."""

    source: str
    read: int = 0
    replayed: int = 0
    invalid: list[str] = field(default_factory=list)
    dry_run: bool = False


def _kafka_reader(settings: Settings, group_id: str) -> Consumer:
    require_broker(settings)
    return Consumer(consumer_config(settings, group_id, **{"enable.partition.eof": True}))


def _read_kafka(
    consumer: Consumer, settings: Settings, limit: int, timeout: float, from_committed: bool
) -> list[tuple[int, int, dict[str, Any]]]:
    metadata = consumer.list_topics(settings.topic_dlq, timeout=timeout)
    topic = metadata.topics.get(settings.topic_dlq)
    if topic is None or topic.error is not None or not topic.partitions:
        return []
    partitions = [TopicPartition(settings.topic_dlq, p, -2) for p in sorted(topic.partitions)]
    if from_committed:
        for tp, committed in zip(
            partitions, consumer.committed(partitions, timeout=timeout), strict=True
        ):
            tp.offset = committed.offset if committed.offset >= 0 else -2
    consumer.assign(partitions)
    pending = {tp.partition for tp in partitions}
    entries: list[tuple[int, int, dict[str, Any]]] = []
    deadline = time.monotonic() + timeout
    while pending and len(entries) < limit and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error() is not None:
            if message.error().code() == KafkaError._PARTITION_EOF:
                pending.discard(message.partition())
            continue
        try:
            record = orjson.loads(message.value())
        except orjson.JSONDecodeError:
            record = {"reason": "dead-letter record is not JSON", "payload": repr(message.value())}
        entries.append((message.partition(), message.offset(), record))
    return entries


def list_entries(
    settings: Settings, source: str = "kafka", limit: int = 20, timeout: float = 10.0
) -> list[DlqEntry]:
    """Return up to ``limit`` records of the Kafka DLQ topic (``kafka``) or SQS DLQ (``sqs``)."""
    if source == "kafka":
        consumer = _kafka_reader(settings, f"saodf-dlq-list-{uuid.uuid4().hex[:12]}")
        try:
            rows = _read_kafka(consumer, settings, limit, timeout, from_committed=False)
        finally:
            consumer.close()
        return [DlqEntry(f"kafka:{p}:{o}", record) for p, o, record in rows]
    if source == "sqs":
        client = sqs_client(settings)
        url = _sqs_url(client, settings.sqs_dlq)
        return [
            DlqEntry(f"sqs:{m['MessageId']}", _sqs_record(m))
            for m in peek_messages(client, url, limit, timeout)
        ]
    raise SaodfError(f"DLQ source {source!r} is unknown; use 'kafka' or 'sqs'")


def show_entry(settings: Settings, entry_id: str, timeout: float = 10.0) -> DlqEntry:
    """Return the record with id ``kafka:<partition>:<offset>`` or ``sqs:<message id>``.

    Raises:
        SaodfError: when the id is malformed or no such record exists.
    """
    kind, _, rest = entry_id.partition(":")
    if kind == "kafka":
        try:
            partition_text, offset_text = rest.split(":")
            partition, offset = int(partition_text), int(offset_text)
        except ValueError:
            raise SaodfError(
                f"DLQ id {entry_id!r} is malformed; use kafka:<partition>:<offset>"
            ) from None
        consumer = _kafka_reader(settings, f"saodf-dlq-show-{uuid.uuid4().hex[:12]}")
        try:
            consumer.assign([TopicPartition(settings.topic_dlq, partition, offset)])
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                message = consumer.poll(0.5)
                if message is None or message.error() is not None:
                    if message is not None and message.error().code() == KafkaError._PARTITION_EOF:
                        break
                    continue
                if message.offset() == offset:
                    return DlqEntry(entry_id, orjson.loads(message.value()))
                break
        finally:
            consumer.close()
    elif kind == "sqs" and rest:
        for entry in list_entries(settings, "sqs", limit=1000, timeout=timeout):
            if entry.id == entry_id:
                return entry
    else:
        raise SaodfError(
            f"DLQ id {entry_id!r} is malformed; use kafka:<partition>:<offset> or sqs:<message id>"
        )
    raise SaodfError(
        f"DLQ record {entry_id} not found in {settings.topic_dlq} / {settings.sqs_dlq}"
    )


def _sqs_url(client, name: str) -> str:
    try:
        return client.get_queue_url(QueueName=name)["QueueUrl"]
    except SQS_ERRORS as exc:
        raise SqsError(f"SQS queue {name!r} not found or unreachable: {exc}") from exc


def _sqs_record(message: dict[str, Any]) -> dict[str, Any]:
    """Return the dead-letter record in an SQS DLQ message.

    The ingest router writes a JSON record there. A message that the redrive policy
    moved is a plain reading, so it is described with the reason of the redrive.
    """
    try:
        record = orjson.loads(message["Body"])
    except orjson.JSONDecodeError:
        record = None
    if isinstance(record, dict) and "reason" in record and "payload" in record:
        return record
    count = message.get("Attributes", {}).get("ApproximateReceiveCount", "?")
    return {
        "reason": f"redriven after {count} receive(s) without a delete",
        "source": "sqs-redrive",
        "payload": message["Body"],
        "payload_encoding": "utf-8",
        **attribute_values(message),
    }


def replay_kafka(
    settings: Settings, limit: int = 1000, dry_run: bool = False, timeout: float = 15.0
) -> ReplayReport:
    """Produce the Kafka DLQ records that are valid now to the raw topic, once each."""
    report = ReplayReport("kafka", dry_run=dry_run)
    consumer = _kafka_reader(settings, REPLAY_GROUP)
    try:
        rows = _read_kafka(consumer, settings, limit, timeout, from_committed=True)
        report.read = len(rows)
        producer = Producer(producer_config(settings, role="dlq-replay"))
        tracker = DeliveryTracker()
        next_offsets: dict[int, int] = {}
        for partition, offset, record in rows:
            next_offsets[partition] = offset + 1
            try:
                message = decode_message(decode_dlq_payload(record))
            except (InvalidTelemetryError, KeyError, ValueError):
                report.invalid.append(f"kafka:{partition}:{offset}")
                continue
            report.replayed += 1
            if dry_run:
                continue
            producer.produce(
                settings.topic_raw,
                value=orjson.dumps(message),
                key=message["device_id"],
                headers=[
                    (INGEST_ID_HEADER, str(record.get("ingest_id") or uuid.uuid4().hex).encode()),
                    (SOURCE_HEADER, REPLAY_SOURCE.encode()),
                ],
                on_delivery=tracker,
            )
        if not dry_run and next_offsets:
            flush_or_raise(producer, tracker)
            consumer.commit(
                offsets=[TopicPartition(settings.topic_dlq, p, n) for p, n in next_offsets.items()],
                asynchronous=False,
            )
    finally:
        consumer.close()
    logger.info(
        "replayed %d of %d Kafka DLQ record(s) to %s; %d still invalid",
        report.replayed,
        report.read,
        settings.topic_raw,
        len(report.invalid),
    )
    return report


def replay_sqs(
    settings: Settings, limit: int = 1000, dry_run: bool = False, timeout: float = 15.0
) -> ReplayReport:
    """Move SQS DLQ messages back to the ingest queue; dead-letter records go by payload."""
    report = ReplayReport("sqs", dry_run=dry_run)
    client = sqs_client(settings)
    dlq_url = _sqs_url(client, settings.sqs_dlq)
    queue_url = _sqs_url(client, settings.sqs_queue)
    deadline = time.monotonic() + timeout
    while report.read < limit and time.monotonic() < deadline:
        response = client.receive_message(
            QueueUrl=dlq_url,
            MaxNumberOfMessages=min(10, limit - report.read),
            VisibilityTimeout=30,
            WaitTimeSeconds=0,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = response.get("Messages", [])
        if not messages:
            break
        report.read += len(messages)
        entries: list[SqsEntry] = []
        handles: dict[str, str] = {}
        for message in messages:
            record = _sqs_record(message)
            try:
                reading = decode_message(decode_dlq_payload(record))
            except (InvalidTelemetryError, KeyError, ValueError):
                report.invalid.append(f"sqs:{message['MessageId']}")
                continue
            ingest_id = str(record.get("ingest_id") or uuid.uuid4().hex)
            entries.append(
                SqsEntry(
                    ingest_id,
                    orjson.dumps(reading).decode("utf-8"),
                    {
                        "ingest_id": ingest_id,
                        "device_id": reading["device_id"],
                        "source": REPLAY_SOURCE,
                    },
                )
            )
            handles[ingest_id] = message["ReceiptHandle"]
        if dry_run:
            report.replayed += len(entries)
            _make_visible(client, dlq_url, [m["ReceiptHandle"] for m in messages])
            continue
        failed = send_entries(client, queue_url, entries)
        sent = [handles[e.ingest_id] for e in entries if e.ingest_id not in failed]
        report.replayed += len(sent)
        not_deleted = delete_handles(client, dlq_url, sent)
        if not_deleted:
            logger.error(
                "%d replayed message(s) stay in %s as well; the drain skips repeated ingest ids",
                len(not_deleted),
                settings.sqs_dlq,
            )
        kept = [m["ReceiptHandle"] for m in messages if m["ReceiptHandle"] not in sent]
        _make_visible(client, dlq_url, kept)
    return report


def _make_visible(client, queue_url: str, handles: list[str]) -> None:
    """Make received messages visible again at once instead of after their timeout."""
    for start in range(0, len(handles), 10):
        entries = [
            {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": 0}
            for i, h in enumerate(handles[start : start + 10])
        ]
        try:
            client.change_message_visibility_batch(QueueUrl=queue_url, Entries=entries)
        except SQS_ERRORS as exc:
            logger.warning(
                "%d message(s) of %s stay invisible for 30 s: %s", len(entries), queue_url, exc
            )

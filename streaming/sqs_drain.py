"""SQS drain: move readings from the SQS ingest queue into ``telemetry.raw``.

Each received message is produced to Kafka with its ingest id in the ``saodf-ingest-id``
header, and deleted from SQS only after Kafka acknowledged it. A crash between the
acknowledgement and the delete leaves the message in SQS, which delivers it again after
its visibility timeout. To keep that copy out of Kafka, the drain indexes the ingest ids
already in the topic and deletes a message whose id it finds without producing it again.

The index contains the ids the drain produced in this run, plus the ids found at start by
scanning the topic from the checkpoint ``<SAODF_HOME>/run/sqs_drain/<queue>.json``. The
checkpoint advances, per partition, only past messages whose SQS copy was deleted.
NOTE: the checkpoint is local, so a drain on another host does not see this host's range;
run one drain per queue, or a redelivered message may be produced twice.

Run for a tenant (``--tenant NAME``, or settings from :func:`saodf.tenants.tenant_settings`),
the drain receives only from the tenant's queue ``t-<tenant>-telemetry-raw`` and produces
only to its topics ``t.<tenant>.telemetry.raw`` and ``t.<tenant>.telemetry.dlq``. A reading
there of a device outside the tenant is dead-lettered, never produced to the raw topic, and
audited as a ``reject`` record in ``SAODF_HOME/logs/sqs_drain_audit-<queue>.jsonl``.

Messages that break the telemetry contract go to the Kafka dead-letter topic and are then
deleted. Messages that Kafka keeps rejecting stay in SQS, and after ``maxReceiveCount``
receives the queue's redrive policy moves them to the SQS dead-letter queue.

NOTE: moto 5.2 took about 0.25 s per ReceiveMessage on a 2-core test machine, so the
local drain moves at most about 40 messages per second. Amazon SQS is not measured.

Run it with ``python -m streaming.sqs_drain``; SIGTERM finishes the current batch.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from actions.audit import AuditLog
from saodf.config import Settings, get_settings
from saodf.errors import InvalidTelemetryError
from saodf.log import configure_logging
from saodf.telemetry import decode_message
from saodf.tenants import TenantRegistry, settings_tenant, tenant_settings
from streaming.dlq import send_to_dlq
from streaming.ingest_config import IngestConfig, with_name_overrides
from streaming.ingest_gateway import IngestAuditor
from streaming.ingest_router import INGEST_ID_HEADER, SOURCE_HEADER
from streaming.kafka import (
    DeliveryTracker,
    consumer_config,
    ensure_topics,
    producer_config,
)
from streaming.sqs import (
    SQS_ERRORS,
    attribute_values,
    delete_handles,
    ensure_queues,
    sqs_client,
)

logger = logging.getLogger(__name__)

DRAIN_SOURCE = "sqs-drain"
MAX_INDEX_IDS = 500_000
SCAN_TIMEOUT_S = 60.0


@dataclass
class DrainStats:
    """Counters of one :meth:`SqsDrain.run`."""

    received: int = 0
    produced: int = 0
    deleted: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    failed: int = 0
    indexed_at_start: int = 0


def checkpoint_path(settings: Settings) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", f"{settings.sqs_queue}--{settings.topic_raw}")
    return settings.run_dir / "sqs_drain" / f"{safe}.json"


def audit_path(settings: Settings) -> Path:
    """Return the audit log of the drain of ``settings.sqs_queue``; one drain runs per queue."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", settings.sqs_queue)
    return settings.log_dir / f"sqs_drain_audit-{safe}.jsonl"


class SqsDrain:
    """Receive from ``settings.sqs_queue``, produce to ``settings.topic_raw``, then delete."""

    def __init__(
        self,
        settings: Settings,
        config: IngestConfig | None = None,
        wait_time_s: int = 1,
    ):
        self.settings = settings
        self.config = config or IngestConfig()
        self.wait_time_s = wait_time_s
        self.stats = DrainStats()
        self.tenant = settings_tenant(settings)
        self.checkpoint_file = checkpoint_path(settings)
        self.auditor = IngestAuditor(
            settings, AuditLog(audit_path(settings)), TenantRegistry(settings)
        )
        self._index: OrderedDict[str, None] = OrderedDict()
        self._next_offsets: dict[int, int] = {}
        # Ingest ids that Kafka acknowledged but whose SQS delete failed, with their offsets.
        self._undeleted: dict[str, tuple[int, int]] = {}
        self._producer: Producer | None = None
        self._sqs = None
        self._queue_url: str | None = None

    # Lifecycle

    def start(self) -> None:
        """Create topics and queues if needed, then index the ingest ids past the checkpoint."""
        if self._producer is not None:
            return
        ensure_topics(self.settings, [self.settings.topic_raw, self.settings.topic_dlq])
        self._sqs = sqs_client(self.settings, timeout_s=self.wait_time_s + 5.0)
        self._queue_url = ensure_queues(
            self.settings,
            self._sqs,
            max_receive_count=self.config.sqs_max_receive_count,
            visibility_timeout_s=self.config.sqs_visibility_timeout_s,
        ).queue
        self._producer = Producer(producer_config(self.settings, role="sqs-drain"))
        saved = self._load_checkpoint()
        if saved is None:
            # A first start checkpoints the current end, so no later restart scans from 0.
            self._next_offsets = self._end_offsets()
            self._save_checkpoint()
        else:
            self._next_offsets = saved
        self.stats.indexed_at_start = self._scan_ids(dict(self._next_offsets))
        logger.info(
            "SQS drain started: tenant %s, queue %s -> topic %s, %d ingest id(s) indexed from "
            "offsets %s",
            self.tenant.name if self.tenant is not None else "-",
            self.settings.sqs_queue,
            self.settings.topic_raw,
            self.stats.indexed_at_start,
            self._next_offsets,
        )

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(self.config.ack_timeout_s)
            self._producer = None
        logger.info("SQS drain stopped: %s", asdict(self.stats))

    def run(
        self,
        max_seconds: float | None = None,
        stop_event: threading.Event | None = None,
        max_messages: int | None = None,
    ) -> DrainStats:
        """Drain until ``stop_event`` is set, ``max_seconds`` pass or ``max_messages`` arrive."""
        self.start()
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        try:
            while not (stop_event is not None and stop_event.is_set()):
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if max_messages is not None and self.stats.received >= max_messages:
                    break
                try:
                    self.drain_once()
                except SQS_ERRORS as exc:
                    logger.error("SQS receive from %s failed: %s; retrying", self._queue_url, exc)
                    time.sleep(1.0)
        finally:
            self.close()
        return self.stats

    # Index and checkpoint

    def _remember(self, ingest_id: str) -> None:
        self._index[ingest_id] = None
        self._index.move_to_end(ingest_id)
        while len(self._index) > MAX_INDEX_IDS:
            self._index.popitem(last=False)

    def _partitions(self, consumer: Consumer) -> list[int]:
        metadata = consumer.list_topics(self.settings.topic_raw, timeout=10)
        topic = metadata.topics[self.settings.topic_raw]
        if topic.error is not None:
            raise KafkaException(topic.error)
        return sorted(topic.partitions)

    def _reader(self) -> Consumer:
        return Consumer(
            consumer_config(
                self.settings,
                f"saodf-sqs-drain-scan-{os.getpid()}-{time.time_ns()}",
                **{"enable.partition.eof": True},
            )
        )

    def _end_offsets(self) -> dict[int, int]:
        consumer = self._reader()
        try:
            ends = {}
            for partition in self._partitions(consumer):
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(self.settings.topic_raw, partition), timeout=10
                )
                ends[partition] = max(high, 0)
            return ends
        finally:
            consumer.close()

    def _scan_ids(self, start: dict[int, int]) -> int:
        """Index the ingest ids of the topic from ``start`` (beginning when absent) to its end."""
        consumer = self._reader()
        found = 0
        try:
            partitions = self._partitions(consumer)
            consumer.assign(
                [TopicPartition(self.settings.topic_raw, p, start.get(p, -2)) for p in partitions]
            )
            pending = set(partitions)
            deadline = time.monotonic() + SCAN_TIMEOUT_S
            while pending and time.monotonic() < deadline:
                message = consumer.poll(0.5)
                if message is None:
                    continue
                if message.error() is not None:
                    if message.error().code() == KafkaError._PARTITION_EOF:
                        pending.discard(message.partition())
                    continue
                for name, value in message.headers() or []:
                    if name == INGEST_ID_HEADER and value:
                        self._remember(value.decode("utf-8", "replace"))
                        found += 1
            if pending:
                raise KafkaException(
                    KafkaError(
                        KafkaError._TIMED_OUT,
                        f"scan of {self.settings.topic_raw} partitions {sorted(pending)} did not "
                        f"reach the end within {SCAN_TIMEOUT_S:.0f} s",
                    )
                )
        finally:
            consumer.close()
        return found

    def _load_checkpoint(self) -> dict[int, int] | None:
        if not self.checkpoint_file.exists():
            return None
        try:
            data = json.loads(self.checkpoint_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            logger.error(
                "checkpoint %s is unreadable (%s); scanning %s from the beginning",
                self.checkpoint_file,
                exc,
                self.settings.topic_raw,
            )
            return {}
        return {int(p): int(n) for p, n in data.get("next_offsets", {}).items()}

    def _save_checkpoint(self) -> None:
        self.checkpoint_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint_file.with_name(f"{self.checkpoint_file.name}.tmp-{os.getpid()}")
        state = {
            "queue": self.settings.sqs_queue,
            "topic": self.settings.topic_raw,
            "next_offsets": {str(p): n for p, n in sorted(self._next_offsets.items())},
        }
        tmp.write_text(json.dumps(state), encoding="utf-8")
        os.replace(tmp, self.checkpoint_file)

    # Draining

    def drain_once(self) -> int:
        """Receive one batch, move it to Kafka, delete what Kafka acknowledged; return its size."""
        assert self._sqs is not None and self._queue_url is not None
        response = self._sqs.receive_message(
            QueueUrl=self._queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=self.wait_time_s,
            AttributeNames=["ApproximateReceiveCount"],
            MessageAttributeNames=["All"],
        )
        messages = response.get("Messages", [])
        if not messages:
            return 0
        self.stats.received += len(messages)
        producer = self._producer_or_fail()
        acked: dict[str, tuple[int, int]] = {}
        errors: dict[str, str] = {}
        tracker = DeliveryTracker()
        duplicates: list[tuple[str, str]] = []
        invalid_handles: list[str] = []
        produced: list[tuple[str, str]] = []
        for message in messages:
            handle = message["ReceiptHandle"]
            attributes = attribute_values(message)
            ingest_id = attributes.get("ingest_id") or message["MessageId"]
            if ingest_id in self._index:
                logger.info(
                    "message %s (ingest id %s, receive count %s) is already in %s; deleting it",
                    message["MessageId"],
                    ingest_id,
                    message.get("Attributes", {}).get("ApproximateReceiveCount"),
                    self.settings.topic_raw,
                )
                self.stats.duplicates += 1
                duplicates.append((ingest_id, handle))
                continue
            body = message["Body"].encode("utf-8")
            try:
                reading = decode_message(body)
                if self.tenant is not None and not self.tenant.owns_device(reading["device_id"]):
                    raise InvalidTelemetryError(
                        self._reject_foreign(message["MessageId"], ingest_id, reading["device_id"])
                    )
            except InvalidTelemetryError as exc:
                send_to_dlq(
                    producer,
                    self.settings,
                    body,
                    exc.reason,
                    DRAIN_SOURCE,
                    {"sqs_message_id": message["MessageId"], "ingest_id": ingest_id},
                    on_delivery=tracker,
                )
                invalid_handles.append(handle)
                continue

            def on_delivery(error, kafka_message, key=ingest_id) -> None:
                if error is None:
                    acked[key] = (kafka_message.partition(), kafka_message.offset())
                else:
                    errors[key] = error.str()

            producer.produce(
                self.settings.topic_raw,
                value=orjson.dumps(reading),
                key=reading["device_id"],
                headers=[
                    (INGEST_ID_HEADER, ingest_id.encode()),
                    (SOURCE_HEADER, DRAIN_SOURCE.encode()),
                    ("saodf-origin", attributes.get("source", "").encode()),
                ],
                on_delivery=on_delivery,
            )
            produced.append((ingest_id, handle))
        remaining = producer.flush(self.config.ack_timeout_s)
        if remaining:
            logger.error("%d message(s) still unacknowledged by Kafka after flush", remaining)
        to_delete = [handle for _, handle in duplicates]
        if invalid_handles and tracker.failures:
            # Invalid messages stay in SQS until their dead-letter record is stored.
            logger.error("dead-letter write failed: %s", tracker.failures[0])
        elif invalid_handles:
            to_delete += invalid_handles
            self.stats.dead_lettered += len(invalid_handles)
        for ingest_id, handle in produced:
            if ingest_id in acked:
                self._remember(ingest_id)
                self._undeleted[ingest_id] = acked[ingest_id]
                to_delete.append(handle)
                self.stats.produced += 1
            else:
                self.stats.failed += 1
                logger.error(
                    "Kafka did not acknowledge ingest id %s (%s); it stays in SQS",
                    ingest_id,
                    errors.get(ingest_id, "no delivery report"),
                )
        not_deleted = set(delete_handles(self._sqs, self._queue_url, to_delete))
        self.stats.deleted += len(to_delete) - len(not_deleted)
        for ingest_id, handle in [*duplicates, *produced]:
            if handle not in not_deleted:
                self._undeleted.pop(ingest_id, None)
        self._advance_checkpoint(acked)
        return len(messages)

    def _reject_foreign(self, message_id: str, ingest_id: str, device_id: str) -> str:
        """Audit and log a reading of a device outside the tenant; return the DLQ reason."""
        assert self.tenant is not None
        fields = self.auditor.claimed_fields(device_id)
        label = fields["resource"].removeprefix("/devices/")
        reason = (
            f"device_id {label!r} is not a device of tenant {self.tenant.name!r}; its queue "
            f"takes only ids {self.tenant.name}.*"
        )
        self.auditor.log.append(
            "reject",
            tenant=self.tenant.name,
            namespace=self.tenant.namespace,
            # The drain cannot tell who sent the message, only the queue it came from.
            actor=f"queue:{self.settings.sqs_queue}",
            action="sqs_drain",
            outcome="rejected",
            reason=reason,
            client="sqs",
            sqs_message_id=message_id,
            ingest_id=ingest_id,
            **fields,
        )
        logger.warning(
            "message %s of device %s in queue %s is not tenant %s's; dead-lettering it",
            message_id,
            label,
            self.settings.sqs_queue,
            self.tenant.name,
        )
        return reason

    def _advance_checkpoint(self, acked: dict[str, tuple[int, int]]) -> None:
        """Move each partition's checkpoint past ``acked``, but not past an undeleted message."""
        blocked: dict[int, int] = {}
        for partition, offset in self._undeleted.values():
            blocked[partition] = min(blocked.get(partition, offset), offset)
        changed = False
        for partition, offset in acked.values():
            candidate = min(offset + 1, blocked.get(partition, offset + 1))
            if candidate > self._next_offsets.get(partition, 0):
                self._next_offsets[partition] = candidate
                changed = True
        if changed:
            self._save_checkpoint()

    def _producer_or_fail(self) -> Producer:
        if self._producer is None:
            raise RuntimeError("the SQS drain is not started; call start() or run()")
        return self._producer


def main(argv: list[str] | None = None) -> int:
    """Run the SQS drain until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m streaming.sqs_drain", description=__doc__)
    parser.add_argument("--max-seconds", type=float, default=None, help="stop after N seconds")
    parser.add_argument(
        "--wait-time", type=int, default=1, help="SQS long-poll wait per receive, in seconds"
    )
    parser.add_argument(
        "--tenant",
        default=None,
        help="tenant whose queue to drain into its raw topic (default none: the stack's own)",
    )
    args = parser.parse_args(argv)
    configure_logging()
    stop_event = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        logger.info("received signal %d; finishing the current batch", signum)
        stop_event.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    settings = with_name_overrides(get_settings())
    if args.tenant:
        # The tenant's prefixes go in front of any queue and topic names set above.
        settings = tenant_settings(args.tenant, settings)
    drain = SqsDrain(settings, IngestConfig.from_env(), wait_time_s=args.wait_time)
    drain.run(max_seconds=args.max_seconds, stop_event=stop_event)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

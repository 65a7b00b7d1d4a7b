"""Lake writer: a consumer group on the raw topic that writes Parquet files and window events.

For each polled batch the writer validates every message and sends invalid ones to the
dead-letter topic. It writes one raw-zone file per device, hour and partition offset
range, flushes the dead-letter records and saves its window state. Only then does it
commit the offsets synchronously. A crash therefore repeats at most one batch, and readers drop the
repeated rows by their Kafka coordinates.

The open window is saved to ``{SAODF_HOME}/run/lake_writer/{group}.json`` before each
commit, so a writer restarted on the same host resumes the window where it stopped.
NOTE: after a crash, a partition that another host takes over starts a new window, so
the crashed writer's open window gets no event (its readings are in the lake).
Window events are at-least-once: the pipeline deduplicates them by ``window_id``.

Run for a tenant (settings from :func:`saodf.tenants.tenant_settings`, or
``--tenant NAME``), the writer consumes only the tenant's raw topic, writes only under the
tenant's lake prefix, and sends its window events and dead letters to the tenant's topics.
A message of a device outside the tenant is dead-lettered, never written, and audited as a
``reject`` record in ``SAODF_HOME/logs/lake_audit-<consumer id>.jsonl``. Each writer process
has its own file because two processes appending to one hash chain would interleave it.
The record names a registered device by its id and any other id by its digest prefix.

Run it with ``python -m streaming.lake_writer``; SIGTERM and SIGINT finish the current
batch, announce the open window and commit before exiting.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import socket
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from actions.audit import AuditLog
from saodf.config import Settings, get_settings
from saodf.errors import InvalidTelemetryError
from saodf.lake import RAW_SCHEMA, raw_file_name, raw_partition_url, write_parquet_atomic
from saodf.log import configure_logging
from saodf.telemetry import DEVICE_ID_PATTERN, decode_message, metric_names, parse_timestamp
from saodf.tenants import TenantRegistry, settings_tenant, tenant_settings
from streaming.dlq import send_to_dlq
from streaming.ingest_config import with_name_overrides
from streaming.ingest_gateway import IngestAuditor
from streaming.ingest_router import SOURCE_HEADER
from streaming.kafka import (
    DeliveryTracker,
    StreamingError,
    consumer_config,
    ensure_topics,
    flush_or_raise,
    produce_polling,
    producer_config,
    topic_id,
)
from streaming.windows import Window, reconcile_partition

logger = logging.getLogger(__name__)

DEFAULT_GROUP_ID = "saodf-lake-writer"
# Attempts to deliver one window event, and the wait before the first retry (doubled after
# each failed attempt). Each attempt waits up to EVENT_TIMEOUT_S for the delivery report.
EVENT_ATTEMPTS = 4
EVENT_BACKOFF_S = 1.0
EVENT_TIMEOUT_S = 10.0
DLQ_SOURCE = "lake_writer"
AUDIT_PREFIX = "lake_audit-"


@dataclass
class WriterStats:
    """Counters of one :meth:`LakeWriter.run`."""

    consumed: int = 0
    readings: int = 0
    files: int = 0
    dead_lettered: int = 0
    windows: int = 0
    commits: int = 0


@dataclass(frozen=True)
class Reading:
    """One valid message with its Kafka coordinates and parsed timestamp."""

    partition: int
    offset: int
    message: dict[str, Any]
    timestamp: datetime

    @property
    def device_id(self) -> str:
        return self.message["device_id"]

    @property
    def hour_start(self) -> datetime:
        return self.timestamp.replace(minute=0, second=0, microsecond=0)


def group_readings(readings: list[Reading]) -> dict[tuple[str, datetime, int], list[Reading]]:
    """Group readings by ``(device_id, hour_start, partition)``, each group in offset order."""
    groups: dict[tuple[str, datetime, int], list[Reading]] = {}
    for reading in readings:
        key = (reading.device_id, reading.hour_start, reading.partition)
        groups.setdefault(key, []).append(reading)
    for items in groups.values():
        items.sort(key=lambda r: r.offset)
    return groups


def readings_table(topic: str, readings: list[Reading]) -> pa.Table:
    """Build the long-format raw-zone table (one row per metric) of ``readings``."""
    columns: dict[str, list[Any]] = {name: [] for name in RAW_SCHEMA.names}
    for reading in readings:
        for metric in metric_names(reading.message):
            columns["device_id"].append(reading.device_id)
            columns["timestamp"].append(reading.timestamp)
            columns["metric"].append(metric)
            columns["value"].append(float(reading.message[metric]))
            columns["schema_version"].append(int(reading.message["schema_version"]))
            columns["kafka_topic"].append(topic)
            columns["kafka_partition"].append(reading.partition)
            columns["kafka_offset"].append(reading.offset)
    return pa.table(columns, schema=RAW_SCHEMA)


def raw_file_url(
    lake_url: str,
    topic: str,
    device_id: str,
    hour_start: datetime,
    items: list[Reading],
    topic_id: str | None = None,
) -> str:
    """Return the raw-zone URL of one device's readings of one hour and partition.

    Raises:
        InvalidTelemetryError: the device id breaks the device id pattern, so a path built
            from it could leave the device's folder.
    """
    if not isinstance(device_id, str) or not DEVICE_ID_PATTERN.match(device_id):
        raise InvalidTelemetryError(
            f"device_id {device_id!r} is invalid; use 1-128 characters from A-Z a-z 0-9 . _ - "
            "starting with a letter or digit"
        )
    partition = items[0].partition
    return "/".join(
        [
            raw_partition_url(lake_url, device_id, hour_start),
            raw_file_name(topic, partition, items[0].offset, items[-1].offset, topic_id),
        ]
    )


def state_path(settings: Settings, group_id: str) -> Path:
    """Return the window-state file of ``group_id`` under the run folder."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", group_id)
    return settings.run_dir / "lake_writer" / f"{safe}.json"


def audit_path(settings: Settings, consumer_id: str) -> Path:
    """Return the audit log of the writer process whose consumer id is ``consumer_id``."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", consumer_id)
    return settings.log_dir / f"{AUDIT_PREFIX}{safe}.jsonl"


def default_consumer_id(group_id: str) -> str:
    """Return ``<group>-<host>-<pid>``, unique to this process among the group's members."""
    return f"{group_id}-{socket.gethostname()}-{os.getpid()}"


class LakeWriter:
    """Consume ``settings.topic_raw`` in a consumer group and write it to the raw zone."""

    def __init__(
        self,
        settings: Settings | None = None,
        group_id: str = DEFAULT_GROUP_ID,
        batch_size: int = 1000,
        poll_timeout: float = 1.0,
        consumer_id: str | None = None,
        event_attempts: int = EVENT_ATTEMPTS,
        event_backoff: float = EVENT_BACKOFF_S,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} is invalid; use 1 or more")
        self.settings = settings or get_settings()
        self.group_id = group_id
        # The Kafka client id, and the name of this process's audit log. One process at a
        # time may use an id, or the audit log's hash chain breaks.
        self.consumer_id = consumer_id or default_consumer_id(group_id)
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self.event_attempts = max(event_attempts, 1)
        self.event_backoff = event_backoff
        # Window events whose delivery failed. The state file keeps them, and start() sends
        # them again, because their offsets may be committed already.
        self.pending_events: list[dict[str, Any]] = []
        self.topic = self.settings.topic_raw
        # The raw topic's id on the broker, read by start(); None when the broker gives none.
        self.topic_id: str | None = None
        self.tenant = settings_tenant(self.settings)
        self.stats = WriterStats()
        self.window = Window(self.topic)
        self.next_offsets: dict[int, int] = {}
        self.assigned: set[int] = set()
        self._committed: dict[int, int] = {}
        self._failed = False
        self.state_file = state_path(self.settings, group_id)
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._tracker = DeliveryTracker()
        self.audit = AuditLog(audit_path(self.settings, self.consumer_id))
        self._auditor = IngestAuditor(self.settings, self.audit, TenantRegistry(self.settings))

    # Lifecycle

    def start(self) -> None:
        """Create the topics if needed, then the producer and the subscribed consumer."""
        if self._consumer is not None:
            return
        ensure_topics(
            self.settings,
            [self.topic, self.settings.topic_windows, self.settings.topic_dlq],
        )
        self.topic_id = topic_id(self.settings, self.topic)
        self._producer = self._new_producer()
        self._send_pending_events()
        self._consumer = Consumer(
            consumer_config(self.settings, self.group_id, **{"client.id": self.consumer_id})
        )
        self._consumer.subscribe(
            [self.topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        logger.info(
            "lake writer started: group %s, consumer %s, topic %s, lake %s, tenant %s",
            self.group_id,
            self.consumer_id,
            self.topic,
            self.settings.lake_url,
            self.tenant.name if self.tenant is not None else "-",
        )

    def close(self) -> None:
        """Leave the group (which announces the open window and commits) and close clients."""
        if self._consumer is not None:
            try:
                # close() runs the revoke callback, which announces the window and commits.
                self._consumer.close()
            finally:
                self._consumer = None
        if self._producer is not None:
            flush_or_raise(self._producer, self._tracker)
            self._producer = None
        logger.info("lake writer stopped: group %s, %s", self.group_id, asdict(self.stats))

    def run(
        self,
        max_seconds: float | None = None,
        stop_event: threading.Event | None = None,
        max_messages: int | None = None,
    ) -> WriterStats:
        """Consume until ``stop_event`` is set, ``max_seconds`` pass or ``max_messages`` arrive.

        Each bound is optional; without any the writer runs until the event is set.
        """
        self.start()
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        try:
            while True:
                if stop_event is not None and stop_event.is_set():
                    logger.info("stop requested for group %s", self.group_id)
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if max_messages is not None and self.stats.consumed >= max_messages:
                    break
                batch = self._consumer_or_fail().consume(
                    self.batch_size, self._poll_timeout(deadline)
                )
                try:
                    self.process_batch(batch)
                except Exception:
                    # The open window may hold messages whose writes failed: neither announce
                    # nor commit it when the group is left.
                    self._failed = True
                    logger.exception("batch failed for group %s; stopping", self.group_id)
                    raise
                if self.window.is_due(
                    time.time(), self.settings.window_messages, self.settings.window_seconds
                ):
                    try:
                        self._close_window()
                    except StreamingError:
                        # The event is in the state file. Nothing more is announced or committed.
                        self._failed = True
                        raise
                    self._save_state()
                    self._commit()
        finally:
            self.close()
        return self.stats

    def _poll_timeout(self, deadline: float | None) -> float:
        timeout = self.poll_timeout
        opened = self.window.opened_at
        if opened is not None:
            timeout = min(timeout, max(opened + self.settings.window_seconds - time.time(), 0.0))
        if deadline is not None:
            timeout = min(timeout, max(deadline - time.monotonic(), 0.0))
        return max(timeout, 0.01)

    def _consumer_or_fail(self) -> Consumer:
        if self._consumer is None:
            raise RuntimeError("the lake writer is not started; call start() or run()")
        return self._consumer

    # Batches

    def process_batch(self, messages: list[Message]) -> None:
        """Write, dead-letter and commit one polled batch, closing windows that fill up."""
        records: list[Message] = []
        for message in messages:
            error = message.error()
            if error is None:
                records.append(message)
                continue
            if error.code() == KafkaError._PARTITION_EOF:
                continue
            logger.error(
                "consume error on %s[%s]: %s", message.topic(), message.partition(), error.str()
            )
            if error.fatal():
                raise KafkaException(error)
        while records:
            # Cut the batch where the window fills, so count-closed windows have exact sizes.
            room = self.window.room(self.settings.window_messages)
            chunk, records = records[:room], records[room:]
            if chunk:
                self._write_chunk(chunk)
            if self.window.message_total >= self.settings.window_messages:
                self._close_window()
            self._save_state()
            self._commit()

    def _write_chunk(self, messages: list[Message]) -> None:
        now = time.time()
        chunk_next: dict[int, int] = {}
        readings: list[Reading] = []
        dead_lettered = 0
        self._close_window_on_rewind(messages)
        for message in messages:
            partition, offset = message.partition(), message.offset()
            self.stats.consumed += 1
            chunk_next[partition] = offset + 1
            try:
                if message.value() is None:
                    raise InvalidTelemetryError("message has no payload (null value)")
                decoded = decode_message(message.value())
                if self.tenant is not None and not self.tenant.owns_device(decoded["device_id"]):
                    raise InvalidTelemetryError(self._reject_foreign(message, decoded["device_id"]))
            except InvalidTelemetryError as exc:
                self._dead_letter(message, exc.reason)
                self.window.add(partition, offset, now)
                dead_lettered += 1
                continue
            reading = Reading(partition, offset, decoded, parse_timestamp(decoded["timestamp"]))
            readings.append(reading)
            self.window.add(partition, offset, now, reading.device_id, reading.timestamp)
        for (device_id, hour_start, _partition), items in group_readings(readings).items():
            url = raw_file_url(
                self.settings.lake_url, self.topic, device_id, hour_start, items, self.topic_id
            )
            write_parquet_atomic(readings_table(self.topic, items), url)
            self.stats.files += 1
            logger.debug("wrote %d reading(s) to %s", len(items), url)
        self.stats.readings += len(readings)
        if dead_lettered:
            # The dead-letter records must be durable before their offsets are committed.
            flush_or_raise(self._producer_or_fail(), self._tracker)
            self.stats.dead_lettered += dead_lettered
        # Offsets advance only once the chunk's files and dead-letter records are durable.
        self.next_offsets.update(chunk_next)

    def _close_window_on_rewind(self, messages: list[Message]) -> None:
        """Close the open window when a partition's offsets go back, as after a failed commit."""
        for message in messages:
            span = self.window.spans.get(message.partition())
            if span is not None and message.offset() <= span.last:
                logger.warning(
                    "offset of %s[%d] went back from %d to %d; closing the open window first",
                    self.topic,
                    message.partition(),
                    span.last,
                    message.offset(),
                )
                self._close_window()
                return

    def _reject_foreign(self, message: Message, device_id: str) -> str:
        """Audit and log a message of a device outside the tenant; return the DLQ reason."""
        assert self.tenant is not None
        fields = self._auditor.claimed_fields(device_id)
        label = fields["resource"].removeprefix("/devices/")
        reason = (
            f"device_id {label!r} is not a device of tenant {self.tenant.name!r}; "
            f"its topic takes only ids {self.tenant.name}.*"
        )
        source = dict(message.headers() or []).get(SOURCE_HEADER) or b""
        self.audit.append(
            "reject",
            tenant=self.tenant.name,
            namespace=self.tenant.namespace,
            # The writer cannot tell who produced the message, only the topic it came from.
            actor=f"topic:{message.topic()}",
            action="lake_write",
            outcome="rejected",
            reason=reason,
            client=f"kafka:{self.consumer_id}",
            kafka_partition=message.partition(),
            kafka_offset=message.offset(),
            source=source.decode("utf-8", "replace"),
            **fields,
        )
        logger.warning(
            "message %s[%d]@%d of device %s is not tenant %s's; dead-lettering it",
            message.topic(),
            message.partition(),
            message.offset(),
            label,
            self.tenant.name,
        )
        return reason

    def _dead_letter(self, message: Message, reason: str) -> None:
        key = message.key()
        send_to_dlq(
            self._producer_or_fail(),
            self.settings,
            message.value(),
            reason,
            DLQ_SOURCE,
            {
                "topic": message.topic(),
                "partition": message.partition(),
                "offset": message.offset(),
                "key": key.decode("utf-8", "replace") if isinstance(key, bytes) else key,
                "group_id": self.group_id,
            },
            on_delivery=self._tracker,
        )

    def _producer_or_fail(self) -> Producer:
        if self._producer is None:
            raise RuntimeError("the lake writer is not started; call start() or run()")
        return self._producer

    # Windows, state and commits

    def _new_producer(self) -> Producer:
        return Producer(
            producer_config(
                self.settings,
                role="lake-writer",
                **{"message.timeout.ms": int(EVENT_TIMEOUT_S * 1000)},
            )
        )

    def _close_window(self) -> None:
        """Announce the open window and start a new one.

        Raises:
            StreamingError: when the event is not delivered after every attempt. The event is
                then saved in the state file, and the next start of the writer sends it.
        """
        window, self.window = self.window, Window(self.topic)
        if window.is_empty():
            return
        if window.valid_count == 0:
            logger.info(
                "window %s has only dead-lettered messages (%d); no event sent",
                window.offsets(),
                window.invalid_count,
            )
            return
        event = window.to_event(self.settings.lake_url, datetime.now(timezone.utc))
        try:
            self._send_event(event)
        except StreamingError:
            self.pending_events.append(event)
            self._save_state()
            logger.error(
                "window %s of group %s saved in %s; it is sent when the writer starts again",
                event["window_id"],
                self.group_id,
                self.state_file,
            )
            raise

    def _send_event(self, event: dict[str, Any]) -> None:
        """Deliver one window event, retrying with a new producer and doubling waits.

        Raises:
            StreamingError: when the last attempt fails.
        """
        wait = self.event_backoff
        for attempt in range(1, self.event_attempts + 1):
            tracker = DeliveryTracker()
            try:
                produce_polling(
                    self._producer_or_fail(),
                    self.settings.topic_windows,
                    orjson.dumps(event),
                    key=event["window_id"],
                    on_delivery=tracker,
                )
                flush_or_raise(self._producer_or_fail(), tracker, timeout=EVENT_TIMEOUT_S + 5)
            except (StreamingError, KafkaException, BufferError) as exc:
                logger.warning(
                    "window %s of group %s not delivered (attempt %d of %d): %s",
                    event["window_id"],
                    self.group_id,
                    attempt,
                    self.event_attempts,
                    exc,
                )
                if attempt == self.event_attempts:
                    raise StreamingError(
                        f"window event {event['window_id']} to topic "
                        f"{self.settings.topic_windows!r} failed after {attempt} attempts: {exc}"
                    ) from exc
                time.sleep(wait)
                wait *= 2
                self._reset_producer()
                continue
            break
        self.stats.windows += 1
        logger.info(
            "sent window %s: offsets %s, %d reading(s), %d device(s)",
            event["window_id"],
            event["offsets"],
            event["message_count"],
            len(event["devices"]),
        )

    def _reset_producer(self) -> None:
        """Replace the producer, whose idempotence state a restarted broker no longer has."""
        if self._producer is not None:
            self._producer.purge()
            self._producer.flush(0)
        self._producer = self._new_producer()
        try:
            # A broker that restarted with memory storage has lost its topics.
            ensure_topics(self.settings, [self.settings.topic_windows, self.settings.topic_dlq])
        except StreamingError as exc:
            logger.warning("topics of group %s not ensured: %s", self.group_id, exc)

    def _send_pending_events(self) -> None:
        """Send the window events that an earlier run saved as undelivered."""
        state = self._load_state()
        if not state or not state.get("pending_events"):
            return
        self.pending_events = list(state["pending_events"])
        logger.info(
            "sending %d saved window event(s) of group %s", len(self.pending_events), self.group_id
        )
        while self.pending_events:
            self._send_event(self.pending_events[0])
            self.pending_events.pop(0)
            state["pending_events"] = self.pending_events
            self._write_state(state)

    def _save_state(self) -> None:
        state = {
            "group_id": self.group_id,
            "topic": self.topic,
            "topic_id": self.topic_id,
            "next_offsets": {str(p): n for p, n in sorted(self.next_offsets.items())},
            "window": self.window.to_dict(),
            "pending_events": self.pending_events,
        }
        self._write_state(state)

    def _write_state(self, state: dict[str, Any]) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_name(f"{self.state_file.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(state, indent=1), encoding="utf-8")
        os.replace(tmp, self.state_file)

    def _load_state(self) -> dict[str, Any] | None:
        if not self.state_file.exists():
            return None
        try:
            state = json.loads(self.state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            logger.error("ignoring unreadable window state %s: %s", self.state_file, exc)
            return None
        if state.get("topic") != self.topic or state.get("group_id") != self.group_id:
            logger.warning("ignoring window state %s of another topic or group", self.state_file)
            return None
        return state

    def _commit(self) -> None:
        offsets = [
            TopicPartition(self.topic, p, n)
            for p, n in sorted(self.next_offsets.items())
            if p in self.assigned
        ]
        if not offsets or all(self._committed.get(tp.partition) == tp.offset for tp in offsets):
            return
        try:
            self._consumer_or_fail().commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # The state file keeps the offsets, and a repeated batch only rewrites the same rows.
            logger.error(
                "commit of %s for group %s failed: %s",
                {tp.partition: tp.offset for tp in offsets},
                self.group_id,
                exc.args[0].str() if exc.args else exc,
            )
            return
        self.stats.commits += 1
        self._committed.update({tp.partition: tp.offset for tp in offsets})
        logger.info(
            "committed %s for group %s", {tp.partition: tp.offset for tp in offsets}, self.group_id
        )

    # Rebalance callbacks

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        state = self._load_state()
        saved_id = (state or {}).get("topic_id")
        if state and saved_id and self.topic_id and saved_id != self.topic_id:
            # The topic was created again, because a memory-only broker restarted or the topic
            # was deleted. Its offsets start at 0, so the saved ones point into another log.
            logger.warning(
                "topic %s of group %s has id %s, not the saved %s; starting from the "
                "committed offsets instead of the saved ones and the saved open window",
                self.topic,
                self.group_id,
                self.topic_id,
                saved_id,
            )
            state = {**state, "next_offsets": {}, "window": Window(self.topic).to_dict()}
        saved_next = {int(p): int(n) for p, n in (state or {}).get("next_offsets", {}).items()}
        saved_window = Window.from_dict(state["window"]) if state else Window(self.topic)
        committed = {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=10)}
        self._committed.update({p: n for p, n in committed.items() if n >= 0})
        for tp in partitions:
            seek_to, keep = reconcile_partition(
                saved_next.get(tp.partition), committed.get(tp.partition)
            )
            if seek_to is not None:
                tp.offset = seek_to
                self.next_offsets[tp.partition] = seek_to
                logger.info(
                    "resuming %s[%d] at saved offset %d (committed %s)",
                    self.topic,
                    tp.partition,
                    seek_to,
                    committed.get(tp.partition),
                )
            span = saved_window.spans.get(tp.partition)
            if keep and span is not None:
                self.window.spans[tp.partition] = span
                logger.info(
                    "restored open window of %s[%d]: offsets %d-%d",
                    self.topic,
                    tp.partition,
                    span.first,
                    span.last,
                )
            self.assigned.add(tp.partition)
        consumer.assign(partitions)
        logger.info(
            "assigned %s partitions %s to group %s",
            self.topic,
            sorted(tp.partition for tp in partitions),
            self.group_id,
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Every batch is committed before the next poll, so only the open window is pending.
        if self._failed:
            self.window = Window(self.topic)
        else:
            self._close_window()
            self._save_state()
            self._commit()
        self._forget(partitions)
        logger.info(
            "revoked %s partitions %s from group %s",
            self.topic,
            sorted(tp.partition for tp in partitions),
            self.group_id,
        )

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Another member may own these partitions already, so the window is saved, not announced.
        self._save_state()
        self.window = Window(self.topic)
        self._forget(partitions)
        logger.warning(
            "lost %s partitions %s of group %s; their open window is not announced",
            self.topic,
            sorted(tp.partition for tp in partitions),
            self.group_id,
        )

    def _forget(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.assigned.discard(tp.partition)
            self.next_offsets.pop(tp.partition, None)
            self._committed.pop(tp.partition, None)


def main(argv: list[str] | None = None) -> int:
    """Run the lake writer until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m streaming.lake_writer", description=__doc__)
    parser.add_argument(
        "--group-id",
        default=None,
        help=f"consumer group id (default {DEFAULT_GROUP_ID}, or {DEFAULT_GROUP_ID}-TENANT)",
    )
    parser.add_argument(
        "--tenant",
        default=None,
        help="tenant whose topics to consume and whose lake prefix to write (default none)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=1000, help="maximum messages per poll (default 1000)"
    )
    parser.add_argument(
        "--consumer-id",
        default=None,
        help="Kafka client id, which also names the audit log (default GROUP-HOST-PID)",
    )
    parser.add_argument(
        "--max-seconds", type=float, default=None, help="stop after this many seconds"
    )
    parser.add_argument("--topic", default=None, help="raw topic (default telemetry.raw)")
    parser.add_argument(
        "--windows-topic", default=None, help="window-event topic (default telemetry.windows)"
    )
    parser.add_argument(
        "--dlq-topic", default=None, help="dead-letter topic (default telemetry.dlq)"
    )
    args = parser.parse_args(argv)
    configure_logging()
    settings = with_name_overrides(get_settings())
    overrides = {
        name: value
        for name, value in (
            ("topic_raw", args.topic),
            ("topic_windows", args.windows_topic),
            ("topic_dlq", args.dlq_topic),
        )
        if value
    }
    stop_event = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        logger.info("received signal %d; finishing the current batch", signum)
        stop_event.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    settings = settings.with_overrides(**overrides)
    group_id = args.group_id or DEFAULT_GROUP_ID
    if args.tenant:
        # The tenant's prefix goes in front of any topic named above.
        settings = tenant_settings(args.tenant, settings)
        group_id = args.group_id or f"{DEFAULT_GROUP_ID}-{args.tenant}"
    writer = LakeWriter(
        settings, group_id=group_id, batch_size=args.batch_size, consumer_id=args.consumer_id
    )
    writer.run(max_seconds=args.max_seconds, stop_event=stop_event)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The load-aware router wired to real brokers: Kafka, SQS, backpressure, dead-letter queue.

:meth:`IngestRouter.submit` stores validated readings and returns where each went. It
measures both brokers with :class:`BrokerMeter` and decides with
:func:`streaming.router.choose_route`. A reading counts as stored only after its broker
acknowledged it: a Kafka delivery report without error, or SQS listing it as sent.
Readings a broker rejects are routed again. After ``policy.max_attempts`` rounds
without a broker they go to the dead-letter queue, which tries the Kafka DLQ topic, then
the SQS dead-letter queue, then a local spool file, so an accepted reading is never lost.

NOTE: a Kafka delivery that times out is routed again, and the broker may still have
written it, so a reading can then be stored twice. Readers of the raw zone deduplicate by
Kafka offset, which does not catch this case.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Producer

from saodf.config import Settings
from saodf.errors import SaodfError
from streaming.dlq import dlq_record
from streaming.ingest_config import IngestConfig
from streaming.ingest_metrics import IngestMetrics
from streaming.kafka import ensure_topics, producer_config
from streaming.load import BrokerMeter
from streaming.router import BrokerLoad, Route, backoff_delay, choose_route, load_score
from streaming.sqs import (
    SQS_ERRORS,
    QueueUrls,
    SqsEntry,
    SqsError,
    ensure_queues,
    queue_depth,
    send_entries,
    sqs_client,
)

logger = logging.getLogger(__name__)

INGEST_ID_HEADER = "saodf-ingest-id"
SOURCE_HEADER = "saodf-source"
SPOOL_FILE = "ingest-dlq.jsonl"
QUEUES_PENDING = "SQS queues not created yet"
# Extra seconds past message.timeout.ms to wait for delivery reports before giving up.
DELIVERY_REPORT_GRACE_S = 5.0


class DeadLetterError(SaodfError):
    """No dead-letter sink (Kafka topic, SQS queue, spool file) kept a record."""


@dataclass(frozen=True)
class IngestReading:
    """One validated reading: its ingest id, device, normalised JSON body and transport."""

    ingest_id: str
    device_id: str
    body: bytes
    source: str

    @classmethod
    def create(cls, message: dict[str, Any], source: str) -> "IngestReading":
        return cls(uuid.uuid4().hex, message["device_id"], orjson.dumps(message), source)


@dataclass(frozen=True)
class DeadLetter:
    """A payload to keep in the dead-letter queue with the reason it was not ingested."""

    payload: bytes
    reason: str
    source: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """Where one reading was stored: ``kafka``, ``sqs`` or ``dlq`` (with sink and reason)."""

    route: str
    sink: str | None = None
    reason: str | None = None


class _AckWaiter:
    """Collect the delivery reports of one send and wait until all have arrived."""

    def __init__(self, expected: set[str]):
        self.pending = set(expected)
        self.failures: dict[str, str] = {}
        self._condition = threading.Condition()

    def done(self, key: str, error: str | None) -> None:
        with self._condition:
            self.pending.discard(key)
            if error is not None:
                self.failures[key] = error
            if not self.pending:
                self._condition.notify_all()

    def wait(self, timeout: float) -> dict[str, str]:
        with self._condition:
            self._condition.wait_for(lambda: not self.pending, timeout)
            for key in self.pending:
                self.failures[key] = f"no delivery report within {timeout:.1f} s"
            return dict(self.failures)


def _describe(name: str, load: BrokerLoad | None, router: "IngestRouter") -> str:
    if load is None:
        return f"{name} unreachable"
    score = load_score(load, router.policy)
    return f"{name} score {score:.2f} latency {load.latency_s:.3f} s depth {load.queue_depth}"


class IngestRouter:
    """Route validated readings to Kafka or SQS by load, with backpressure and a DLQ."""

    def __init__(self, settings: Settings, config: IngestConfig | None = None):
        self.settings = settings
        self.config = config or IngestConfig()
        self.policy = self.config.policy
        self.metrics = IngestMetrics()
        self.kafka_meter = BrokerMeter(
            "kafka", self.config.kafka_capacity_rate, self.config.kafka_capacity_depth
        )
        self.sqs_meter = BrokerMeter(
            "sqs", self.config.sqs_capacity_rate, self.config.sqs_capacity_depth
        )
        self.sqs_meter.mark_unreachable(QUEUES_PENDING)
        self.queues: QueueUrls | None = None
        self._producer: Producer | None = None
        self._sqs = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._spool_lock = threading.Lock()

    # Lifecycle

    def start(self) -> None:
        """Create topics and queues when reachable, then the producer and probe threads.

        A broker that does not respond at start is marked unreachable and probed again.
        """
        if self._producer is not None:
            return
        try:
            ensure_topics(self.settings, [self.settings.topic_raw, self.settings.topic_dlq])
        except SaodfError as exc:
            logger.error("Kafka topics not created at start: %s", exc)
            self.kafka_meter.mark_unreachable(str(exc))
        self._producer = Producer(
            producer_config(
                self.settings,
                role="ingest",
                error_cb=self._on_kafka_error,
                **{"message.timeout.ms": int(self.config.ack_timeout_s * 1000)},
            )
        )
        self._sqs = sqs_client(self.settings)
        self._ensure_queues()
        for name, target in [
            ("kafka-poll", self._poll_loop),
            ("kafka-probe", self._probe_kafka_loop),
            ("sqs-probe", self._probe_sqs_loop),
        ]:
            thread = threading.Thread(target=target, name=f"ingest-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        logger.info(
            "ingest router started: Kafka %s topic %s, SQS %s queue %s, T_max %.3f s",
            self.settings.kafka_bootstrap,
            self.settings.topic_raw,
            self.settings.aws_endpoint_url,
            self.settings.sqs_queue,
            self.policy.t_max_s,
        )

    def close(self) -> None:
        """Stop the probes and wait for outstanding Kafka deliveries."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.config.ack_timeout_s + DELIVERY_REPORT_GRACE_S)
        self._threads.clear()
        if self._producer is not None:
            remaining = self._producer.flush(self.config.ack_timeout_s)
            if remaining:
                logger.error("%d Kafka message(s) undelivered at router close", remaining)
            self._producer = None
        logger.info("ingest router stopped: %s", self.metrics.snapshot())

    def _ensure_queues(self) -> bool:
        try:
            self.queues = ensure_queues(
                self.settings,
                self._sqs,
                max_receive_count=self.config.sqs_max_receive_count,
                visibility_timeout_s=self.config.sqs_visibility_timeout_s,
            )
        except SqsError as exc:
            # The probe retries every interval: log only the first failure of an outage.
            if self.sqs_meter.reachable or self.sqs_meter.unreachable_reason == QUEUES_PENDING:
                logger.warning("SQS unavailable, routing to Kafka only: %s", exc)
            self.sqs_meter.mark_unreachable(str(exc))
            return False
        self.sqs_meter.mark_reachable()
        return True

    # Probes

    def _on_kafka_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self.kafka_meter.mark_unreachable(error.str())
        logger.warning("Kafka client error: %s", error.str())

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self._producer_or_fail().poll(0.05)

    def _probe_kafka_loop(self) -> None:
        timeout = max(4 * self.policy.t_max_s, 1.0)
        while not self._stop.wait(self.config.probe_interval_s):
            producer = self._producer_or_fail()
            send_id = self.kafka_meter.begin_send()
            try:
                producer.list_topics(self.settings.topic_raw, timeout=timeout)
            except KafkaException as exc:
                self.kafka_meter.end_send(send_id)
                if self.kafka_meter.reachable:
                    logger.error("Kafka probe failed, routing away from Kafka: %s", exc)
                self.kafka_meter.mark_unreachable(str(exc))
                continue
            self.kafka_meter.end_send(send_id)
            self.kafka_meter.set_depth(len(producer))
            if not self.kafka_meter.reachable:
                logger.info("Kafka %s responds again", self.settings.kafka_bootstrap)
                self.kafka_meter.mark_reachable()

    def _probe_sqs_loop(self) -> None:
        while not self._stop.wait(self.config.probe_interval_s):
            if self.queues is None and not self._ensure_queues():
                continue
            assert self.queues is not None
            send_id = self.sqs_meter.begin_send()
            try:
                depth = queue_depth(self._sqs, self.queues.queue)
            except SQS_ERRORS as exc:
                self.sqs_meter.end_send(send_id)
                if self.sqs_meter.reachable:
                    logger.error("SQS probe failed, routing away from SQS: %s", exc)
                self.sqs_meter.mark_unreachable(str(exc))
                continue
            self.sqs_meter.end_send(send_id)
            self.sqs_meter.set_depth(depth)
            if not self.sqs_meter.reachable:
                logger.info("SQS %s responds again", self.settings.aws_endpoint_url)
                self.sqs_meter.mark_reachable()

    def _producer_or_fail(self) -> Producer:
        if self._producer is None:
            raise RuntimeError("the ingest router is not started; call start()")
        return self._producer

    # Routing

    def decide(self, attempt: int = 0) -> Route:
        """Return the route for the next send from the brokers' current loads."""
        return choose_route(self.kafka_meter.load(), self.sqs_meter.load(), self.policy, attempt)

    def submit(self, readings: list[IngestReading]) -> list[Outcome]:
        """Store ``readings`` and return, in order, where each one went.

        Raises:
            DeadLetterError: when readings had to be dead-lettered and no sink kept them.
        """
        outcomes: dict[str, Outcome] = {}
        pending = list(readings)
        attempt = 0
        failed_rounds = 0
        last_failure = ""
        while pending:
            route = self.decide(attempt)
            if route in (Route.KAFKA, Route.SQS) and failed_rounds > self.policy.max_attempts:
                route = Route.DLQ
            self.metrics.count_decision(route.value, len(pending))
            if route is Route.BACKPRESSURE:
                delay = backoff_delay(attempt, self.policy)
                logger.debug("both brokers saturated; waiting %.3f s (attempt %d)", delay, attempt)
                time.sleep(delay)
                self.metrics.add_backpressure(delay)
                attempt += 1
                continue
            if route is Route.DLQ:
                reason = (
                    f"no broker stored the reading after {attempt} backpressure round(s) and "
                    f"{failed_rounds} failed send(s): "
                    f"{_describe('kafka', self.kafka_meter.load(), self)}, "
                    f"{_describe('sqs', self.sqs_meter.load(), self)}"
                )
                if last_failure:
                    reason += f"; last send error: {last_failure}"
                self._dead_letter_readings(pending, reason, outcomes)
                break
            failed = self._send(route, pending)
            for reading in pending:
                if reading.ingest_id not in failed:
                    outcomes[reading.ingest_id] = Outcome(route.value)
                    self.metrics.count_readings(reading.source, route.value)
            if failed:
                failed_rounds += 1
                last_failure = next(iter(failed.values()))
                self.metrics.count_send_failure(route.value, len(failed))
                logger.warning(
                    "%s did not store %d of %d reading(s): %s",
                    route.value,
                    len(failed),
                    len(pending),
                    last_failure,
                )
            pending = [r for r in pending if r.ingest_id in failed]
        return [outcomes[r.ingest_id] for r in readings]

    def _dead_letter_readings(
        self, readings: list[IngestReading], reason: str, outcomes: dict[str, Outcome]
    ) -> None:
        letters = [
            DeadLetter(
                r.body,
                reason,
                f"ingest-{r.source}",
                {"ingest_id": r.ingest_id, "device_id": r.device_id, "kind": "overload"},
            )
            for r in readings
        ]
        sinks = self.dead_letter(letters)
        for reading, sink in zip(readings, sinks, strict=True):
            outcomes[reading.ingest_id] = Outcome("dlq", sink, reason)
            self.metrics.count_readings(reading.source, "dlq")

    def _send(self, route: Route, readings: list[IngestReading]) -> dict[str, str]:
        if route is Route.KAFKA:
            self.kafka_meter.record_arrivals(len(readings))
            return self._send_kafka(readings)
        self.sqs_meter.record_arrivals(len(readings))
        return self._send_sqs(readings)

    def _send_kafka(self, readings: list[IngestReading]) -> dict[str, str]:
        producer = self._producer_or_fail()
        waiter = _AckWaiter({r.ingest_id for r in readings})
        for reading in readings:
            send_id = self.kafka_meter.begin_send()

            def on_delivery(error, _message, key=reading.ingest_id, send_id=send_id) -> None:
                self.kafka_meter.end_send(send_id)
                waiter.done(key, None if error is None else error.str())

            try:
                producer.produce(
                    self.settings.topic_raw,
                    value=reading.body,
                    key=reading.device_id,
                    headers=[
                        (INGEST_ID_HEADER, reading.ingest_id.encode()),
                        (SOURCE_HEADER, reading.source.encode()),
                    ],
                    on_delivery=on_delivery,
                )
            except (BufferError, KafkaException) as exc:
                self.kafka_meter.end_send(send_id)
                waiter.done(reading.ingest_id, f"produce failed: {exc}")
        self.kafka_meter.set_depth(len(producer))
        return waiter.wait(self.config.ack_timeout_s + DELIVERY_REPORT_GRACE_S)

    def _send_sqs(self, readings: list[IngestReading]) -> dict[str, str]:
        if self.queues is None:
            return {r.ingest_id: "SQS queues are not created" for r in readings}
        entries = [
            SqsEntry(
                r.ingest_id,
                r.body.decode("utf-8"),
                {"ingest_id": r.ingest_id, "device_id": r.device_id, "source": r.source},
            )
            for r in readings
        ]
        send_id = self.sqs_meter.begin_send()
        try:
            failed = send_entries(self._sqs, self.queues.queue, entries)
        finally:
            self.sqs_meter.end_send(send_id)
        if len(failed) == len(entries):
            self.sqs_meter.mark_unreachable(next(iter(failed.values())))
        return failed

    # Dead-letter queue

    def dead_letter(self, letters: list[DeadLetter]) -> list[str]:
        """Keep every letter in the first sink that takes it; return each letter's sink.

        The sinks are tried in order: the Kafka topic ``settings.topic_dlq``, the SQS
        queue ``settings.sqs_dlq``, then the spool file ``<SAODF_HOME>/spool/ingest-dlq.jsonl``.

        Raises:
            DeadLetterError: when the spool file cannot be written either.
        """
        records = [
            dlq_record(letter.payload, letter.reason, letter.source, letter.extra)
            for letter in letters
        ]
        sinks: list[str | None] = [None] * len(records)
        remaining = list(range(len(records)))
        if remaining and self.kafka_meter.reachable:
            failed = self._dlq_kafka([records[i] for i in remaining])
            for position, index in enumerate(remaining):
                if position not in failed:
                    sinks[index] = "kafka"
            remaining = [index for position, index in enumerate(remaining) if position in failed]
        if remaining and self.queues is not None:
            failed = self._dlq_sqs([records[i] for i in remaining])
            for position, index in enumerate(remaining):
                if position not in failed:
                    sinks[index] = "sqs"
            remaining = [index for position, index in enumerate(remaining) if position in failed]
        if remaining:
            self._dlq_spool([records[i] for i in remaining])
            for index in remaining:
                sinks[index] = "spool"
        for sink in sinks:
            self.metrics.count_dlq_write(str(sink))
        for record, sink in zip(records, sinks, strict=True):
            logger.warning(
                "dead-lettered a reading from %s to %s: %s",
                record["source"],
                sink,
                record["reason"],
            )
        return [str(sink) for sink in sinks]

    def _dlq_kafka(self, records: list[dict[str, Any]]) -> set[int]:
        producer = self._producer_or_fail()
        waiter = _AckWaiter({str(i) for i in range(len(records))})
        for index, record in enumerate(records):

            def on_delivery(error, _message, key=str(index)) -> None:
                waiter.done(key, None if error is None else error.str())

            try:
                producer.produce(
                    self.settings.topic_dlq,
                    value=orjson.dumps(record),
                    key=record["source"],
                    on_delivery=on_delivery,
                )
            except (BufferError, KafkaException) as exc:
                waiter.done(str(index), str(exc))
        failures = waiter.wait(self.config.ack_timeout_s + DELIVERY_REPORT_GRACE_S)
        if failures:
            logger.error(
                "%d dead-letter record(s) not stored in %s: %s",
                len(failures),
                self.settings.topic_dlq,
                next(iter(failures.values())),
            )
        return {int(key) for key in failures}

    def _dlq_sqs(self, records: list[dict[str, Any]]) -> set[int]:
        assert self.queues is not None
        entries = [
            SqsEntry(str(i), orjson.dumps(r).decode("utf-8"), {"source": r["source"]})
            for i, r in enumerate(records)
        ]
        failed = send_entries(self._sqs, self.queues.dlq, entries)
        if failed:
            logger.error(
                "%d dead-letter record(s) not stored in SQS %s: %s",
                len(failed),
                self.settings.sqs_dlq,
                next(iter(failed.values())),
            )
        return {int(key) for key in failed}

    def _dlq_spool(self, records: list[dict[str, Any]]) -> None:
        path = self.settings.home / "spool" / SPOOL_FILE
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with self._spool_lock, open(path, "ab") as handle:
                for record in records:
                    handle.write(orjson.dumps(record) + b"\n")
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise DeadLetterError(
                f"{len(records)} dead-letter record(s) were not stored: Kafka, SQS and the "
                f"spool file {path} all failed ({exc}); free disk space or fix the brokers"
            ) from exc
        logger.error("stored %d dead-letter record(s) in the spool file %s", len(records), path)

    # Reporting

    def render_metrics(self) -> str:
        return self.metrics.render([self.kafka_meter, self.sqs_meter], self.policy)

    def health(self) -> dict[str, Any]:
        """Return each broker's reachability, latency and score, for the health endpoint."""
        report: dict[str, Any] = {}
        for meter in (self.kafka_meter, self.sqs_meter):
            load = meter.load()
            report[meter.name] = {
                "reachable": load is not None,
                "latency_s": round(meter.latency(), 6),
                "score": None if load is None else round(load_score(load, self.policy), 4),
                "reason": meter.unreachable_reason,
            }
        return report

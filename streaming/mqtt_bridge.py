"""MQTT listener: readings published to ``devices/{device_id}/telemetry`` go through the router.

The bridge subscribes with QoS 1 and a persistent session to the local mosquitto broker.
Mosquitto authenticates each device with its ingest token as the password and lets it
publish only to its own topic (see :func:`streaming.services.write_mosquitto_files`).
Each message is acknowledged to the broker only after its readings were stored or
dead-lettered, so a bridge crash makes mosquitto deliver the message again instead of
losing it. A payload whose ``device_id`` differs from the topic's goes to the
dead-letter queue like any other invalid reading.

A tenant's device's readings go through the tenant's own router (see
:class:`streaming.ingest_gateway.TenantRouters`), so they reach only the tenant's topics
and queues. Every message is audited in ``SAODF_HOME/logs/mqtt_audit.jsonl`` as an
``ingest`` record, and a reading that claims another device adds a ``reject`` record whose
``target_namespace`` is that device's namespace, as at the HTTP gateway. A message on a topic
that is not a device topic gets a ``reject`` record with the outcome, the reason and the
topic's device. So do a batch over the limit and a message whose invalid readings could not
be dead-lettered. Records carry the HTTP status that the ingest gateway returns for the same body (400, 413,
500), so that the detection rules treat both transports alike.

Run it with ``python -m streaming.mqtt_bridge``.
"""

from __future__ import annotations

import argparse
import logging
import queue
import signal
import threading
from typing import Any

import paho.mqtt.client as mqtt

from actions.audit import AuditLog
from saodf.config import Settings, get_settings
from saodf.errors import ServiceError
from saodf.log import configure_logging
from streaming.ingest_config import IngestConfig, with_name_overrides
from streaming.ingest_gateway import (
    BatchTooLargeError,
    IngestAuditor,
    IngestResult,
    TenantRouters,
    ingest_payload,
    path_label,
)
from streaming.ingest_router import DeadLetter, DeadLetterError, IngestRouter
from streaming.tokens import MQTT_BRIDGE_USER, mqtt_bridge_password

logger = logging.getLogger(__name__)

TOPIC_FILTER = "devices/+/telemetry"
CLIENT_ID = "saodf-mqtt-bridge"
QUEUE_SIZE = 1000
# Its own file: the HTTP gateway's process appends to ingest_audit.jsonl, and two processes
# writing one hash chain would interleave their records.
AUDIT_FILE = "mqtt_audit.jsonl"


def topic_device(topic: str) -> str | None:
    """Return the device id of a ``devices/{device_id}/telemetry`` topic, else None."""
    parts = topic.split("/")
    if len(parts) == 3 and parts[0] == "devices" and parts[2] == "telemetry" and parts[1]:
        return parts[1]
    return None


def _invalid_reason(result: IngestResult) -> str | None:
    """Return why readings of ``result`` were invalid, without quoting their values."""
    if not result.invalid:
        return None
    for status in result.results:
        # Reasons about the whole payload (not JSON, too deep, empty) quote no values. The
        # contract's reasons about single readings do, so those are only counted.
        if status.get("index") is None and status.get("kind") == "invalid":
            return status["reason"]
    return (
        f"{result.invalid} of {len(result.results)} readings are invalid, and the dead-letter "
        "queue has the reason of each"
    )


class MqttBridge:
    """Subscribe to the device topics and hand each message to the ingest router."""

    def __init__(
        self,
        settings: Settings,
        config: IngestConfig | None = None,
        router: IngestRouter | None = None,
        workers: int = 4,
        client_id: str = CLIENT_ID,
    ):
        self.settings = settings
        self.config = config or IngestConfig()
        self.router = router or IngestRouter(settings, self.config)
        self.routers = TenantRouters(settings, self.config, self.router)
        self.audit = AuditLog(settings.log_dir / AUDIT_FILE)
        self.auditor = IngestAuditor(settings, self.audit, self.routers.registry)
        self.workers = workers
        # A full queue blocks paho's network thread, which stops reading from the broker.
        self._queue: queue.Queue[mqtt.MQTTMessage | None] = queue.Queue(maxsize=QUEUE_SIZE)
        self._threads: list[threading.Thread] = []
        self._connected = threading.Event()
        self._stopping = False
        self.handled = 0
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            manual_ack=True,
        )
        self.client.username_pw_set(MQTT_BRIDGE_USER, mqtt_bridge_password(settings))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def start(self, timeout: float = 15.0) -> None:
        """Start the router, connect to mosquitto and wait for the subscription.

        Raises:
            ServiceError: when the broker does not accept the connection within ``timeout``.
        """
        self.router.start()
        for number in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"mqtt-worker-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self.client.connect(self.settings.host, self.config.mqtt_port, keepalive=30)
        self.client.loop_start()
        if not self._connected.wait(timeout):
            self.stop()
            raise ServiceError(
                f"mosquitto on {self.settings.host}:{self.config.mqtt_port} did not accept the "
                f"bridge within {timeout:.0f} s; check that it runs (`saodf stack up --only "
                "mosquitto`) and that SAODF_MQTT_PORT matches"
            )
        logger.info(
            "MQTT bridge subscribed to %s on %s:%d",
            TOPIC_FILTER,
            self.settings.host,
            self.config.mqtt_port,
        )

    def stop(self) -> None:
        self._stopping = True
        self.client.disconnect()
        self.client.loop_stop()
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=self.config.ack_timeout_s + 10)
        self._threads.clear()
        self.routers.close()
        self.router.close()
        logger.info("MQTT bridge stopped after %d message(s)", self.handled)

    def _on_connect(self, client, _userdata, _flags, reason_code, _properties) -> None:
        if reason_code.is_failure:
            logger.error("mosquitto rejected the bridge connection: %s", reason_code)
            return
        client.subscribe(TOPIC_FILTER, qos=1)
        self._connected.set()

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _properties) -> None:
        self._connected.clear()
        if not self._stopping:
            logger.warning("MQTT bridge disconnected: %s; paho reconnects", reason_code)

    def _on_message(self, _client, _userdata, message: mqtt.MQTTMessage) -> None:
        self._queue.put(message)

    def _work(self) -> None:
        while True:
            message = self._queue.get()
            if message is None:
                return
            try:
                self.handle(message.topic, message.payload)
            except DeadLetterError as exc:
                # Without an ack mosquitto delivers the message again after a reconnect.
                logger.error("MQTT message on %s not stored: %s", message.topic, exc)
                continue
            self.client.ack(message.mid, message.qos)
            self.handled += 1

    def _reject_topic(self, topic: str, payload: bytes) -> None:
        """Audit and dead-letter a message whose topic is not ``devices/<device_id>/telemetry``.

        Mosquitto's ACL lets devices publish only to their own telemetry topic, so mosquitto
        delivers such a message only when its ACL or the bridge's subscription changed.
        """
        label = path_label(topic)
        parts = topic.split("/")
        claimed = parts[1] if len(parts) > 1 and parts[0] == "devices" and parts[1] else None
        self.audit.append(
            "reject",
            method="PUBLISH",
            path=label,
            client="mqtt",
            transport="mqtt",
            resource=label,
            http_status=400,
            outcome="rejected",
            reason=f"topic {label} is not devices/<device_id>/telemetry",
            # Mosquitto does not pass on the publisher, so only the topic names a device.
            actor="client:mqtt",
            device_id=self.auditor.device_label(claimed) if claimed is not None else None,
            action="ingest",
        )
        logger.warning("rejected an MQTT message on %s: not a device telemetry topic", label)
        reason = f"topic {topic!r} is not devices/<device_id>/telemetry"
        letter = DeadLetter(payload, reason, "ingest-mqtt", {"topic": topic, "kind": "invalid"})
        self.router.dead_letter([letter])

    def handle(self, topic: str, payload: bytes) -> None:
        """Store or dead-letter the readings of one MQTT message, and audit it.

        Raises:
            DeadLetterError: when no sink kept a dead letter of the message. The message is
                audited first, and the caller leaves it unacknowledged.
        """
        device_id = topic_device(topic)
        if device_id is None:
            self._reject_topic(topic, payload)
            return
        tenant, router = self.routers.for_device(device_id)
        identity = {
            "actor": device_id,
            "device_id": device_id,
            "tenant": tenant.name if tenant is not None else None,
            "namespace": tenant.namespace if tenant is not None else None,
            "action": "ingest",
        }
        # Mosquitto does not pass on the publisher's address, so the records name the transport.
        request = {"method": "PUBLISH", "path": topic, "client": "mqtt", "transport": "mqtt"}
        try:
            result = ingest_payload(router, payload, device_id, "mqtt", self.config.max_batch)
        except BatchTooLargeError as exc:
            # Audited first, so that the record exists even when the dead-letter write fails.
            self.audit.append(
                "reject",
                **request,
                resource=topic,
                http_status=413,
                outcome="rejected",
                reason=exc.reason,
                **identity,
            )
            extra = {"topic": topic, "device": device_id, "kind": "invalid"}
            router.dead_letter([DeadLetter(payload, exc.reason, "ingest-mqtt", extra)])
            return
        except DeadLetterError as exc:
            self.audit.append(
                "reject",
                **request,
                resource=topic,
                http_status=500,
                outcome="failed",
                reason=f"{exc}, so the message stays unacknowledged until a reconnect",
                **identity,
            )
            raise
        self.router.metrics.count_request("mqtt", 400 if result.invalid else 202)
        self.auditor.audit_claimed(result, identity, **request)
        details = {"reason": _invalid_reason(result)} if result.invalid else {}
        self.audit.append(
            "ingest",
            **request,
            resource=topic,
            outcome=result.audit_outcome,
            **details,
            readings=len(result.results),
            invalid=result.invalid,
            claimed_devices=len(result.claimed_devices),
            **identity,
        )


def main(argv: list[str] | None = None) -> int:
    """Run the MQTT bridge until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m streaming.mqtt_bridge", description=__doc__)
    parser.parse_args(argv)
    configure_logging()
    bridge = MqttBridge(with_name_overrides(get_settings()), IngestConfig.from_env())
    stop = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        logger.info("received signal %d; stopping the MQTT bridge", signum)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    bridge.start()
    stop.wait()
    bridge.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

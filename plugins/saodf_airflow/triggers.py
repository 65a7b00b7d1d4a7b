"""Event trigger that turns window events on ``telemetry.windows`` into asset events.

It builds on the Kafka provider's ``KafkaSharedStreamTrigger`` (provider 2.1, Airflow
3.3). One consumer is shared by every watcher of the topic, and offsets are committed
only after the trigger event is stored, so a triggerer crash redelivers a window
instead of losing it. The provider's ``MessageQueueTrigger(scheme="kafka")`` also
receives events from the local broker, but it commits the offset before the event is
stored (a crash in between loses the window) and rebuilds its consumer for every
message, so it is not used here.

Delivery is at least once. Repeats are dropped twice over: this trigger rejects a
window event whose window a DAG run has already claimed, and the run's first task skips
a window that another run claimed in the meantime (see ``saodf.pipeline.claim_run``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from airflow.providers.apache.kafka.triggers.shared_stream import KafkaSharedStreamTrigger
from airflow.triggers.base import TriggerEvent
from airflow.triggers.shared_stream import reject_shared_stream_event

logger = logging.getLogger(__name__)

WINDOW_EVENT_FIELDS = ("window_id", "devices", "start", "end", "message_count")


def parse_window_event(raw: Any) -> dict[str, Any]:
    """Decode one window event and check its fields; raise ValueError naming the problem."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    event = json.loads(raw) if isinstance(raw, str) else raw
    if not isinstance(event, dict):
        raise ValueError(f"window event is a {type(event).__name__}, not a JSON object")
    missing = [name for name in WINDOW_EVENT_FIELDS if name not in event]
    if missing:
        raise ValueError(f"window event lacks the fields {missing}")
    window_id = event["window_id"]
    if not isinstance(window_id, str) or not window_id:
        raise ValueError(f"window_id {window_id!r} is not a non-empty string")
    devices = event["devices"]
    if not isinstance(devices, list):
        raise ValueError(f"window event {window_id!r}: devices {devices!r} is not a list")
    if not devices:
        raise ValueError(f"window event {window_id!r} lists no devices")
    # Imported here, because the DAG file imports this module at parse time and the message
    # contract is needed only when an event arrives.
    from saodf.telemetry import DEVICE_ID_PATTERN

    bad = [d for d in devices if not isinstance(d, str) or not DEVICE_ID_PATTERN.match(d)]
    if bad:
        raise ValueError(f"window event {window_id!r}: invalid device ids {bad[:5]!r}")
    for name in ("start", "end"):
        value = event[name]
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except (AttributeError, ValueError):
            raise ValueError(
                f"window event {window_id!r}: {name} {value!r} is not an ISO 8601 timestamp"
            ) from None
        if parsed.tzinfo is None:
            raise ValueError(f"window event {window_id!r}: {name} {value!r} has no time zone")
    count = event["message_count"]
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(
            f"window event {window_id!r}: message_count {count!r} is not a non-negative integer"
        )
    return event


async def _already_claimed(window_id: str) -> bool:
    from saodf.pipeline import is_window_claimed

    try:
        return await asyncio.to_thread(is_window_claimed, window_id)
    except Exception:  # noqa: BLE001 - the run-level claim still deduplicates
        logger.exception("could not check the claim of window %s; passing the event on", window_id)
        return False


class WindowEventTrigger(KafkaSharedStreamTrigger):
    """Fire one trigger event per valid window event; reject malformed ones to the DLQ topic."""

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "saodf_airflow.triggers.WindowEventTrigger",
            {
                "topics": self.topics,
                "kafka_config_id": self.kafka_config_id,
                "poll_timeout": self.poll_timeout,
                "dlq_topic": self.dlq_topic,
            },
        )

    async def filter_shared_stream(
        self, shared_stream: AsyncIterator[Any]
    ) -> AsyncIterator[TriggerEvent]:
        async for value in shared_stream:
            try:
                event = parse_window_event(value)
            except (ValueError, UnicodeDecodeError) as exc:
                # Rejected events are re-published to dlq_topic before their offset is committed.
                logger.error("rejected window event (%s): %.200r", exc, value)
                reject_shared_stream_event()
                continue
            if await _already_claimed(event["window_id"]):
                # Rejected events go to dlq_topic, so the repeat stays visible there.
                logger.warning(
                    "window event %s repeats a window a DAG run already took: rejected",
                    event["window_id"],
                )
                reject_shared_stream_event()
                continue
            logger.info(
                "window event %s: %d messages from %d devices",
                event["window_id"],
                event["message_count"],
                len(event["devices"]),
            )
            yield TriggerEvent(json.dumps(event, sort_keys=True))

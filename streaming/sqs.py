"""SQS side of ingest: the queue with its redrive policy, sends, depth and DLQ reads.

Locally the queues live on ``moto_server`` at ``settings.aws_endpoint_url``; on AWS the
same calls reach Amazon SQS. ``settings.sqs_queue`` redrives to ``settings.sqs_dlq``
after ``max_receive_count`` receives without a delete.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from saodf.config import Settings
from saodf.errors import SaodfError

logger = logging.getLogger(__name__)

# SendMessageBatch, DeleteMessageBatch and ReceiveMessage take at most 10 entries.
SQS_BATCH = 10
SQS_ERRORS = (BotoCoreError, ClientError)


class SqsError(SaodfError):
    """An SQS call failed (queue missing, endpoint unreachable, entries rejected)."""


@dataclass(frozen=True)
class QueueUrls:
    queue: str
    dlq: str


@dataclass(frozen=True)
class SqsEntry:
    """One reading to send: its ingest id, JSON body and string message attributes."""

    ingest_id: str
    body: str
    attributes: dict[str, str]


def sqs_client(settings: Settings, timeout_s: float = 5.0):
    """Build an SQS client for ``settings.aws_endpoint_url`` with short timeouts, no retries.

    The router retries on its own, so a dead endpoint fails fast instead of blocking.
    """
    config = Config(
        connect_timeout=min(timeout_s, 2.0),
        read_timeout=timeout_s,
        retries={"max_attempts": 1, "mode": "standard"},
    )
    return boto3.client(
        "sqs",
        endpoint_url=settings.aws_endpoint_url,
        region_name=settings.aws_region,
        config=config,
    )


def ensure_queues(
    settings: Settings,
    client=None,
    max_receive_count: int = 5,
    visibility_timeout_s: int = 30,
) -> QueueUrls:
    """Create the dead-letter queue and the ingest queue with its redrive policy if missing.

    Raises:
        SqsError: when the endpoint does not respond or rejects the queue attributes.
    """
    client = client or sqs_client(settings)
    try:
        dlq_url = client.create_queue(QueueName=settings.sqs_dlq)["QueueUrl"]
        dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}
        queue_url = client.create_queue(
            QueueName=settings.sqs_queue,
            Attributes={
                "RedrivePolicy": json.dumps(redrive),
                "VisibilityTimeout": str(visibility_timeout_s),
            },
        )["QueueUrl"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "QueueAlreadyExists":
            raise SqsError(
                f"creating SQS queues {settings.sqs_queue!r}/{settings.sqs_dlq!r} at "
                f"{settings.aws_endpoint_url} failed: {exc}; check the endpoint and the queue "
                "attributes"
            ) from exc
        # The queue exists with other attributes: keep them and use it.
        queue_url = client.get_queue_url(QueueName=settings.sqs_queue)["QueueUrl"]
    except BotoCoreError as exc:
        raise SqsError(
            f"SQS endpoint {settings.aws_endpoint_url} is unreachable ({exc}); start moto_server "
            "(`saodf stack up --only moto`) or set SAODF_AWS_ENDPOINT_URL"
        ) from exc
    return QueueUrls(queue=queue_url, dlq=dlq_url)


def queue_depth(client, queue_url: str) -> int:
    """Return the approximate number of visible plus in-flight messages of ``queue_url``."""
    attributes = client.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes.get("ApproximateNumberOfMessages", 0)) + int(
        attributes.get("ApproximateNumberOfMessagesNotVisible", 0)
    )


def _message_attributes(attributes: dict[str, str]) -> dict[str, Any]:
    return {
        name: {"DataType": "String", "StringValue": value}
        for name, value in attributes.items()
        if value
    }


def send_entries(client, queue_url: str, entries: list[SqsEntry]) -> dict[str, str]:
    """Send ``entries`` in batches of 10 and return ``{ingest_id: reason}`` of those not sent.

    An entry counts as sent only when SQS listed it as successful.
    """
    failed: dict[str, str] = {}
    for start in range(0, len(entries), SQS_BATCH):
        chunk = entries[start : start + SQS_BATCH]
        request = [
            {
                "Id": str(index),
                "MessageBody": entry.body,
                "MessageAttributes": _message_attributes(entry.attributes),
            }
            for index, entry in enumerate(chunk)
        ]
        try:
            response = client.send_message_batch(QueueUrl=queue_url, Entries=request)
        except SQS_ERRORS as exc:
            for entry in chunk:
                failed[entry.ingest_id] = f"SQS send failed: {exc}"
            continue
        for item in response.get("Failed", []):
            entry = chunk[int(item["Id"])]
            failed[entry.ingest_id] = f"SQS rejected the message: {item.get('Message', item)}"
    return failed


def attribute_values(message: dict[str, Any]) -> dict[str, str]:
    """Return the string message attributes of a received SQS message."""
    return {
        name: value.get("StringValue", "")
        for name, value in (message.get("MessageAttributes") or {}).items()
    }


def peek_messages(
    client, queue_url: str, limit: int = 100, timeout_s: float = 10.0
) -> list[dict[str, Any]]:
    """Receive up to ``limit`` messages and make them visible again, so nothing is consumed.

    Each receive counts towards a message's ``maxReceiveCount`` when the queue has a
    redrive policy, so peek at the dead-letter queue, not at the ingest queue.
    """
    seen: dict[str, dict[str, Any]] = {}
    handles: list[str] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(seen) < limit and time.monotonic() < deadline:
            response = client.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=min(SQS_BATCH, limit - len(seen)),
                VisibilityTimeout=max(int(timeout_s) + 5, 5),
                WaitTimeSeconds=0,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            messages = response.get("Messages", [])
            if not messages:
                break
            for message in messages:
                handles.append(message["ReceiptHandle"])
                seen.setdefault(message["MessageId"], message)
    finally:
        for start in range(0, len(handles), SQS_BATCH):
            entries = [
                {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": 0}
                for i, handle in enumerate(handles[start : start + SQS_BATCH])
            ]
            try:
                client.change_message_visibility_batch(QueueUrl=queue_url, Entries=entries)
            except SQS_ERRORS as exc:
                logger.warning(
                    "messages of %s stay invisible until their timeout: %s", queue_url, exc
                )
    return list(seen.values())[:limit]


def delete_handles(client, queue_url: str, handles: list[str]) -> list[str]:
    """Delete messages by receipt handle in batches and return the handles not deleted."""
    failed: list[str] = []
    for start in range(0, len(handles), SQS_BATCH):
        chunk = handles[start : start + SQS_BATCH]
        entries = [{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(chunk)]
        try:
            response = client.delete_message_batch(QueueUrl=queue_url, Entries=entries)
        except SQS_ERRORS as exc:
            logger.error("deleting %d message(s) from %s failed: %s", len(chunk), queue_url, exc)
            failed.extend(chunk)
            continue
        for item in response.get("Failed", []):
            failed.append(chunk[int(item["Id"])])
    return failed

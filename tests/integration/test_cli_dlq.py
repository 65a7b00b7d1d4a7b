"""``saodf dlq`` against a real Tansu broker and moto_server: tenant queues and SQS credentials."""

from __future__ import annotations

import uuid

import boto3
import pytest
from confluent_kafka import Producer
from typer.testing import CliRunner

from saodf.cli_dlq import dlq_app
from saodf.config import get_settings, reset_settings
from saodf.tenants import create_tenant, tenant_settings
from streaming.dlq import send_to_dlq
from streaming.kafka import DeliveryTracker, ensure_topics, flush_or_raise, producer_config

pytestmark = pytest.mark.integration

runner = CliRunner()


@pytest.fixture
def cli_settings(session_settings, kafka_bootstrap, moto_endpoint, tmp_path, monkeypatch):
    """Give the CLI a fresh home of its own, so tenants created here stay in this test."""
    suffix = uuid.uuid4().hex[:8]
    monkeypatch.setenv("SAODF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SAODF_TOPIC_DLQ", f"dlq-{suffix}")
    monkeypatch.setenv("SAODF_SQS_DLQ", f"raw-dlq-{suffix}")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    reset_settings()
    yield get_settings()
    reset_settings()


def _dead_letter(settings, reason: str) -> None:
    ensure_topics(settings, [settings.topic_dlq])
    producer = Producer(producer_config(settings, role="test-dlq"))
    tracker = DeliveryTracker()
    send_to_dlq(producer, settings, b"not json", reason, "test", on_delivery=tracker)
    flush_or_raise(producer, tracker)


def test_dlq_list_tenant_topic(cli_settings):
    from streaming.ingest_config import with_name_overrides

    name = f"t{uuid.uuid4().hex[:8]}"
    create_tenant(name, settings=cli_settings)
    scoped = tenant_settings(name, with_name_overrides(cli_settings))
    _dead_letter(scoped, "tenant reading is not JSON")
    default_listed = runner.invoke(dlq_app, ["list"])
    tenant_listed = runner.invoke(dlq_app, ["list", "--tenant", name])
    assert "tenant reading is not JSON" not in default_listed.output
    assert tenant_listed.exit_code == 0
    assert "tenant reading is not JSON" in tenant_listed.output


def test_dlq_list_unknown_tenant(cli_settings):
    result = runner.invoke(dlq_app, ["list", "--tenant", "ghost"])
    assert result.exit_code == 1
    assert "tenant 'ghost' does not exist" in result.output


def test_dlq_list_sqs_without_aws_keys(cli_settings, monkeypatch):
    from streaming.ingest_config import with_name_overrides

    settings = with_name_overrides(cli_settings)
    client = boto3.client(
        "sqs",
        endpoint_url=settings.aws_endpoint_url,
        region_name=settings.aws_region,
        aws_access_key_id="saodf-local",
        aws_secret_access_key="saodf-local",
    )
    client.create_queue(QueueName=settings.sqs_dlq)
    # The CLI sets the AWS variables in its own process; monkeypatch restores them after.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(name, "placeholder")
        monkeypatch.delenv(name)
    result = runner.invoke(dlq_app, ["list", "--source", "sqs"])
    assert result.exit_code == 0, result.output
    assert f"no records in the sqs dead-letter queue {settings.sqs_dlq}" in result.output

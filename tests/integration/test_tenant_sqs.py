"""A tenant's SQS drain process on moto_server and the session broker: its queue and topics only."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import uuid

import pytest

from saodf.audit_tools import audit_paths, scan, secret_digest, verify
from saodf.config import PROJECT_ROOT
from saodf.stack.services import saodf_env
from saodf.tenants import create_tenant, tenant_settings
from streaming.dlq import read_dlq
from streaming.ingest_config import name_override_env
from streaming.ingest_router import IngestReading
from streaming.kafka import ensure_topics
from streaming.sqs import SqsEntry, ensure_queues, queue_depth, send_entries, sqs_client
from streaming.sqs_drain import audit_path

pytestmark = pytest.mark.integration

DRAIN_SECONDS = 10
OWN = ["acme.pump-1", "acme.pump-2"]
# A secret-like id that matches the device id pattern, as a token sent as a device id would.
SECRET_ID = "T" + secrets.token_urlsafe(32).replace("-", "x").replace("_", "y")
FOREIGN = ["beta.pump-1", SECRET_ID]


def _entries(device_ids: list[str]) -> list[SqsEntry]:
    entries = []
    for device_id in device_ids:
        message = {"device_id": device_id, "timestamp": "2025-04-20T12:00:00Z", "temperature": 1}
        reading = IngestReading.create(message, "http")
        attributes = {"ingest_id": reading.ingest_id, "device_id": device_id, "source": "http"}
        entries.append(SqsEntry(reading.ingest_id, reading.body.decode(), attributes))
    return entries


def _fill(settings, device_ids: list[str]) -> str:
    client = sqs_client(settings)
    url = ensure_queues(settings, client).queue
    assert send_entries(client, url, _entries(device_ids)) == {}
    return url


@pytest.fixture(scope="module")
def drained(session_settings, kafka_bootstrap, moto_endpoint, tmp_path_factory):
    """Fill the queues of acme, beta and the stack, then run acme's drain process once."""
    root = tmp_path_factory.mktemp("tenant-sqs")
    suffix = uuid.uuid4().hex[:10]
    base = session_settings.with_overrides(
        home=root / "home",
        lake_url=(root / "lake").as_uri(),
        topic_raw=f"raw-{suffix}",
        topic_dlq=f"dlq-{suffix}",
        sqs_queue=f"raw-{suffix}",
        sqs_dlq=f"raw-dlq-{suffix}",
    )

    create_tenant("acme", devices=["pump-1", "pump-2"], settings=base)
    create_tenant("beta", devices=["pump-1"], settings=base)
    acme, beta = tenant_settings("acme", base), tenant_settings("beta", base)
    urls = {
        "acme": _fill(acme, OWN + FOREIGN),
        "beta": _fill(beta, ["beta.pump-1"]),
        None: _fill(base, ["pump-1"]),
    }

    env = {**os.environ, **saodf_env(base), **name_override_env(base)}
    result = subprocess.run(  # noqa: S603 - fixed argv
        [
            sys.executable,
            "-m",
            "streaming.sqs_drain",
            "--tenant",
            "acme",
            "--max-seconds",
            str(DRAIN_SECONDS),
        ],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=DRAIN_SECONDS + 120,
        check=False,
    )

    client = sqs_client(base)
    depths = {tenant: queue_depth(client, url) for tenant, url in urls.items()}
    return base, result, depths


def _topic(base, tenant, field):
    """Return every record of a tenant's topic (the stack's own for None)."""
    scoped = tenant_settings(tenant, base) if tenant else base
    topic = getattr(scoped, field)
    ensure_topics(scoped, [topic])
    return read_dlq(scoped.with_overrides(topic_dlq=topic), limit=50, timeout=10)


def _audit_records(base):
    path = audit_path(tenant_settings("acme", base))
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_drain_process_exits(drained):
    _, result, _ = drained
    assert result.returncode == 0, result.stderr


def test_drain_empties_tenant_queue(drained):
    _, _, depths = drained
    assert depths["acme"] == 0


def test_drain_leaves_other_queues(drained):
    _, _, depths = drained
    assert (depths["beta"], depths[None]) == (1, 1)


def test_drain_own_readings_in_topic(drained):
    base, _, _ = drained
    assert sorted(r["device_id"] for r in _topic(base, "acme", "topic_raw")) == OWN


def test_drain_other_topics_untouched(drained):
    base, _, _ = drained
    assert _topic(base, "beta", "topic_raw") == []
    assert _topic(base, None, "topic_raw") == []


def test_drain_foreign_in_tenant_dlq(drained):
    base, _, _ = drained
    reasons = sorted(r["reason"] for r in _topic(base, "acme", "topic_dlq"))
    assert len(reasons) == len(FOREIGN)
    assert "device_id 'beta.pump-1' is not a device of tenant 'acme'" in reasons[0]


def test_drain_secret_id_redacted(drained):
    base, _, _ = drained
    reasons = " | ".join(r["reason"] for r in _topic(base, "acme", "topic_dlq"))
    audit_text = audit_path(tenant_settings("acme", base)).read_text()
    assert SECRET_ID not in reasons
    assert SECRET_ID not in audit_text
    assert f"sha256:{secret_digest(SECRET_ID)}" in reasons


def test_drain_foreign_audited(drained):
    base, _, _ = drained
    records = _audit_records(base)
    assert [(r["event"], r["action"], r["tenant"]) for r in records] == [
        ("reject", "sqs_drain", "acme")
    ] * len(FOREIGN)
    assert {r["target_namespace"] for r in records} == {"beta", base.gateway_namespace}


def test_drain_audit_verified(drained):
    base, _, _ = drained
    path = audit_path(tenant_settings("acme", base))
    assert path in audit_paths(base)
    assert verify(audit_paths(base))[str(path)] == len(FOREIGN)


def test_drain_cross_tenant_alert(drained):
    base, _, _ = drained
    queue = tenant_settings("acme", base).sqs_queue
    alerts = [alert for alert in scan(audit_paths(base)) if alert.rule == "cross_tenant"]
    assert [(alert.actor, alert.count) for alert in alerts] == [(f"queue:{queue}", len(FOREIGN))]

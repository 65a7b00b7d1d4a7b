"""A tenant's lake writer on the session broker: its topic only, its lake prefix only."""

from __future__ import annotations

import json
import secrets
import uuid

import orjson
import pytest
from confluent_kafka import Producer

from saodf.audit_tools import audit_paths, scan, secret_digest, verify
from saodf.lake import read_raw
from saodf.tenants import create_tenant, tenant_settings
from streaming.dlq import read_dlq
from streaming.kafka import ensure_topics, producer_config
from streaming.lake_writer import LakeWriter, audit_path

pytestmark = pytest.mark.integration

OWN = [
    {"device_id": "acme.pump-1", "timestamp": f"2025-04-20T12:0{i}:00Z", "temperature": 20.0 + i}
    for i in range(3)
]
# A secret-like id that matches the device id pattern, as a token sent as a device id would.
SECRET_ID = "T" + secrets.token_urlsafe(32).replace("-", "x").replace("_", "y")
# Ids of another tenant, of the default deployment, a secret, and ids that would leave the
# device folder. The first three pass the message contract and are audited as foreign.
FOREIGN = ["beta.pump-1", "pump-1", SECRET_ID]
REJECTED = [*FOREIGN, "../beta.pump-1", "%2e%2e", "/etc/passwd", "acme.x\x00"]
BASE_READING = {"device_id": "acme.pump-1", "timestamp": "2025-04-20T13:00:00Z", "temperature": 9}


def _produce(settings, topic, readings):
    producer = Producer(producer_config(settings, role="test"))
    for reading in readings:
        producer.produce(topic, value=orjson.dumps(reading))
    assert producer.flush(30) == 0


@pytest.fixture(scope="module")
def written(session_settings, kafka_bootstrap, tmp_path_factory):
    """Run acme's writer once over its topic, with one reading in the default topic too."""
    root = tmp_path_factory.mktemp("tenant-lake")
    suffix = uuid.uuid4().hex[:10]
    base = session_settings.with_overrides(
        home=root / "home",
        lake_url=(root / "lake").as_uri(),
        topic_raw=f"raw-{suffix}",
        topic_windows=f"windows-{suffix}",
        topic_dlq=f"dlq-{suffix}",
        window_messages=100_000,
        window_seconds=600.0,
    )
    acme = tenant_settings("acme", base)
    # A registered tenant's device is named in audit records; unknown ids are not.
    create_tenant("beta", devices=["pump-1"], settings=base)
    ensure_topics(base, [base.topic_raw])
    ensure_topics(acme, [acme.topic_raw])
    _produce(base, base.topic_raw, [BASE_READING])
    rejected = [{**OWN[0], "device_id": device_id} for device_id in REJECTED]
    _produce(acme, acme.topic_raw, OWN + rejected)
    total = len(OWN) + len(rejected)
    writer = LakeWriter(acme, group_id=f"lw-{suffix}", batch_size=50, consumer_id=f"c-{suffix}")
    stats = writer.run(max_seconds=60, max_messages=total)
    return root, base, acme, stats


def _audit_file(written):
    _, _, acme, _ = written
    paths = list(acme.log_dir.glob("lake_audit-*.jsonl"))
    assert len(paths) == 1
    return paths[0]


def _audit_records(written):
    return [json.loads(line) for line in _audit_file(written).read_text().splitlines()]


def test_writer_consumes_tenant_topic(written):
    _, _, _, stats = written
    assert stats.consumed == len(OWN) + len(REJECTED)


def test_writer_rows_own_devices(written):
    _, _, acme, _ = written
    assert set(read_raw(acme.lake_url)["device_id"]) == {"acme.pump-1"}


def test_writer_skips_default_topic(written):
    _, _, acme, _ = written
    assert len(read_raw(acme.lake_url)) == len(OWN)


def test_writer_files_under_prefix(written):
    root, _, _, _ = written
    own_folder = root / "lake" / "tenants" / "acme" / "raw" / "device_id=acme.pump-1"
    outside = [
        path
        for path in (root / "lake").rglob("*")
        if path.is_file() and own_folder not in path.parents
    ]
    assert outside == []


def test_writer_nothing_outside_lake(written):
    root, _, _, _ = written
    stray = [path for path in root.rglob("*.parquet") if (root / "lake") not in path.parents]
    assert stray == []


def test_rejected_in_tenant_dlq(written):
    _, _, acme, _ = written
    records = read_dlq(acme, limit=50)
    assert len(records) == len(REJECTED)


def test_other_tenant_reason(written):
    _, _, acme, _ = written
    reasons = [record["reason"] for record in read_dlq(acme, limit=50)]
    assert "device_id 'beta.pump-1' is not a device of tenant 'acme'" in " | ".join(reasons)


def test_default_dlq_untouched(written):
    _, base, _, _ = written
    ensure_topics(base, [base.topic_dlq])
    assert read_dlq(base, limit=50, timeout=5) == []


def test_window_event_tenant_lake(written):
    _, _, acme, _ = written
    events = read_dlq(acme.with_overrides(topic_dlq=acme.topic_windows), limit=10)
    assert [event["lake_url"] for event in events] == [acme.lake_url]


def test_foreign_devices_audited(written):
    records = _audit_records(written)
    assert [record["event"] for record in records] == ["reject"] * len(FOREIGN)
    assert {record["claimed_device_digest"] for record in records} == {
        secret_digest(device_id) for device_id in FOREIGN
    }


def test_audit_names_registered_device(written):
    record = next(r for r in _audit_records(written) if r.get("claimed_device_id"))
    fields = ("tenant", "action", "resource", "outcome", "target_namespace", "claimed_device_id")
    assert {name: record[name] for name in fields} == {
        "tenant": "acme",
        "action": "lake_write",
        "resource": "/devices/beta.pump-1",
        "outcome": "rejected",
        "target_namespace": "beta",
        "claimed_device_id": "beta.pump-1",
    }


def test_secret_id_not_in_audit_or_dlq(written):
    _, _, acme, _ = written
    reasons = " | ".join(record["reason"] for record in read_dlq(acme, limit=50))
    assert SECRET_ID not in _audit_file(written).read_text()
    assert SECRET_ID not in reasons
    assert f"sha256:{secret_digest(SECRET_ID)}" in reasons


def test_audit_file_named_by_consumer(written):
    _, _, acme, _ = written
    consumer_id = _audit_records(written)[0]["client"].removeprefix("kafka:")
    assert _audit_file(written) == audit_path(acme, consumer_id)


def test_lake_audit_verified(written):
    _, base, _, _ = written
    path = _audit_file(written)
    assert path in audit_paths(base)
    assert verify(audit_paths(base))[str(path)] == len(FOREIGN)


def test_lake_audit_cross_tenant_alert(written):
    _, base, acme, _ = written
    alerts = [alert for alert in scan(audit_paths(base)) if alert.rule == "cross_tenant"]
    assert [(alert.actor, alert.count) for alert in alerts] == [
        (f"topic:{acme.topic_raw}", len(FOREIGN))
    ]

"""Mosquitto's ACL keeps a device login to its own topic, and the bridge audits bad topics.

Runs real mosquitto, the MQTT bridge and the tenant lake writers on the session broker and
moto. Device ``acme.pump-1`` publishes to the topics of ``beta.pump-1`` (another tenant's
device) and of ``acme.pump-2`` (its own tenant's), and logs in as ``beta.pump-1`` with its
own token. None of it may reach another device's Kafka topic, dead-letter topic or lake.
The bridge's own checks of topics and payloads are called directly, because mosquitto's
subscription and ACL keep such messages from it.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.reasoncodes import ReasonCode

from saodf.audit_tools import scan, secret_digest, verify
from saodf.config import Settings
from saodf.lake import read_raw
from saodf.stack import process
from saodf.tenants import create_tenant, tenant_settings
from streaming.dlq import read_dlq
from streaming.ingest_config import IngestConfig
from streaming.kafka import ensure_topics
from streaming.lake_writer import LakeWriter
from streaming.mqtt_bridge import MqttBridge
from streaming.services import mosquitto_spec

pytestmark = pytest.mark.integration

# MQTT 5 reason code of a PUBACK for a publish that the broker's ACL denied.
NOT_AUTHORIZED = 135
LEGAL_TEMPERATURE = 21.5
# Marks the readings that acme.pump-1 publishes on other devices' topics.
ATTACK_TEMPERATURE = 666.0
SECRET_SEGMENT = "T" + secrets.token_urlsafe(32)
# Topics that mosquitto's subscription never delivers to the bridge, passed to handle().
INVALID_TOPICS = ("devices//telemetry", "devices/beta.pump-1/status", f"devices/{SECRET_SEGMENT}/x")
# Invalid payloads of a default-deployment device, passed to handle() in this order.
PAYLOAD_DEVICE = "gw-1"
INVALID_PAYLOADS = (
    b"{not json",
    orjson.dumps({"device_id": PAYLOAD_DEVICE, "timestamp": "yesterday", "temperature": 1.0}),
)


@dataclass
class AclRun:
    """The outcome of the attacks and legal publishes that the fixture sent once."""

    bridge: MqttBridge
    settings: Settings
    publish_codes: dict[str, ReasonCode | None]
    spoofed_login_code: ReasonCode | None


def _reading(device_id: str, temperature: float) -> bytes:
    return orjson.dumps(
        {"device_id": device_id, "timestamp": "2025-04-20T12:00:00Z", "temperature": temperature}
    )


def _client(user: str, password: str) -> mqtt.Client:
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"{user}-{uuid.uuid4().hex[:6]}",
        protocol=mqtt.MQTTv5,
    )
    client.username_pw_set(user, password)
    return client


def _publish(port: int, user: str, password: str, topic: str, payload: bytes):
    """Publish with QoS 1 over MQTT 5 and return the reason code of the broker's PUBACK."""
    codes: dict[int, ReasonCode] = {}
    client = _client(user, password)
    client.on_publish = lambda _c, _u, mid, code, _p: codes.__setitem__(mid, code)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        info = client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=10)
        return codes.get(info.mid)
    finally:
        client.loop_stop()
        client.disconnect()


def _login_code(port: int, user: str, password: str) -> ReasonCode | None:
    """Connect over MQTT 5 and return the CONNACK reason code, or None without a CONNACK."""
    answered = threading.Event()
    codes: list[ReasonCode] = []

    def on_connect(_client, _userdata, _flags, code, _properties):
        codes.append(code)
        answered.set()

    client = _client(user, password)
    client.on_connect = on_connect
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        answered.wait(timeout=10)
    finally:
        client.loop_stop()
        client.disconnect()
    return codes[0] if codes else None


def _wait_handled(bridge: MqttBridge, count: int) -> None:
    for _ in range(300):
        if bridge.handled >= count:
            return
        time.sleep(0.1)


def _write_lake(settings: Settings, tenant: str, suffix: str) -> None:
    scoped = tenant_settings(tenant, settings)
    writer = LakeWriter(scoped, group_id=f"lw-{tenant}-{suffix}", consumer_id=f"{tenant}-{suffix}")
    writer.run(max_seconds=60, max_messages=1)


@pytest.fixture(scope="module")
def acl_run(session_settings, kafka_bootstrap, moto_endpoint, tmp_path_factory):
    """Send the attacks, then one legal reading of each victim and attacker, once."""
    root = tmp_path_factory.mktemp("tenant-mqtt-acl")
    suffix = uuid.uuid4().hex[:10]
    settings = session_settings.with_overrides(
        home=root / "home",
        lake_url=(root / "lake").as_uri(),
        topic_raw=f"raw-{suffix}",
        topic_windows=f"windows-{suffix}",
        topic_dlq=f"dlq-{suffix}",
        sqs_queue=f"raw-{suffix}",
        sqs_dlq=f"raw-dlq-{suffix}",
    )
    acme = create_tenant("acme", devices=["pump-1", "pump-2"], settings=settings)[1]
    beta = create_tenant("beta", devices=["pump-1"], settings=settings)[1]
    tokens = {**acme["device_tokens"], **beta["device_tokens"]}
    config = IngestConfig(http_port=process.free_port(), mqtt_port=process.free_port())
    port = config.mqtt_port
    # The spec writes the password file, so it must come after the tenants' tokens.
    spec = mosquitto_spec(settings, config)
    process.start(spec)
    bridge = MqttBridge(settings, config, client_id=f"bridge-{suffix}")
    try:
        bridge.start()

        attacker = ("acme.pump-1", tokens["acme.pump-1"])
        codes = {}
        for victim in ("beta.pump-1", "acme.pump-2"):
            payload = _reading(victim, ATTACK_TEMPERATURE)
            codes[victim] = _publish(port, *attacker, f"devices/{victim}/telemetry", payload)
        spoofed = _login_code(port, "beta.pump-1", tokens["acme.pump-1"])

        # The broker decides on a publish before its PUBACK, so these legal readings are
        # routed after any attack that it let through.
        for device_id in ("beta.pump-1", "acme.pump-1"):
            payload = _reading(device_id, LEGAL_TEMPERATURE)
            _publish(port, device_id, tokens[device_id], f"devices/{device_id}/telemetry", payload)
        _wait_handled(bridge, 2)

        for topic in INVALID_TOPICS:
            bridge.handle(topic, _reading("acme.pump-1", ATTACK_TEMPERATURE))
        for payload in INVALID_PAYLOADS:
            bridge.handle(f"devices/{PAYLOAD_DEVICE}/telemetry", payload)

        for tenant in ("acme", "beta"):
            _write_lake(settings, tenant, suffix)
        yield AclRun(bridge, settings, codes, spoofed)
    finally:
        bridge.stop()
        process.stop(spec)


def _topic(settings: Settings, tenant: str | None, field: str) -> list[dict]:
    """Return every record of a tenant's topic (the default deployment's for None)."""
    scoped = tenant_settings(tenant, settings) if tenant else settings
    topic = getattr(scoped, field)
    ensure_topics(scoped, [topic])
    return read_dlq(scoped.with_overrides(topic_dlq=topic), limit=50, timeout=10)


def _records(run: AclRun) -> list[dict]:
    return [json.loads(line) for line in run.bridge.audit.path.read_text().splitlines()]


def _audit_path(run: AclRun) -> Path:
    return run.bridge.audit.path


@pytest.mark.parametrize("victim", ["beta.pump-1", "acme.pump-2"])
def test_foreign_publish_not_authorized(acl_run, victim):
    code = acl_run.publish_codes[victim]
    assert code is not None
    assert code.value == NOT_AUTHORIZED


def test_spoofed_login_refused(acl_run):
    code = acl_run.spoofed_login_code
    assert code is not None
    assert code.is_failure


def test_bridge_handled_legal_only(acl_run):
    assert acl_run.bridge.handled == 2


def test_victim_topic_own_reading(acl_run):
    records = _topic(acl_run.settings, "beta", "topic_raw")
    assert [(r["device_id"], r["temperature"]) for r in records] == [
        ("beta.pump-1", LEGAL_TEMPERATURE)
    ]


def test_same_tenant_device_topic(acl_run):
    records = _topic(acl_run.settings, "acme", "topic_raw")
    assert [(r["device_id"], r["temperature"]) for r in records] == [
        ("acme.pump-1", LEGAL_TEMPERATURE)
    ]


@pytest.mark.parametrize("tenant", ["acme", "beta"])
def test_tenant_dlq_empty(acl_run, tenant):
    assert _topic(acl_run.settings, tenant, "topic_dlq") == []


def test_default_topic_empty(acl_run):
    assert _topic(acl_run.settings, None, "topic_raw") == []


@pytest.mark.parametrize(
    ("tenant", "device_id"), [("beta", "beta.pump-1"), ("acme", "acme.pump-1")]
)
def test_tenant_lake_own_reading(acl_run, tenant, device_id):
    frame = read_raw(tenant_settings(tenant, acl_run.settings).lake_url)
    rows = set(zip(frame["device_id"], frame["metric"], frame["value"], strict=True))
    assert rows == {(device_id, "temperature", LEGAL_TEMPERATURE)}


def test_foreign_topics_not_audited(acl_run):
    records = _records(acl_run)
    victim = [r for r in records if r.get("path") == "devices/beta.pump-1/telemetry"]
    assert [(r["actor"], r["outcome"]) for r in victim] == [("beta.pump-1", "accepted")]
    assert [r for r in records if r.get("path") == "devices/acme.pump-2/telemetry"] == []


def test_invalid_topics_audited(acl_run):
    rejects = [r for r in _records(acl_run) if r["event"] == "reject"]
    assert len(rejects) == len(INVALID_TOPICS)
    fields = ("actor", "action", "outcome", "http_status", "transport")
    assert [{name: r.get(name) for name in fields} for r in rejects] == [
        {
            "actor": "client:mqtt",
            "action": "ingest",
            "outcome": "rejected",
            "http_status": 400,
            "transport": "mqtt",
        }
    ] * len(INVALID_TOPICS)


def test_invalid_topic_reason(acl_run):
    record = next(r for r in _records(acl_run) if r.get("path") == "devices//telemetry")
    assert record["reason"] == "topic devices//telemetry is not devices/<device_id>/telemetry"
    assert record["device_id"] is None


def test_invalid_topic_names_device(acl_run):
    record = next(r for r in _records(acl_run) if r.get("path") == "devices/beta.pump-1/status")
    assert record["device_id"] == "beta.pump-1"


def test_invalid_topic_secret_digested(acl_run):
    text = _audit_path(acl_run).read_text()
    assert SECRET_SEGMENT not in text
    assert f"sha256:{secret_digest(SECRET_SEGMENT)}" in text


def _payload_records(run: AclRun) -> list[dict]:
    path = f"devices/{PAYLOAD_DEVICE}/telemetry"
    return [r for r in _records(run) if r["event"] == "ingest" and r["path"] == path]


def test_invalid_payloads_audited(acl_run):
    records = _payload_records(acl_run)
    assert [(r["actor"], r["outcome"], r["invalid"]) for r in records] == [
        (PAYLOAD_DEVICE, "rejected", 1)
    ] * len(INVALID_PAYLOADS)


def test_unparsable_payload_reason(acl_run):
    reason = _payload_records(acl_run)[0]["reason"]
    assert reason.startswith("payload is not JSON")


def test_invalid_reading_reason_unquoted(acl_run):
    reason = _payload_records(acl_run)[1]["reason"]
    assert reason == (
        "1 of 1 readings are invalid, and the dead-letter queue has the reason of each"
    )


def test_accepted_record_without_reason(acl_run):
    accepted = [r for r in _records(acl_run) if r.get("outcome") == "accepted"]
    assert [r.get("reason") for r in accepted] == [None, None]


def test_invalid_input_alerted(acl_run):
    alerts = scan([_audit_path(acl_run)])
    assert sorted((a.rule, a.actor, a.count) for a in alerts) == [
        ("malformed_input", "client:mqtt", len(INVALID_TOPICS)),
        ("malformed_input", PAYLOAD_DEVICE, len(INVALID_PAYLOADS)),
    ]


def test_invalid_input_dead_lettered(acl_run):
    records = _topic(acl_run.settings, None, "topic_dlq")
    assert sorted(r["topic"] for r in records if "topic" in r) == sorted(INVALID_TOPICS)
    assert len(records) == len(INVALID_TOPICS) + len(INVALID_PAYLOADS)


def test_acl_audit_chain_intact(acl_run):
    path = _audit_path(acl_run)
    expected = 2 + len(INVALID_TOPICS) + len(INVALID_PAYLOADS)
    assert verify([path]) == {str(path): expected}

"""CloudTrail data events of the lake read as audit records and scanned by the rules."""

from __future__ import annotations

import gzip
import json

from typer.testing import CliRunner

from saodf.audit_cloudtrail import read_cloudtrail, record_from_cloudtrail
from saodf.audit_tools import detect

ACCOUNT = "123456789012"


def _s3_event(role: str, key: str, error: str | None = None, minute: int = 0) -> dict:
    event = {
        "eventVersion": "1.09",
        "eventTime": f"2026-12-04T10:{minute:02d}:00Z",
        "eventSource": "s3.amazonaws.com",
        "eventName": "GetObject",
        "sourceIPAddress": "10.40.1.7",
        "eventID": f"id-{minute}",
        "userIdentity": {
            "type": "AssumedRole",
            "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/session-1",
            "sessionContext": {"sessionIssuer": {"type": "Role", "userName": role}},
        },
        "requestParameters": {"bucketName": "acme-saodf-raw", "key": key},
    }
    if error:
        event.update(errorCode=error, errorMessage="Access Denied")
    return event


def _write(path, events, compress=True):
    payload = json.dumps({"Records": events}).encode()
    if compress:
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


def test_denied_cross_tenant_read_maps():
    record = record_from_cloudtrail(
        _s3_event("saodf-tenant-acme", "tenants/beta/raw/x.parquet", "AccessDenied"), "t#0"
    )
    assert record.data["namespace"] == "acme"
    assert record.data["target_namespace"] == "beta"
    assert record.data["http_status"] == 403
    assert record.data["event"] == "reject"


def test_own_prefix_read_maps():
    record = record_from_cloudtrail(_s3_event("saodf-tenant-acme", "tenants/acme/raw/x"), "t#0")
    assert record.data["event"] == "GetObject"
    assert record.data["namespace"] == record.data["target_namespace"]


def test_role_arn_without_session_context():
    event = _s3_event("saodf-tenant-beta-2", "tenants/beta-2/a")
    del event["userIdentity"]["sessionContext"]
    assert record_from_cloudtrail(event, "t#0").data["namespace"] == "beta-2"


def test_cross_tenant_alert_from_trail(tmp_path):
    folder = tmp_path / "AWSLogs" / ACCOUNT / "CloudTrail" / "us-east-1" / "2026" / "12" / "04"
    folder.mkdir(parents=True)
    _write(
        folder / "a.json.gz",
        [
            _s3_event("saodf-tenant-acme", "tenants/acme/raw/ok", minute=1),
            _s3_event("saodf-tenant-acme", "tenants/beta/raw/x", "AccessDenied", minute=2),
        ],
    )
    alerts = detect(read_cloudtrail([tmp_path]))
    assert [a.rule for a in alerts] == ["cross_tenant"]
    assert alerts[0].actor.endswith("assumed-role/saodf-tenant-acme/session-1")


def test_legal_reads_raise_nothing(tmp_path):
    events = [_s3_event("saodf-tenant-acme", f"tenants/acme/raw/{n}", minute=n) for n in range(5)]
    _write(tmp_path / "b.json", events, compress=False)
    assert detect(read_cloudtrail([tmp_path / "b.json"])) == []


def test_non_trail_file_skipped(tmp_path):
    (tmp_path / "c.json").write_text('{"not": "a trail"}', encoding="utf-8")
    assert read_cloudtrail([tmp_path]) == []


def test_cli_exits_3_on_alert(tmp_path, monkeypatch):
    from saodf.cli import app

    monkeypatch.setenv("SAODF_HOME", str(tmp_path / "home"))
    _write(
        tmp_path / "d.json.gz",
        [_s3_event("saodf-tenant-acme", "tenants/beta/raw/x", "AccessDenied")],
    )
    result = CliRunner().invoke(app, ["audit", "cloudtrail", str(tmp_path / "d.json.gz")])
    assert result.exit_code == 3
    assert "cross_tenant" in result.output


def test_cli_names_missing_path(tmp_path):
    from saodf.cli import app

    result = CliRunner().invoke(app, ["audit", "cloudtrail", str(tmp_path / "absent")])
    assert result.exit_code == 1
    assert "no such CloudTrail log or folder" in result.output

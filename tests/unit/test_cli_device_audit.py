"""``saodf device token create|revoke``: admin audit records and revoked-token digests."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from saodf.audit_tools import revoked_keys, secret_digest
from saodf.cli_device import device_app
from saodf.config import get_settings, reset_settings
from saodf.tenants import create_tenant


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("SAODF_HOME", str(tmp_path / "home"))
    reset_settings()
    yield get_settings()
    reset_settings()


@pytest.fixture
def runner(settings):
    app = typer.Typer()
    app.add_typer(device_app, name="device")
    return lambda *args: CliRunner().invoke(app, ["device", *args])


def _admin_records(settings):
    path = settings.log_dir / "admin_audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _fields(record):
    names = ("event", "tenant", "action", "resource", "outcome", "client")
    return {name: record.get(name) for name in names}


def test_create_audited(runner, settings):
    runner("token", "create", "skab-valve1-0")
    assert [_fields(record) for record in _admin_records(settings)] == [
        {
            "event": "admin",
            "tenant": "default",
            "action": "device.token.create",
            "resource": "default/device/skab-valve1-0",
            "outcome": "succeeded",
            "client": "local",
        }
    ]


def test_create_audit_names_actor(runner, settings):
    runner("token", "create", "skab-valve1-0")
    assert _admin_records(settings)[0]["actor"].startswith("user:")


def test_create_audit_has_no_token(runner, settings):
    token = runner("token", "create", "skab-valve1-0").stdout.strip().splitlines()[0]
    assert token not in (settings.log_dir / "admin_audit.jsonl").read_text()


def test_invalid_create_audited(runner, settings):
    runner("token", "create", "../etc")
    record = _admin_records(settings)[-1]
    assert (record["action"], record["outcome"]) == ("device.token.create", "rejected")


def test_revoke_audited(runner, settings):
    runner("token", "create", "skab-valve1-0")
    runner("token", "revoke", "skab-valve1-0")
    record = _admin_records(settings)[-1]
    assert _fields(record) == {
        "event": "admin",
        "tenant": "default",
        "action": "device.token.revoke",
        "resource": "default/device/skab-valve1-0",
        "outcome": "succeeded",
        "client": "local",
    }


def test_unknown_revoke_audited(runner, settings):
    runner("token", "revoke", "nope-1")
    record = _admin_records(settings)[-1]
    assert (record["resource"], record["outcome"]) == ("default/device/nope-1", "rejected")


def test_tenant_device_resource(runner, settings):
    create_tenant("acme", devices=["pump-1"], settings=settings)
    runner("token", "revoke", "acme.pump-1")
    record = _admin_records(settings)[-1]
    assert (record["tenant"], record["resource"]) == ("acme", "acme/device/acme.pump-1")


def test_revoked_token_digest_listed(runner, settings):
    token = runner("token", "create", "skab-valve1-0").stdout.strip().splitlines()[0]
    runner("token", "revoke", "skab-valve1-0")
    entries = revoked_keys(settings)
    assert [(e["device_id"], e["digest"]) for e in entries] == [
        ("skab-valve1-0", secret_digest(token))
    ]


def test_rotated_token_digest_listed(runner, settings):
    old = runner("token", "create", "skab-valve1-0").stdout.strip().splitlines()[0]
    new = runner("token", "create", "skab-valve1-0").stdout.strip().splitlines()[0]
    digests = [entry["digest"] for entry in revoked_keys(settings)]
    assert digests == [secret_digest(old)]
    assert secret_digest(new) not in digests


def test_first_create_lists_nothing(runner, settings):
    runner("token", "create", "skab-valve1-0")
    assert revoked_keys(settings) == []

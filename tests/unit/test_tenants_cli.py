"""The tenant and audit sub-commands, run through typer's test runner."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from actions.audit import AuditLog
from saodf.cli_tenant import audit_app, tenant_app
from saodf.config import get_settings, reset_settings

runner = CliRunner()


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("SAODF_HOME", str(tmp_path / "home"))
    reset_settings()
    yield get_settings()
    reset_settings()


def test_create_prints_key(settings):
    result = runner.invoke(tenant_app, ["create", "acme", "--no-redis-acl"])
    assert "gateway key" in result.output


def test_list_hides_secret(settings):
    created = runner.invoke(tenant_app, ["create", "acme", "--no-redis-acl"])
    key = created.output.split("gateway key", 1)[1].split()[0]
    listed = runner.invoke(tenant_app, ["list", "--json"])
    assert key not in listed.output


def test_list_json_names(settings):
    runner.invoke(tenant_app, ["create", "acme", "--no-redis-acl"])
    listed = runner.invoke(tenant_app, ["list", "--json"])
    assert [tenant["name"] for tenant in json.loads(listed.output)] == ["acme"]


def test_list_empty_hint(settings):
    result = runner.invoke(tenant_app, ["list"])
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "no tenants; create one with `saodf tenant create NAME`" in result.stderr


def test_delete_unknown_exit(settings):
    result = runner.invoke(tenant_app, ["delete", "ghost", "--yes", "--no-redis-acl"])
    assert result.exit_code == 1


def test_delete_unknown_before_prompt(settings):
    result = runner.invoke(tenant_app, ["delete", "ghost", "--no-redis-acl"], input="y\n")
    assert result.exit_code == 1
    assert "Delete tenant" not in result.output
    assert "tenant 'ghost' not found; list tenants with `saodf tenant list`" in result.stderr


def test_delete_prints_stop_hint(settings):
    runner.invoke(tenant_app, ["create", "acme", "--no-redis-acl"])
    result = runner.invoke(tenant_app, ["delete", "acme", "--no-redis-acl"], input="y\n")
    assert result.exit_code == 0
    assert "Delete tenant acme and revoke its keys?" in result.output
    assert "MQTT logins and SQS drain stop at the next" in result.stderr
    assert "start with the next" not in result.stderr


def test_admin_commands_audited(settings):
    runner.invoke(tenant_app, ["create", "acme", "--no-redis-acl"])
    runner.invoke(tenant_app, ["rotate-keys", "acme", "--no-redis-acl"])
    lines = (settings.log_dir / "admin_audit.jsonl").read_text().splitlines()
    assert [json.loads(line)["action"] for line in lines] == ["tenant.create", "tenant.rotate-keys"]


def test_audit_log_has_no_secret(settings):
    created = runner.invoke(tenant_app, ["create", "acme", "--no-redis-acl"])
    key = created.output.split("gateway key", 1)[1].split()[0]
    assert key not in (settings.log_dir / "admin_audit.jsonl").read_text()


def test_verify_intact_exit(settings):
    runner.invoke(tenant_app, ["create", "acme", "--no-redis-acl"])
    assert runner.invoke(audit_app, ["verify"]).exit_code == 0


def test_verify_tampered_exit(settings):
    log = AuditLog(settings.log_dir / "audit.jsonl")
    for number in range(3):
        log.append("invoke", actor=f"uuid-{number}")
    lines = log.path.read_text().splitlines()
    log.path.write_text("\n".join([lines[0], lines[2]]) + "\n")
    assert runner.invoke(audit_app, ["verify"]).exit_code == 2


def test_watch_alert_exit(settings):
    log = AuditLog(settings.log_dir / "audit.jsonl")
    log.append("reject", http_status=403, namespace="acme", target_namespace="beta", actor="u")
    result = runner.invoke(audit_app, ["watch"])
    assert result.exit_code == 3


def test_watch_alert_names_rule(settings):
    log = AuditLog(settings.log_dir / "audit.jsonl")
    log.append("reject", http_status=403, namespace="acme", target_namespace="beta", actor="u")
    result = runner.invoke(audit_app, ["watch"])
    assert json.loads(result.stdout.splitlines()[0])["rule"] == "cross_tenant"


def test_delete_audited(settings):
    runner.invoke(tenant_app, ["create", "acme", "--no-redis-acl"])
    runner.invoke(tenant_app, ["delete", "acme", "--yes", "--no-redis-acl"])
    record = json.loads((settings.log_dir / "admin_audit.jsonl").read_text().splitlines()[-1])
    fields = ("event", "tenant", "action", "resource", "outcome", "client")
    assert {name: record.get(name) for name in fields} == {
        "event": "admin",
        "tenant": "acme",
        "action": "tenant.delete",
        "resource": "acme",
        "outcome": "succeeded",
        "client": "local",
    }


def test_unknown_delete_audited(settings):
    runner.invoke(tenant_app, ["delete", "ghost", "--yes", "--no-redis-acl"])
    record = json.loads((settings.log_dir / "admin_audit.jsonl").read_text().splitlines()[-1])
    assert (record["action"], record["outcome"]) == ("tenant.delete", "rejected")

"""Audit verification and detection rules on hand-made logs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from actions.audit import AuditChainError, AuditLog
from saodf.audit_tools import RuleConfig, read_records, scan, verify

START = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _write(path, records):
    """Write records with explicit times through AuditLog, so the chain is valid."""
    log = AuditLog(path)
    for seconds, event, fields in records:
        stamp = (START + timedelta(seconds=seconds)).isoformat(timespec="milliseconds")
        log.append(event, **fields, time=stamp)
    return path


def _wrong_key(client="127.0.0.9"):
    return {
        "http_status": 401,
        "path": "/api/v1/namespaces/acme/actions/forecast",
        "client": client,
        "actor": f"client:{client}",
        "outcome": "rejected",
        "reason": "The supplied authentication is invalid: wrong credentials.",
    }


def _invoke(actor="uuid-a", namespace="acme"):
    return {"http_status": 200, "namespace": namespace, "actor": actor, "outcome": "succeeded"}


def _rules(alerts):
    return sorted({alert.rule for alert in alerts})


def _only(alerts, rule):
    return [alert for alert in alerts if alert.rule == rule]


def _known_source_guesses(count, client="127.0.0.9"):
    """Return one call that authenticates from ``client``, then ``count`` wrong keys from it."""
    signed_in = (0, "invoke", {**_invoke(), "client": client})
    return [signed_in] + [(1 + i, "reject", _wrong_key(client)) for i in range(count)]


@pytest.fixture
def chain(tmp_path):
    return _write(tmp_path / "audit.jsonl", [(i, "invoke", _invoke()) for i in range(5)])


def test_verify_intact(chain):
    assert verify([chain]) == {str(chain): 5}


def test_verify_edited(chain):
    lines = chain.read_text().splitlines()
    lines[1] = lines[1].replace("uuid-a", "uuid-b")
    chain.write_text("\n".join(lines) + "\n")
    with pytest.raises(AuditChainError, match="line 3"):
        verify([chain])


def test_verify_removed(chain):
    lines = chain.read_text().splitlines()
    del lines[2]
    chain.write_text("\n".join(lines) + "\n")
    with pytest.raises(AuditChainError, match="line 3"):
        verify([chain])


def test_verify_reordered(chain):
    lines = chain.read_text().splitlines()
    lines[1], lines[2] = lines[2], lines[1]
    chain.write_text("\n".join(lines) + "\n")
    with pytest.raises(AuditChainError, match="line 2"):
        verify([chain])


def test_verify_truncated_tail(chain):
    last = AuditLog(chain)._prev
    lines = chain.read_text().splitlines()
    chain.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(AuditChainError, match="truncated"):
        verify([chain], {str(chain): last})


def test_brute_force_alert(tmp_path):
    path = _write(tmp_path / "a.jsonl", [(i, "reject", _wrong_key()) for i in range(4)])
    alerts = _only(scan([path]), "brute_force")
    assert [(a.rule, a.actor, a.count) for a in alerts] == [("brute_force", "client:127.0.0.9", 4)]


def test_brute_force_evidence(tmp_path):
    path = _write(tmp_path / "a.jsonl", [(i, "reject", _wrong_key()) for i in range(3)])
    assert _only(scan([path]), "brute_force")[0].evidence == [f"{path}:{n}" for n in (1, 2, 3)]


def test_brute_force_below_threshold(tmp_path):
    path = _write(tmp_path / "a.jsonl", _known_source_guesses(2))
    assert scan([path]) == []


def test_brute_force_spread_out(tmp_path):
    path = _write(tmp_path / "a.jsonl", [(i * 400, "reject", _wrong_key()) for i in range(3)])
    assert _only(scan([path]), "brute_force") == []


def test_cross_tenant_alert(tmp_path):
    fields = {
        "http_status": 403,
        "namespace": "acme",
        "target_namespace": "beta",
        "actor": "uuid-a",
        "client": "127.0.0.1",
    }
    path = _write(tmp_path / "a.jsonl", [(0, "invoke", _invoke()), (1, "reject", fields)])
    assert [(a.rule, a.actor) for a in scan([path])] == [("cross_tenant", "uuid-a")]


def test_invalid_token_burst(tmp_path):
    fields = {"http_status": 401, "path": "/v1/telemetry", "client": "127.0.0.7"}
    path = _write(tmp_path / "i.jsonl", [(i, "reject", fields) for i in range(5)])
    assert _rules(scan([path])) == ["invalid_token_burst"]


def test_malformed_body(tmp_path):
    fields = {"http_status": 413, "path": "/api/v1/namespaces/acme/actions/x", "actor": "uuid-a"}
    path = _write(tmp_path / "a.jsonl", [(0, "reject", fields)])
    assert _rules(scan([path])) == ["malformed_input"]


@pytest.mark.parametrize("outcome", ["rejected", "partly rejected"])
def test_malformed_ingest_readings(tmp_path, outcome):
    fields = {"http_status": 400, "actor": "acme.pump-1", "invalid": 1, "outcome": outcome}
    path = _write(tmp_path / "i.jsonl", [(0, "ingest", fields)])
    assert _rules(scan([path])) == ["malformed_input"]


def test_path_traversal_device(tmp_path):
    fields = {**_invoke(), "bad_device_id": "'../../etc/passwd'", "outcome": "failed"}
    path = _write(tmp_path / "a.jsonl", [(0, "invoke", fields)])
    assert _rules(scan([path])) == ["malformed_input"]


def test_unusual_volume(tmp_path):
    calls = [(minute * 60 + i, "invoke", _invoke()) for minute in range(10) for i in range(5)]
    calls += [(700 + i * 0.1, "invoke", _invoke()) for i in range(120)]
    alerts = scan([_write(tmp_path / "a.jsonl", calls)])
    assert [(a.rule, a.count) for a in alerts] == [("unusual_volume", 120)]


def test_steady_volume_quiet(tmp_path):
    calls = [(minute * 60 + i, "invoke", _invoke()) for minute in range(10) for i in range(40)]
    assert scan([_write(tmp_path / "a.jsonl", calls)]) == []


def test_legal_traffic_quiet(tmp_path):
    calls = [(i, "invoke", _invoke(actor=f"uuid-{i % 3}")) for i in range(30)]
    assert scan([_write(tmp_path / "a.jsonl", calls)]) == []


def test_threshold_configurable(tmp_path):
    path = _write(tmp_path / "a.jsonl", _known_source_guesses(1))
    assert _rules(scan([path], RuleConfig(brute_force_failures=1))) == ["brute_force"]


def test_read_two_logs_in_time_order(tmp_path):
    first = _write(tmp_path / "a.jsonl", [(5, "invoke", _invoke())])
    second = _write(tmp_path / "b.jsonl", [(1, "invoke", _invoke())])
    assert [r.ref for r in read_records([first, second])] == [f"{second}:1", f"{first}:1"]


def test_detection_keeps_interval(tmp_path, monkeypatch):
    from saodf.audit_tools import run_detection
    from saodf.config import get_settings, reset_settings

    monkeypatch.setenv("SAODF_HOME", str(tmp_path / "home"))
    reset_settings()
    settings = get_settings()
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    _write(settings.log_dir / "audit.jsonl", _known_source_guesses(3))
    later = run_detection(settings, since=START + timedelta(minutes=1))
    found = run_detection(settings, since=START, until=START + timedelta(minutes=1))
    reset_settings()
    assert (len(later), len(found)) == (0, 1)


def test_detection_writes_alerts(tmp_path, monkeypatch):
    from saodf.audit_tools import run_detection
    from saodf.config import get_settings, reset_settings

    monkeypatch.setenv("SAODF_HOME", str(tmp_path / "home"))
    reset_settings()
    settings = get_settings()
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    _write(settings.log_dir / "audit.jsonl", [(i, "reject", _wrong_key()) for i in range(3)])
    run_detection(settings)
    reset_settings()
    assert (settings.log_dir / "alerts.jsonl").read_text().count("brute_force") == 1


def test_lone_guess_flagged(tmp_path):
    path = _write(tmp_path / "a.jsonl", [(0, "invoke", _invoke()), (1, "reject", _wrong_key())])
    alerts = scan([path])
    assert [(a.rule, a.actor, a.count) for a in alerts] == [
        ("unknown_source_guess", "client:127.0.0.9", 1)
    ]
    assert "namespace acme" in alerts[0].detail


def test_lone_guess_known_source_quiet(tmp_path):
    path = _write(tmp_path / "a.jsonl", _known_source_guesses(1))
    assert scan([path]) == []


def test_lone_guess_missing_key_quiet(tmp_path):
    fields = {**_wrong_key(), "reason": "The supplied authentication is invalid: missing basic"}
    path = _write(tmp_path / "a.jsonl", [(0, "reject", fields)])
    assert scan([path]) == []


def test_lone_guess_other_scheme(tmp_path):
    fields = {
        **_wrong_key(),
        "reason": "The supplied authentication is invalid: unsupported authorization scheme",
        "key_digest": "cd" * 8,
    }
    path = _write(tmp_path / "a.jsonl", [(0, "reject", fields)])
    assert _rules(scan([path])) == ["unknown_source_guess"]


def test_lone_guess_ingest_token(tmp_path):
    unknown = {"http_status": 401, "path": "/v1/telemetry", "client": "127.0.0.7"}
    path = _write(
        tmp_path / "i.jsonl",
        [(0, "reject", unknown), (1, "reject", {**unknown, "token_digest": "ab" * 8})],
    )
    alerts = scan([path])
    assert [(a.rule, a.evidence) for a in alerts] == [("unknown_source_guess", [f"{path}:2"])]


@pytest.fixture
def home(tmp_path, monkeypatch):
    from saodf.config import get_settings, reset_settings

    monkeypatch.setenv("SAODF_HOME", str(tmp_path / "home"))
    reset_settings()
    yield get_settings()
    reset_settings()


def _rotate_out(settings, key="0d1e2f30-aaaa-bbbb-cccc-000000000001:s3cret-part"):
    from saodf.audit_tools import record_revoked_keys
    from streaming.tokens import create_device_token

    token = create_device_token("acme.pump-1", settings)
    assert record_revoked_keys(settings, "acme", key, ["acme.pump-1", "acme.none"]) == 2
    return key, token


def test_revoked_list_keeps_digests(home):
    from saodf.audit_tools import revoked_keys, secret_digest

    key, token = _rotate_out(home)
    entries = revoked_keys(home)
    assert [(e["kind"], e["tenant"]) for e in entries] == [
        ("gateway_key", "acme"),
        ("device_token", "acme"),
    ]
    assert [e["digest"] for e in entries] == [secret_digest(key), secret_digest(token)]
    text = (home.home / "secrets" / "revoked_keys.json").read_text()
    assert key.split(":")[1] not in text
    assert token not in text


def test_revoked_list_missing(home):
    from saodf.audit_tools import revoked_keys

    assert revoked_keys(home) == []


def test_revoked_token_new_source(home, tmp_path):
    from saodf.audit_tools import rule_config, secret_digest

    _, token = _rotate_out(home)
    reject = {
        "http_status": 401,
        "path": "/v1/telemetry",
        "client": "127.0.0.8",
        "token_digest": secret_digest(token),
    }
    signed_in = {"http_status": 202, "actor": "acme.pump-1", "client": "127.0.0.1"}
    path = _write(tmp_path / "i.jsonl", [(0, "ingest", signed_in), (1, "reject", reject)])
    alerts = _only(scan([path], rule_config(home)), "revoked_key")
    assert [a.evidence for a in alerts] == [[f"{path}:2"]]
    assert "acme.pump-1 of tenant acme presented from a new address" in alerts[0].detail


def test_revoked_token_old_source(home, tmp_path):
    from saodf.audit_tools import rule_config, secret_digest

    _, token = _rotate_out(home)
    reject = {
        "http_status": 401,
        "path": "/v1/telemetry",
        "client": "127.0.0.1",
        "token_digest": secret_digest(token),
    }
    signed_in = {"http_status": 202, "actor": "acme.pump-1", "client": "127.0.0.1"}
    path = _write(tmp_path / "i.jsonl", [(0, "ingest", signed_in), (1, "reject", reject)])
    alerts = scan([path], rule_config(home))
    assert _rules(alerts) == ["revoked_key"]
    assert "an address its owner used before" in alerts[0].detail


def test_revoked_gateway_key_digest(home, tmp_path):
    from saodf.audit_tools import rule_config, secret_digest

    key, _ = _rotate_out(home)
    reject = {**_wrong_key(), "key_digest": secret_digest(key)}
    path = _write(tmp_path / "a.jsonl", [(0, "reject", reject)])
    assert _rules(scan([path], rule_config(home))) == ["revoked_key", "unknown_source_guess"]


def test_revoked_key_legal_source(home, tmp_path):
    """A replay from an address that authenticated before is given away by its digest alone."""
    from saodf.audit_tools import rule_config, secret_digest

    key, _ = _rotate_out(home)
    reject = {**_wrong_key("127.0.0.1"), "key_digest": secret_digest(key)}
    signed_in = {**_invoke(actor=key.split(":")[0]), "client": "127.0.0.1"}
    path = _write(tmp_path / "a.jsonl", [(0, "invoke", signed_in), (1, "reject", reject)])
    alerts = scan([path], rule_config(home))
    assert _rules(alerts) == ["revoked_key"]
    assert alerts[0].evidence == [f"{path}:2"]
    assert "an address its owner used before (127.0.0.1)" in alerts[0].detail


def test_current_key_not_revoked(home, tmp_path):
    from saodf.audit_tools import rule_config

    _rotate_out(home)
    reject = {**_wrong_key(), "key_digest": "0" * 16}
    path = _write(tmp_path / "a.jsonl", [(0, "reject", reject)])
    assert _rules(scan([path], rule_config(home))) == ["unknown_source_guess"]

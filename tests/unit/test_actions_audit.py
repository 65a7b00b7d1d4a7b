"""Tests of the hash-chained audit log."""

from __future__ import annotations

import json

import pytest

from actions.audit import GENESIS_HASH, AuditChainError, AuditLog, verify_audit_log


def _write(path, count: int) -> AuditLog:
    log = AuditLog(path)
    for index in range(count):
        log.append("invoke", activation_id=f"a{index}", namespace="saodf")
    return log


def test_chain_verifies(tmp_path):
    path = tmp_path / "audit.jsonl"
    _write(path, 5)
    assert verify_audit_log(path) == 5


def test_first_record_has_genesis(tmp_path):
    path = tmp_path / "audit.jsonl"
    _write(path, 1)
    assert json.loads(path.read_text())["prev"] == GENESIS_HASH


def test_edited_line_detected(tmp_path):
    path = tmp_path / "audit.jsonl"
    _write(path, 4)
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace('"a1"', '"forged"')
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(AuditChainError, match="line 3 does not carry the hash of line 2"):
        verify_audit_log(path)


def test_removed_line_detected(tmp_path):
    path = tmp_path / "audit.jsonl"
    _write(path, 4)
    lines = path.read_text().splitlines()
    del lines[1]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(AuditChainError, match="line 2 does not carry"):
        verify_audit_log(path)


def test_reopened_log_continues_chain(tmp_path):
    path = tmp_path / "audit.jsonl"
    _write(path, 2)
    _write(path, 2)
    assert verify_audit_log(path) == 4


def test_non_json_line_detected(tmp_path):
    path = tmp_path / "audit.jsonl"
    _write(path, 2)
    with path.open("a") as handle:
        handle.write("not json\n")
    with pytest.raises(AuditChainError, match="line 3 is not JSON"):
        verify_audit_log(path)


def test_reordered_lines_detected(tmp_path):
    path = tmp_path / "audit.jsonl"
    _write(path, 4)
    lines = path.read_text().splitlines()
    lines[1], lines[2] = lines[2], lines[1]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(AuditChainError, match="line 2 does not carry the hash of line 1"):
        verify_audit_log(path)


def test_forged_prev_detected(tmp_path):
    path = tmp_path / "audit.jsonl"
    _write(path, 3)
    lines = path.read_text().splitlines()
    record = json.loads(lines[1])
    record["prev"] = "f" * 64
    lines[1] = json.dumps(record, separators=(",", ":"), sort_keys=True)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(AuditChainError, match="line 2 does not carry"):
        verify_audit_log(path)


def test_truncated_tail_detected(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    for index in range(3):
        head = log.append("invoke", activation_id=f"a{index}")
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n")
    assert verify_audit_log(path) == 2
    with pytest.raises(AuditChainError, match="tail was truncated or its last line edited"):
        verify_audit_log(path, expected_last_hash=head)


def test_edited_last_line_detected(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    log.append("invoke", activation_id="a0")
    head = log.append("reject", http_status=401)
    path.write_text(path.read_text().replace('"http_status":401', '"http_status":200'))
    with pytest.raises(AuditChainError, match="not the expected"):
        verify_audit_log(path, expected_last_hash=head)


def test_expected_head_accepted(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    head = log.append("invoke", activation_id="a0")
    assert verify_audit_log(path, expected_last_hash=head) == 1

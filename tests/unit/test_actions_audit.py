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

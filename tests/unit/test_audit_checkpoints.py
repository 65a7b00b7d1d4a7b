"""Audit checkpoints: records removed, edited or reordered after a verification."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from actions.audit import AuditChainError, AuditLog
from saodf.audit_tools import checkpoints_path, load_checkpoints, verify_checkpointed
from saodf.cli_tenant import audit_app
from saodf.config import get_settings, reset_settings

runner = CliRunner()


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("SAODF_HOME", str(tmp_path / "home"))
    reset_settings()
    yield get_settings()
    reset_settings()


@pytest.fixture
def log(settings):
    audit = AuditLog(settings.log_dir / "audit.jsonl")
    for number in range(4):
        audit.append("invoke", actor=f"uuid-{number}")
    return audit


def _lines(log) -> list[str]:
    return log.path.read_text().splitlines()


def _write(log, lines: list[str]) -> None:
    log.path.write_text("\n".join(lines) + "\n")


def test_checkpoint_stored_after_verify(settings, log):
    verify_checkpointed([log.path], settings)
    stored = load_checkpoints(settings)[str(log.path.resolve())]
    assert stored["records"] == 4
    assert len(stored["last_hash"]) == 64


def test_checkpoint_last_hash_matches(settings, log):
    last_hash = log.append("invoke", actor="uuid-4")
    verify_checkpointed([log.path], settings)
    assert load_checkpoints(settings)[str(log.path.resolve())]["last_hash"] == last_hash


def test_checkpoint_tail_removed(settings, log):
    verify_checkpointed([log.path], settings)
    _write(log, _lines(log)[:-1])
    with pytest.raises(
        AuditChainError, match=r"has 3 records, but an earlier verification counted 4"
    ):
        verify_checkpointed([log.path], settings)


def test_checkpoint_error_names_fix(settings, log):
    verify_checkpointed([log.path], settings)
    _write(log, _lines(log)[:-1])
    with pytest.raises(AuditChainError, match="--reset-checkpoints"):
        verify_checkpointed([log.path], settings)


def test_checkpoint_kept_after_failure(settings, log):
    verify_checkpointed([log.path], settings)
    _write(log, _lines(log)[:-1])
    for _ in range(2):
        with pytest.raises(AuditChainError, match="removed from its tail"):
            verify_checkpointed([log.path], settings)


def test_checkpoint_last_line_edited(settings, log):
    verify_checkpointed([log.path], settings)
    lines = _lines(log)
    record = json.loads(lines[-1])
    record["actor"] = "someone-else"
    _write(log, [*lines[:-1], json.dumps(record, separators=(",", ":"), sort_keys=True)])
    with pytest.raises(AuditChainError, match="record 4 has hash .* but an earlier verification"):
        verify_checkpointed([log.path], settings)


def test_checkpoint_middle_line_edited(settings, log):
    verify_checkpointed([log.path], settings)
    lines = _lines(log)
    _write(log, [lines[0], lines[1].replace("uuid-1", "uuid-9"), *lines[2:]])
    with pytest.raises(AuditChainError, match="line 3 does not carry the hash of line 2"):
        verify_checkpointed([log.path], settings)


def test_checkpoint_lines_reordered(settings, log):
    verify_checkpointed([log.path], settings)
    lines = _lines(log)
    _write(log, [lines[0], lines[2], lines[1], lines[3]])
    with pytest.raises(AuditChainError, match="line 2 does not carry the hash of line 1"):
        verify_checkpointed([log.path], settings)


def test_checkpoint_appends_still_intact(settings, log):
    verify_checkpointed([log.path], settings)
    log.append("invoke", actor="uuid-4")
    assert verify_checkpointed([log.path], settings) == {str(log.path.resolve()): 5}


def test_checkpoint_whole_log_removed(settings, log):
    verify_checkpointed([log.path], settings, check_missing=True)
    log.path.unlink()
    with pytest.raises(AuditChainError, match="is missing, but an earlier verification counted 4"):
        verify_checkpointed([], settings, check_missing=True)


def test_checkpoint_reset_accepts_cut(settings, log):
    verify_checkpointed([log.path], settings)
    _write(log, _lines(log)[:-1])
    assert verify_checkpointed([log.path], settings, reset=True) == {str(log.path.resolve()): 3}


def test_checkpoint_file_garbage(settings, log):
    checkpoints_path(settings).write_text("garbage{")
    with pytest.raises(AuditChainError, match="audit checkpoint file .* is unreadable"):
        verify_checkpointed([log.path], settings)


def test_checkpoint_file_private(settings, log):
    verify_checkpointed([log.path], settings)
    assert checkpoints_path(settings).stat().st_mode & 0o077 == 0


def test_cli_verify_tail_removed_exit(settings, log):
    assert runner.invoke(audit_app, ["verify"]).exit_code == 0
    _write(log, _lines(log)[:-1])
    result = runner.invoke(audit_app, ["verify"])
    assert result.exit_code == 2
    assert "audit.jsonl has 3 records" in result.output


def test_cli_verify_reset_checkpoints(settings, log):
    runner.invoke(audit_app, ["verify"])
    _write(log, _lines(log)[:-1])
    assert runner.invoke(audit_app, ["verify", "--reset-checkpoints"]).exit_code == 0
    assert runner.invoke(audit_app, ["verify"]).exit_code == 0


def test_cli_verify_path_copy(settings, log, tmp_path):
    copy = tmp_path / "copy.jsonl"
    copy.write_text(log.path.read_text())
    assert runner.invoke(audit_app, ["verify", "--path", str(copy)]).exit_code == 0
    copy.write_text("\n".join(copy.read_text().splitlines()[:-1]) + "\n")
    assert runner.invoke(audit_app, ["verify", "--path", str(copy)]).exit_code == 2

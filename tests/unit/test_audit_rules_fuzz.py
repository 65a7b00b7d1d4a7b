"""Fuzzing of the audit log readers and rules: garbage logs raise only SAODF errors."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actions.audit import AuditChainError, verify_audit_log
from saodf.audit_tools import read_records, scan

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
FIELDS = st.dictionaries(
    st.sampled_from(
        [
            "time",
            "event",
            "http_status",
            "path",
            "actor",
            "client",
            "namespace",
            "target_namespace",
            "bad_device_id",
            "invalid",
            "subject",
            "prev",
        ]
    ),
    VALUES,
    max_size=8,
)
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(st.binary(max_size=400))
def test_verify_garbage_bytes(tmp_path, data):
    path = tmp_path / "audit.jsonl"
    path.write_bytes(data)
    try:
        verify_audit_log(path)
    except AuditChainError:
        pass


@FUZZ
@given(st.lists(FIELDS, max_size=12))
def test_rules_odd_records(tmp_path, records):
    path = tmp_path / "audit.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    assert isinstance(scan([path]), list)


@FUZZ
@given(st.binary(max_size=400))
def test_read_garbage_bytes(tmp_path, data):
    path = tmp_path / "audit.jsonl"
    path.write_bytes(data)
    assert isinstance(read_records([path]), list)

"""Raw-zone paths of the lake writer: built only from device ids that match the pattern."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from saodf.errors import InvalidTelemetryError
from streaming.lake_writer import Reading, raw_file_url

HOUR = datetime(2025, 4, 20, 12, tzinfo=timezone.utc)


def _items(device_id):
    return [Reading(0, 7, {"device_id": device_id}, HOUR)]


def test_raw_url_tenant_lake():
    url = raw_file_url("file:///lake/tenants/acme", "t.acme.raw", "acme.pump-1", HOUR, _items("x"))
    assert url.startswith("file:///lake/tenants/acme/raw/device_id=acme.pump-1/date=2025-04-20/")


@pytest.mark.parametrize(
    "device_id", ["../beta.pump-1", "%2e%2e", "/etc/passwd", "acme.pump\x00", "", "a/../../b"]
)
def test_raw_url_traversal(device_id):
    with pytest.raises(InvalidTelemetryError, match="invalid"):
        raw_file_url("file:///lake", "raw", device_id, HOUR, _items(device_id))

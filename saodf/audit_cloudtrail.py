"""Read CloudTrail log files as audit records, so the detection rules cover the AWS target.

On AWS the platform's trail records the data events of the lake buckets (see
``infra/modules/security/cloudtrail.tf``). A tenant works through its IAM role
``<prefix>-tenant-<tenant>`` on keys under ``tenants/<tenant>/``. This module maps each
CloudTrail record onto the fields that :mod:`saodf.audit_tools` rules read:

==================  ==========================================================
audit field         CloudTrail source
==================  ==========================================================
time                ``eventTime``
event               ``reject`` when ``errorCode`` is set, else the event name
http_status         403 for ``AccessDenied``-type errors, 401 for invalid credentials
namespace           tenant of the caller's role (``...-tenant-<tenant>``)
target_namespace    tenant of the object key (``tenants/<tenant>/...``)
actor               ``userIdentity.arn``
client              ``sourceIPAddress``
path, action        ``s3://bucket/key`` (or the event source) and ``eventName``
==================  ==========================================================

So a tenant role that reads another tenant's prefix and is denied raises the
``cross_tenant`` alert, as a wrong namespace does at the action gateway.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from saodf.audit_tools import Record, _epoch

logger = logging.getLogger(__name__)

TENANT_ROLE = re.compile(r"-tenant-([a-z][a-z0-9-]{0,30}[a-z0-9])$")
TENANT_KEY = re.compile(r"^tenants/([a-z][a-z0-9-]{0,30}[a-z0-9])/")
DENIED_ERRORS = ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation")
CREDENTIAL_ERRORS = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken")


def _role_name(identity: Mapping[str, Any]) -> str:
    issuer = (identity.get("sessionContext") or {}).get("sessionIssuer") or {}
    if issuer.get("userName"):
        return str(issuer["userName"])
    arn = str(identity.get("arn", ""))
    # arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION or arn:aws:iam::ACCOUNT:role/ROLE
    parts = arn.split(":", 5)[-1].split("/")
    return parts[1] if len(parts) > 1 else ""


def _status(error: str | None) -> int | None:
    if not error:
        return None
    if error in DENIED_ERRORS or error.endswith("AccessDenied"):
        return 403
    if error in CREDENTIAL_ERRORS:
        return 401
    return 400


def record_from_cloudtrail(event: Mapping[str, Any], ref: str) -> Record:
    """Map one CloudTrail record onto an audit record (see the module docs for the fields)."""
    identity = event.get("userIdentity") or {}
    role = TENANT_ROLE.search(_role_name(identity))
    parameters = event.get("requestParameters") or {}
    bucket, key = parameters.get("bucketName"), parameters.get("key")
    target = TENANT_KEY.match(str(key or ""))
    error = event.get("errorCode")
    data: dict[str, Any] = {
        "time": str(event.get("eventTime", "")).replace("Z", "+00:00"),
        "event": "reject" if error else str(event.get("eventName", "")),
        "action": event.get("eventName"),
        "actor": identity.get("arn") or identity.get("principalId"),
        "client": event.get("sourceIPAddress"),
        "path": f"s3://{bucket}/{key}" if bucket and key else event.get("eventSource"),
        "namespace": role.group(1) if role else None,
        "source": "cloudtrail",
        "event_id": event.get("eventID"),
    }
    if error:
        data.update(http_status=_status(error), reason=f"{error}: {event.get('errorMessage', '')}")
    if target:
        data["target_namespace"] = target.group(1)
    return Record(ref, _epoch(data["time"]), data)


def _log_files(paths: Iterable[Path]) -> list[Path]:
    files = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.name.endswith((".json", ".json.gz")))
        else:
            files.append(path)
    return files


def read_cloudtrail(paths: Iterable[Path]) -> list[Record]:
    """Return the records of CloudTrail log files (``.json`` or ``.json.gz``), oldest first.

    Folders are searched recursively, as the trail bucket nests files by account, region
    and date. A file that is not a CloudTrail log (no ``Records`` list) is skipped with a
    warning.
    """
    records = []
    for path in _log_files(paths):
        opener = gzip.open if path.name.endswith(".gz") else open
        try:
            with opener(path, "rt", encoding="utf-8") as handle:
                document = json.load(handle)
        except (OSError, ValueError) as exc:
            logger.warning("CloudTrail file %s is unreadable (%s); skipped", path, exc)
            continue
        events = document.get("Records") if isinstance(document, dict) else None
        if not isinstance(events, list):
            logger.warning("CloudTrail file %s has no Records list; skipped", path)
            continue
        for index, event in enumerate(events):
            if isinstance(event, dict):
                records.append(record_from_cloudtrail(event, f"{path}#{index}"))
    records.sort(key=lambda record: record.at)
    return records

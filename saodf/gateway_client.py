"""Invoke actions through the gateway's OpenWhisk REST path with the namespace's API key."""

from __future__ import annotations

from typing import Any

import requests

from saodf.config import Settings
from saodf.errors import ServiceError


def invoke(settings: Settings, action: str, params: dict[str, Any], timeout: float = 30.0) -> dict:
    """Call ``action`` blocking and return its result; raise ServiceError on HTTP errors."""
    from saodf.secrets import gateway_keys

    namespace = settings.gateway_namespace
    key = gateway_keys(settings)[namespace]
    user, _, password = key.partition(":")
    url = f"{settings.gateway_url}/api/v1/namespaces/{namespace}/actions/{action}"
    try:
        response = requests.post(
            url,
            params={"blocking": "true", "result": "true"},
            json=params,
            auth=(user, password),
            timeout=timeout,
        )
    except requests.RequestException as exc:
        raise ServiceError(
            f"gateway at {settings.gateway_url} is unreachable: {exc}; run `saodf stack up`"
        ) from exc
    if response.status_code >= 400:
        raise ServiceError(
            f"action {action} failed with HTTP {response.status_code}: {response.text[:300]}"
        )
    return response.json()

"""Anomaly detectors evaluated beside the platform's ``detect_anomaly`` action."""

from __future__ import annotations

from typing import Any

from saodf.errors import ConfigError

DETECTORS: dict[str, Any] = {}


def build(name: str, params: dict[str, float] | None):
    """Return the detector function ``name`` with ``params`` applied, and its parameters."""
    if name not in DETECTORS:
        raise ConfigError(
            f"detector {name!r} is unknown; use 'platform' or one of {sorted(DETECTORS)}"
        )
    return DETECTORS[name](params or {})

"""Logging set-up for SAODF processes: one format, level from ``SAODF_LOG_LEVEL``."""

from __future__ import annotations

import logging
import os

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [pid %(process)d] %(message)s"


def configure_logging(level: str | None = None) -> None:
    """Configure the root logger once; later calls only change the level."""
    level_name = (level or os.environ.get("SAODF_LOG_LEVEL", "INFO")).upper()
    root = logging.getLogger()
    if not any(getattr(h, "_saodf", False) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler._saodf = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level_name)

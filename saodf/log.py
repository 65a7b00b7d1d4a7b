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


class _DropMessage(logging.Filter):
    def __init__(self, fragment: str):
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


def silence_sagemaker_mlflow_header_warning() -> None:
    """Drop MLflow's warning about the sagemaker-mlflow header plugin on non-SageMaker servers.

    sagemaker-mlflow 0.5 (pulled in by sagemaker 3) registers a request-header provider
    that parses the tracking URI as a SageMaker ARN. On any other server it raises, and
    MLflow logs "Encountered unexpected error during resolving request headers: list
    index out of range" on every call; the request itself goes through unchanged.
    """
    logger = logging.getLogger("mlflow.tracking.request_header.registry")
    if not any(isinstance(f, _DropMessage) for f in logger.filters):
        logger.addFilter(_DropMessage("resolving request headers"))

"""Great Expectations gates: validate a batch against a JSON suite and quarantine failures.

Suites live in ``expectations/suites/{name}.json`` in the Great Expectations 1.x suite
format (``name``, ``expectations`` with ``type`` and ``kwargs``). ``great_expectations``
is imported inside the functions because it takes seconds to import, and Airflow parses
the DAG files that import this module.

A failed batch is kept under ``{quarantine_url}/{suite_name}/{batch_id}/`` as
``batch.parquet`` with ``reasons.json``.
"""

from __future__ import annotations

import io
import json
import logging
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from etl import storage
from saodf.errors import ConfigError, ValidationFailedError

logger = logging.getLogger(__name__)

SUITES_DIR = Path(__file__).resolve().parent / "suites"
BATCH_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]{0,199}$")
MAX_EXAMPLES = 5
RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": MAX_EXAMPLES}


@dataclass
class Failure:
    """One failed expectation with what it observed."""

    expectation_type: str
    column: str | None
    kwargs: dict[str, Any]
    observed_value: Any = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    unexpected_examples: list[Any] = field(default_factory=list)
    exception: str | None = None

    def describe(self) -> str:
        """Return a one-line account such as ``expect_x(column): 2 unexpected, e.g. [None]``."""
        target = self.column or ",".join(self.kwargs.get("column_list", [])) or "table"
        parts = [f"{self.expectation_type}({target})"]
        if self.exception:
            parts.append(f"raised {self.exception}")
        if self.unexpected_count:
            parts.append(
                f"{self.unexpected_count} unexpected ({self.unexpected_percent or 0:.2f}%), "
                f"e.g. {self.unexpected_examples[:3]!r}"
            )
        elif self.observed_value is not None:
            parts.append(f"observed {self.observed_value!r}")
        return ": ".join([parts[0], ", ".join(parts[1:])]) if len(parts) > 1 else parts[0]


@dataclass
class GateResult:
    """The outcome of validating one batch against one suite."""

    suite_name: str
    batch_id: str
    success: bool
    statistics: dict[str, Any]
    failures: list[Failure]
    quarantine_url: str | None = None

    def reasons(self) -> list[str]:
        return [failure.describe() for failure in self.failures]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["reasons"] = self.reasons()
        return data


def available_suites() -> list[str]:
    return sorted(path.stem for path in SUITES_DIR.glob("*.json"))


def load_suite_definition(suite_name: str) -> dict[str, Any]:
    """Read the JSON definition of ``suite_name`` from the suites folder."""
    path = SUITES_DIR / f"{suite_name}.json"
    if not re.fullmatch(r"[a-z][a-z0-9_]*", suite_name) or not path.is_file():
        raise ConfigError(
            f"suite {suite_name!r} not found in {SUITES_DIR}; available suites: "
            f"{', '.join(available_suites())}"
        )
    try:
        definition = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"suite file {path} is not valid JSON: {exc}") from None
    if not isinstance(definition.get("expectations"), list):
        raise ConfigError(f"suite file {path} has no 'expectations' list")
    return definition


@lru_cache(maxsize=1)
def _context():
    """Return an ephemeral context with one pandas data-frame batch definition."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("saodf_frames")
    asset = source.add_dataframe_asset("frame")
    asset.add_batch_definition_whole_dataframe("whole_frame")
    return context


@lru_cache(maxsize=None)
def _suite(suite_name: str):
    """Build the ExpectationSuite of ``suite_name`` once per process."""
    from great_expectations.core.expectation_suite import ExpectationSuite
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    definition = load_suite_definition(suite_name)
    suite = ExpectationSuite(name=suite_name, meta=definition.get("meta") or {})
    for position, entry in enumerate(definition["expectations"]):
        try:
            configuration = ExpectationConfiguration(
                type=entry["type"], kwargs=entry.get("kwargs", {}), meta=entry.get("meta")
            )
            suite.add_expectation_configuration(configuration)
        except Exception as exc:  # GX raises several unrelated types for a bad entry.
            raise ConfigError(
                f"expectation {position} of suite {suite_name!r} ({entry.get('type')!r}) is "
                f"invalid: {exc}"
            ) from None
    return _context().suites.add(suite)


def _plain(value: Any) -> Any:
    """Convert numpy, pandas and datetime values to JSON-friendly Python values."""
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (pd.Timestamp, datetime)):
        return value.isoformat()
    if value is pd.NaT:
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            return value.item()
        except (ValueError, AttributeError):
            return str(value)
    if isinstance(value, float) and value != value:
        return None
    return value


def _failure(result) -> Failure:
    configuration = result.expectation_config
    details = result.result or {}
    exception = None
    info = result.exception_info or {}
    if info.get("raised_exception"):
        exception = info.get("exception_message")
    return Failure(
        expectation_type=configuration.type,
        column=configuration.kwargs.get("column"),
        kwargs=_plain({k: v for k, v in configuration.kwargs.items() if k != "batch_id"}),
        observed_value=_plain(details.get("observed_value")),
        unexpected_count=details.get("unexpected_count"),
        unexpected_percent=details.get("unexpected_percent"),
        unexpected_examples=_plain(details.get("partial_unexpected_list") or []),
        exception=exception,
    )


def validate_frame(frame: pd.DataFrame, suite_name: str, batch_id: str) -> GateResult:
    """Validate ``frame`` against the suite ``suite_name`` and return the result.

    An expectation that raises (for example on a missing column) counts as failed.
    """
    _check_batch_id(batch_id)
    suite = _suite(suite_name)
    batch = (
        _context()
        .data_sources.get("saodf_frames")
        .get_asset("frame")
        .get_batch_definition("whole_frame")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    outcome = batch.validate(suite, result_format=RESULT_FORMAT)
    failures = [_failure(result) for result in outcome.results if not result.success]
    statistics = _plain(dict(outcome.statistics))
    statistics["rows"] = int(len(frame))
    result = GateResult(
        suite_name=suite_name,
        batch_id=batch_id,
        success=bool(outcome.success) and not failures,
        statistics=statistics,
        failures=failures,
    )
    logger.info(
        "Suite %s on batch %s: %s, %d of %d expectations failed, %d rows",
        suite_name,
        batch_id,
        "passed" if result.success else "failed",
        len(failures),
        statistics.get("evaluated_expectations", 0),
        len(frame),
    )
    return result


def _check_batch_id(batch_id: str) -> None:
    if not isinstance(batch_id, str) or not BATCH_ID_PATTERN.match(batch_id):
        raise ConfigError(
            f"batch_id {batch_id!r} is invalid; use 1-200 characters from A-Z a-z 0-9 . _ = + - "
            "starting with a letter or digit, because it names the quarantine folder"
        )


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    """Serialise ``frame`` to Parquet, turning columns of mixed types into strings."""
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        copy = frame.copy()
        for column in copy.columns:
            if copy[column].dtype == object:
                copy[column] = copy[column].map(lambda v: None if v is None else str(v))
        table = pa.Table.from_pandas(copy, preserve_index=False)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def quarantine(frame: pd.DataFrame, result: GateResult, quarantine_url: str) -> str:
    """Write the batch and its reasons under the quarantine URL and return the folder URL."""
    folder = storage.join(quarantine_url, result.suite_name, result.batch_id)
    storage.write_bytes(storage.join(folder, "batch.parquet"), _parquet_bytes(frame))
    reasons = {
        "suite_name": result.suite_name,
        "batch_id": result.batch_id,
        "quarantined_at": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
        "statistics": result.statistics,
        "reasons": result.reasons(),
        "failures": [asdict(failure) for failure in result.failures],
    }
    storage.write_bytes(
        storage.join(folder, "reasons.json"),
        orjson.dumps(reasons, option=orjson.OPT_INDENT_2, default=str) + b"\n",
    )
    return folder


def gate(frame: pd.DataFrame, suite_name: str, batch_id: str, quarantine_url: str) -> GateResult:
    """Validate ``frame`` and return the result when it passes.

    Raises:
        ValidationFailedError: The batch failed; it was written with ``reasons.json`` to
            ``{quarantine_url}/{suite_name}/{batch_id}/`` first, and the message lists
            each failed expectation.
    """
    result = validate_frame(frame, suite_name, batch_id)
    if result.success:
        return result
    result.quarantine_url = quarantine(frame, result, quarantine_url)
    logger.error(
        "Quarantined batch %s of suite %s at %s: %s",
        batch_id,
        suite_name,
        result.quarantine_url,
        "; ".join(result.reasons()),
    )
    raise ValidationFailedError(
        f"batch {batch_id!r} failed suite {suite_name!r} "
        f"({len(result.failures)} expectations): {'; '.join(result.reasons())}. "
        f"The batch and reasons.json are in {result.quarantine_url}; fix the source data "
        "and re-run the task"
    )

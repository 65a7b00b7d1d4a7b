"""Great Expectations gates: validate a batch against a JSON suite and quarantine failures.

Suites live in ``expectations/suites/{name}.json`` in the Great Expectations 1.x suite
format (``name``, ``expectations`` with ``type``, ``kwargs``, optional ``severity`` and
``meta``). ``great_expectations`` is imported inside the functions because it takes
seconds to import, and Airflow parses the DAG files that import this module.

A failed expectation of severity ``critical`` (the default) fails the batch; one of
severity ``warning`` is reported but lets the batch pass. A failed batch is kept under
``{quarantine_url}/{suite_name}/{batch_id}/`` as ``batch.parquet`` with ``reasons.json``,
and :func:`gate` writes the batch's Data Docs HTML to
``{docs_url}/{suite_name}/{batch_id}/index.html``.

Suites may use the parameter ``{"$PARAMETER": "max_timestamp"}``, which the gate sets to
the validation time plus :data:`MAX_CLOCK_SKEW`, and parameters given by the caller.
"""

from __future__ import annotations

import io
import json
import logging
import posixpath
import re
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import fsspec
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
# Device clocks may run ahead of the validating host by this much.
MAX_CLOCK_SKEW = timedelta(hours=1)
SEVERITIES = ("critical", "warning", "info")
DOCS_FOLDER = "data_docs"

ExtraFiles = dict[str, bytes] | Callable[[], dict[str, bytes]]


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
    severity: str = "critical"

    def describe(self) -> str:
        """Return a one-line account such as ``expect_x(column): 2 unexpected, e.g. [None]``."""
        pair = [self.kwargs[name] for name in ("column_A", "column_B") if name in self.kwargs]
        columns = self.kwargs.get("column_list") or pair
        target = self.column or ",".join(columns) or "table"
        if self.kwargs.get("row_condition"):
            target = f"{target} where {_condition_text(self.kwargs['row_condition'])}"
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


def _condition_text(condition: Any) -> str:
    """Render a row condition (a dict as stored in suites) as ``metric == 'humidity'``."""
    if isinstance(condition, dict) and {"column", "operator", "parameter"} <= set(condition):
        column = condition["column"]
        name = column.get("name") if isinstance(column, dict) else column
        return f"{name} {condition['operator']} {condition['parameter']!r}"
    return str(condition)


@dataclass
class GateResult:
    """The outcome of validating one batch against one suite.

    ``failures`` are the failed critical expectations, which fail the batch, and
    ``warnings`` the failed expectations of severity ``warning`` or ``info``.
    """

    suite_name: str
    batch_id: str
    success: bool
    statistics: dict[str, Any]
    failures: list[Failure]
    warnings: list[Failure] = field(default_factory=list)
    quarantine_url: str | None = None
    docs_url: str | None = None

    def reasons(self) -> list[str]:
        return [failure.describe() for failure in self.failures]

    def warning_reasons(self) -> list[str]:
        return [warning.describe() for warning in self.warnings]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["reasons"] = self.reasons()
        data["warning_reasons"] = self.warning_reasons()
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


def _new_context():
    """Return an ephemeral context with one pandas data-frame batch definition."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("saodf_frames")
    asset = source.add_dataframe_asset("frame")
    asset.add_batch_definition_whole_dataframe("whole_frame")
    return context


@lru_cache(maxsize=1)
def _context():
    """Return the process's shared context for validations without Data Docs."""
    return _new_context()


def _batch_definition(context):
    return (
        context.data_sources.get("saodf_frames")
        .get_asset("frame")
        .get_batch_definition("whole_frame")
    )


def _build_suite(suite_name: str):
    """Build the ExpectationSuite of ``suite_name`` from its JSON definition."""
    from great_expectations.core.expectation_suite import ExpectationSuite
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    definition = load_suite_definition(suite_name)
    meta = dict(definition.get("meta") or {})
    if isinstance(meta.get("notes"), str):
        # The Data Docs renderer of GX 1.24 reads suite notes only in this form.
        meta["notes"] = {"format": "markdown", "content": [meta["notes"]]}
    suite = ExpectationSuite(name=suite_name, meta=meta)
    for position, entry in enumerate(definition["expectations"]):
        entry_meta = dict(entry.get("meta") or {})
        notes = entry_meta.pop("notes", None)
        severity = entry.get("severity", "critical")
        if severity not in SEVERITIES:
            raise ConfigError(
                f"expectation {position} of suite {suite_name!r} has severity {severity!r}; "
                f"use one of: {', '.join(SEVERITIES)}"
            )
        try:
            configuration = ExpectationConfiguration(
                type=entry["type"],
                kwargs=entry.get("kwargs", {}),
                meta=entry_meta or None,
                notes=notes,
                severity=severity,
            )
            suite.add_expectation_configuration(configuration)
        except Exception as exc:  # GX raises several unrelated types for a bad entry.
            raise ConfigError(
                f"expectation {position} of suite {suite_name!r} ({entry.get('type')!r}) is "
                f"invalid: {exc}"
            ) from None
    return suite


@lru_cache(maxsize=None)
def _suite(suite_name: str):
    """Add the suite ``suite_name`` to the shared context once per process."""
    return _context().suites.add(_build_suite(suite_name))


def suite_parameters(
    extra: dict[str, Any] | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """Return the suite parameters of a validation at ``now`` (default: the clock)."""
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return {"max_timestamp": (moment + MAX_CLOCK_SKEW).isoformat(), **(extra or {})}


def _plain(value: Any) -> Any:
    """Convert numpy, pandas, datetime and pydantic values to JSON-friendly Python values."""
    if hasattr(value, "dict") and hasattr(value, "__fields__"):
        return _plain(value.dict())
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
    severity = getattr(configuration.severity, "value", configuration.severity)
    return Failure(
        expectation_type=configuration.type,
        column=configuration.kwargs.get("column"),
        kwargs=_plain({k: v for k, v in configuration.kwargs.items() if k != "batch_id"}),
        observed_value=_plain(details.get("observed_value")),
        unexpected_count=details.get("unexpected_count"),
        unexpected_percent=details.get("unexpected_percent"),
        unexpected_examples=_plain(details.get("partial_unexpected_list") or []),
        exception=exception,
        severity=str(severity or "critical"),
    )


def _run_suite(
    frame: pd.DataFrame,
    suite_name: str,
    batch_id: str,
    parameters: dict[str, Any],
    docs_dir: Path | None,
):
    """Validate ``frame``, in a fresh context that renders Data Docs when ``docs_dir`` is set.

    A fresh context keeps the Data Docs of one batch free of the other validations that
    this process ran.
    """
    if docs_dir is None:
        batch = _batch_definition(_context()).get_batch(batch_parameters={"dataframe": frame})
        return batch.validate(
            _suite(suite_name), result_format=RESULT_FORMAT, expectation_parameters=parameters
        )
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    context = _new_context()
    context.add_data_docs_site(
        site_name="saodf",
        site_config={
            "class_name": "SiteBuilder",
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs_dir),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(
            data=_batch_definition(context),
            suite=context.suites.add(_build_suite(suite_name)),
            name=f"{suite_name}.{batch_id}",
        )
    )
    outcome = definition.run(
        batch_parameters={"dataframe": frame},
        expectation_parameters=parameters,
        result_format=RESULT_FORMAT,
        run_id=RunIdentifier(run_name=batch_id),
    )
    context.build_data_docs(site_names=["saodf"])
    # GX logs rendering errors instead of raising them, which leaves out the page.
    if not any((docs_dir / "validations").rglob("*.html")):
        logger.warning(
            "Data Docs of batch %s in suite %s have no validation page; see the GX errors above",
            batch_id,
            suite_name,
        )
    return outcome


def validate_frame(
    frame: pd.DataFrame,
    suite_name: str,
    batch_id: str,
    parameters: dict[str, Any] | None = None,
    docs_dir: Path | None = None,
) -> GateResult:
    """Validate ``frame`` against the suite ``suite_name`` and return the result.

    An expectation that raises (for example on a missing column) counts as failed.

    Args:
        frame: The batch.
        suite_name: A suite of :func:`available_suites`.
        batch_id: Names the batch in results, quarantine and Data Docs.
        parameters: Suite parameters in addition to those of :func:`suite_parameters`.
        docs_dir: A local folder to render the batch's Data Docs into (None: no docs).
    """
    _check_batch_id(batch_id)
    outcome = _run_suite(frame, suite_name, batch_id, suite_parameters(parameters), docs_dir)
    failed = [_failure(result) for result in outcome.results if not result.success]
    failures = [failure for failure in failed if failure.severity == "critical"]
    warnings = [failure for failure in failed if failure.severity != "critical"]
    statistics = _plain(dict(outcome.statistics))
    statistics["rows"] = int(len(frame))
    result = GateResult(
        suite_name=suite_name,
        batch_id=batch_id,
        success=not failures,
        statistics=statistics,
        failures=failures,
        warnings=warnings,
    )
    logger.info(
        "Suite %s on batch %s: %s, %d of %d expectations failed (%d warnings), %d rows",
        suite_name,
        batch_id,
        "passed" if result.success else "failed",
        len(failures),
        statistics.get("evaluated_expectations", 0),
        len(warnings),
        len(frame),
    )
    for warning in warnings:
        logger.warning("Suite %s on batch %s: warning %s", suite_name, batch_id, warning.describe())
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


def quarantine(
    frame: pd.DataFrame,
    result: GateResult,
    quarantine_url: str,
    extra_files: ExtraFiles | None = None,
) -> str:
    """Write the batch, its reasons and ``extra_files`` under the quarantine URL.

    ``extra_files`` maps relative names to bytes, or is a function that returns such a
    mapping, so that large files are read only for a batch that failed.

    Returns:
        The URL of the batch's quarantine folder.
    """
    folder = storage.join(quarantine_url, result.suite_name, result.batch_id)
    storage.write_bytes(storage.join(folder, "batch.parquet"), _parquet_bytes(frame))
    files = extra_files() if callable(extra_files) else dict(extra_files or {})
    for name, data in files.items():
        storage.write_bytes(storage.join(folder, name), data)
    reasons = {
        "suite_name": result.suite_name,
        "batch_id": result.batch_id,
        "quarantined_at": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
        "statistics": result.statistics,
        "reasons": result.reasons(),
        "warnings": result.warning_reasons(),
        "failures": [asdict(failure) for failure in result.failures],
        "docs_url": result.docs_url,
        "files": ["batch.parquet", *sorted(files)],
    }
    storage.write_bytes(
        storage.join(folder, "reasons.json"),
        orjson.dumps(reasons, option=orjson.OPT_INDENT_2, default=str) + b"\n",
    )
    return folder


def default_docs_url(quarantine_url: str) -> str:
    """Return the Data Docs root beside the quarantine prefix: ``{parent}/data_docs``."""
    parent = posixpath.dirname(quarantine_url.rstrip("/"))
    return storage.join(parent, DOCS_FOLDER) if parent else DOCS_FOLDER


def _publish_docs(local_dir: Path, docs_url: str, suite_name: str, batch_id: str) -> str:
    """Copy rendered Data Docs to ``{docs_url}/{suite}/{batch}/`` and return the index URL."""
    target = storage.join(docs_url, suite_name, batch_id)
    storage.remove_tree(target)
    fs, path = fsspec.core.url_to_fs(target)
    for source in sorted(local_dir.rglob("*")):
        if source.is_file():
            relative = source.relative_to(local_dir).as_posix()
            fs.makedirs(posixpath.dirname(posixpath.join(path, relative)), exist_ok=True)
            fs.put_file(str(source), posixpath.join(path, relative))
    return storage.join(target, "index.html")


def gate(
    frame: pd.DataFrame,
    suite_name: str,
    batch_id: str,
    quarantine_url: str,
    docs_url: str | None = None,
    parameters: dict[str, Any] | None = None,
    build_docs: bool = True,
    extra_files: ExtraFiles | None = None,
) -> GateResult:
    """Validate ``frame``, render its Data Docs, and return the result when it passes.

    Args:
        frame: The batch.
        suite_name: A suite of :func:`available_suites`.
        batch_id: Names the batch; a re-run with the same id overwrites its outputs.
        quarantine_url: Root of the quarantine prefix.
        docs_url: Root of the Data Docs (None: :func:`default_docs_url`).
        parameters: Suite parameters in addition to those of :func:`suite_parameters`.
        build_docs: Render Data Docs HTML, which takes about a second.
        extra_files: Files to keep beside a quarantined batch (see :func:`quarantine`).

    Raises:
        ValidationFailedError: The batch failed; it was written with ``reasons.json`` to
            ``{quarantine_url}/{suite_name}/{batch_id}/`` first, and the message lists
            each failed expectation.
    """
    docs_link = None
    if build_docs:
        with tempfile.TemporaryDirectory(prefix="saodf-docs-") as docs_dir:
            result = validate_frame(frame, suite_name, batch_id, parameters, Path(docs_dir))
            docs_root = docs_url or default_docs_url(quarantine_url)
            docs_link = _publish_docs(Path(docs_dir), docs_root, suite_name, batch_id)
    else:
        result = validate_frame(frame, suite_name, batch_id, parameters)
    result.docs_url = docs_link
    if result.success:
        return result
    result.quarantine_url = quarantine(frame, result, quarantine_url, extra_files)
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

"""The preprocessing job: raw lake readings to DeepAR JSON Lines per frequency group.

One entry point runs three ways: as an AWS Glue Python job script (arguments through
``awsglue.utils.getResolvedOptions``), locally with ``python -m etl.glue_job --raw_url ...
--output_url ...``, and in-process through :func:`run`. Output layout under
``output_url``::

    manifest.json                       run key, config, groups with their series
    groups/{group}/train/data.jsonl     DeepAR JSON Lines, in the order of "series"
    groups/{group}/test/data.jsonl      the same series with the last prediction_length points
    prepared.parquet                    device_id, group, timestamp, target, is_outlier, is_imputed
    report.json                         per-device counts of the preprocessing

A re-run overwrites every file, and the manifest is written last, so its presence
means that the other files are complete.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import posixpath
import sys
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Sequence

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from etl import deepar, storage
from etl.transforms import (
    AGGREGATIONS,
    DEFAULT_MAX_STEPS,
    IMPUTATIONS,
    OUTLIER_METHODS,
    SeriesStats,
    prepare_series,
)
from saodf.errors import ConfigError, DatasetError
from saodf.telemetry import DEVICE_ID_PATTERN, METRIC_NAME_PATTERN

logger = logging.getLogger(__name__)

ENGINES = ("pandas", "spark")
REQUIRED_ARGS = ("raw_url", "output_url")
# Device clocks may run ahead of the job's clock by this much before a reading counts as
# being in the future.
MAX_CLOCK_SKEW = timedelta(hours=1)
PREPARED_COLUMNS = ["device_id", "group", "timestamp", "target", "is_outlier", "is_imputed"]
PREPARED_SCHEMA = pa.schema(
    [
        ("device_id", pa.string()),
        ("group", pa.string()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("target", pa.float64()),
        ("is_outlier", pa.bool_()),
        ("is_imputed", pa.bool_()),
    ]
)


@dataclass
class PrepareConfig:
    """Settings of one preprocessing run.

    ``start`` and ``end`` bound the readings (``end`` exclusive); naive datetimes are
    taken as UTC. Readings after ``not_after`` are dropped and counted per device as
    ``future``; :func:`run` sets ``not_after=None`` to ``end``, or to the job's start
    time plus :data:`MAX_CLOCK_SKEW` when there is no ``end``. ``devices=None`` prepares
    every device of the raw zone. ``spark_master=None`` takes the master from
    ``spark-submit`` or AWS Glue instead of starting a local one.
    ``cat_mapping_url=None`` keeps the category mapping at ``{output_url}/cat_mapping.json``,
    which is only right when one output folder serves every run.
    """

    raw_url: str
    output_url: str
    cat_mapping_url: str | None = None
    devices: list[str] | None = None
    start: datetime | None = None
    end: datetime | None = None
    freq: str = "auto"
    # With freq="auto", an inferred step finer than this becomes this step (SageMaker
    # DeepAR's finest time_freq is one minute).
    min_freq: str | None = None
    aggregation: str = "mean"
    imputation: str = "linear"
    max_gap: int | None = 12
    zscore_threshold: float = 3.0
    # Largest share of NaN a prepared series may keep (the deepar_dataset suite's limit).
    max_nan_share: float = 0.2
    outlier_method: str = "zscore"
    target_metric: str = "auto"
    prediction_length: int = 12
    context_length: int = 48
    engine: str = "pandas"
    spark_master: str | None = "local[2]"
    not_after: datetime | None = None
    max_steps: int | None = DEFAULT_MAX_STEPS
    run_key: str | None = None
    dynamic_features: list[str] = field(default_factory=lambda: list(deepar.DEFAULT_TIME_FEATURES))

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the first invalid field and its value."""
        for name in ("raw_url", "output_url"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{name} {value!r} is invalid; give a folder path or URL")
        if self.cat_mapping_url is not None and not str(self.cat_mapping_url).strip():
            raise ConfigError("cat_mapping_url is empty; give a JSON file URL or leave it unset")
        self._validate_devices()

        self.start = _as_utc("start", self.start)
        self.end = _as_utc("end", self.end)
        self.not_after = _as_utc("not_after", self.not_after)
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise ConfigError(
                f"start {self.start.isoformat()} is not before end {self.end.isoformat()}; "
                "end is exclusive, so give a later end"
            )

        if self.freq != "auto":
            _check_frequency(self.freq)
        if self.min_freq is not None:
            _check_frequency(self.min_freq)
        _check_choice("aggregation", self.aggregation, AGGREGATIONS)
        _check_choice("imputation", self.imputation, IMPUTATIONS)
        _check_choice("outlier_method", self.outlier_method, OUTLIER_METHODS)
        _check_choice("engine", self.engine, ENGINES)

        if self.max_gap is not None and (not _is_int(self.max_gap) or self.max_gap < 0):
            raise ConfigError(
                f"max_gap {self.max_gap!r} is invalid; give a number of steps >= 0, or None "
                "for no limit"
            )
        if self.max_steps is not None and (not _is_int(self.max_steps) or self.max_steps < 1):
            raise ConfigError(
                f"max_steps {self.max_steps!r} is invalid; give a number of steps >= 1, or None "
                "for no limit"
            )
        if self.spark_master is not None and not str(self.spark_master).strip():
            raise ConfigError(
                "spark_master is empty; give a master URL such as 'local[2]', or None to take "
                "it from spark-submit"
            )
        if (
            isinstance(self.zscore_threshold, bool)
            or not isinstance(self.zscore_threshold, (int, float))
            or not self.zscore_threshold > 0
        ):
            raise ConfigError(
                f"zscore_threshold {self.zscore_threshold!r} is invalid; give a number above 0"
            )
        if (
            isinstance(self.max_nan_share, bool)
            or not isinstance(self.max_nan_share, (int, float))
            or not 0.0 <= self.max_nan_share <= 1.0
        ):
            raise ConfigError(
                f"max_nan_share {self.max_nan_share!r} is invalid; give a share from 0 to 1"
            )
        if self.target_metric != "auto" and not METRIC_NAME_PATTERN.match(str(self.target_metric)):
            raise ConfigError(
                f"target_metric {self.target_metric!r} is invalid; give 'auto' or a metric name "
                "of lower-case letters, digits and _"
            )

        for name in ("prediction_length", "context_length"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ConfigError(f"{name} {value!r} is invalid; give a whole number >= 1")
        deepar.time_features(pd.DatetimeIndex([]), self.dynamic_features)

    def _validate_devices(self) -> None:
        if self.devices is None:
            return
        if isinstance(self.devices, str) or not isinstance(self.devices, (list, tuple)):
            raise ConfigError(f"devices {self.devices!r} is invalid; give a list of device ids")
        if not self.devices:
            raise ConfigError("devices is an empty list; give device ids, or None for all devices")
        for device_id in self.devices:
            if not isinstance(device_id, str) or not DEVICE_ID_PATTERN.match(device_id):
                raise ConfigError(
                    f"device id {device_id!r} in devices is invalid; use 1-128 characters "
                    "from A-Z a-z 0-9 . _ -"
                )
        self.devices = list(self.devices)

    @property
    def min_length(self) -> int:
        """Return the minimum number of steps a device needs after resampling."""
        return self.context_length + 2 * self.prediction_length

    def resolved_cat_mapping_url(self) -> str:
        return self.cat_mapping_url or storage.join(self.output_url, "cat_mapping.json")

    def resolved_run_key(self) -> str:
        return self.run_key or posixpath.basename(self.output_url.rstrip("/")) or "prepared"

    def resolved_not_after(self, now: datetime | None = None) -> datetime:
        """Return ``not_after``, else ``end``, else ``now`` (default: the clock) plus the skew."""
        if self.not_after is not None:
            return self.not_after
        if self.end is not None:
            return self.end
        return (now or datetime.now(timezone.utc)) + MAX_CLOCK_SKEW

    def to_json_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in _TIME_ARGS:
            value = getattr(self, name)
            data[name] = value.isoformat() if value else None
        return data

    @classmethod
    def from_args(cls, args: dict[str, str | None]) -> "PrepareConfig":
        """Build a config from ``--name value`` strings, as produced by :func:`glue_job_args`."""
        args = {name.removeprefix("--"): value for name, value in args.items()}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(args) - known)
        if unknown:
            raise ConfigError(
                f"unknown job argument(s) {', '.join(unknown)}; valid arguments: "
                f"{', '.join(sorted(known))}"
            )
        values: dict[str, Any] = {}
        for name, text in args.items():
            if text is None:
                continue
            values[name] = _parse_arg(name, text)
        return cls(**values)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} {value!r} is invalid; use one of: {', '.join(choices)}")


def _check_frequency(freq: Any) -> None:
    try:
        offset = pd.tseries.frequencies.to_offset(freq)
        pd.Timedelta(offset)
    except (ValueError, TypeError):
        raise ConfigError(
            f"freq {freq!r} is invalid; give 'auto' or a fixed pandas alias such as "
            "'1s', '5min' or '1h'"
        ) from None


def _as_utc(name: str, value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise ConfigError(f"{name} {value!r} is invalid; give a datetime or None")
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


_INT_ARGS = {"max_gap", "prediction_length", "context_length", "max_steps"}
_LIST_ARGS = {"devices", "dynamic_features"}
_TIME_ARGS = ("start", "end", "not_after")
_OPTIONAL_ARGS = {
    "devices",
    "start",
    "end",
    "not_after",
    "max_gap",
    "max_steps",
    "cat_mapping_url",
    "run_key",
    "spark_master",
    "min_freq",
}
_NONE_TEXT = "none"


def _parse_arg(name: str, text: str) -> Any:
    """Convert one job argument from its string form."""
    if name in _OPTIONAL_ARGS and text.strip().lower() in (_NONE_TEXT, "", "all"):
        return None
    if name in _LIST_ARGS:
        return [part.strip() for part in text.split(",") if part.strip()]
    if name in _INT_ARGS:
        parse, kind = int, "a whole number"
    elif name in ("zscore_threshold", "max_nan_share"):
        parse, kind = float, "a number"
    elif name in _TIME_ARGS:
        parse, kind = _parse_datetime, "an ISO 8601 datetime such as 2025-04-20T12:00:00Z"
    else:
        return text
    try:
        return parse(text)
    except ValueError:
        raise ConfigError(f"job argument --{name} {text!r} is invalid; give {kind}") from None


def _parse_datetime(text: str) -> datetime:
    return datetime.fromisoformat(text.strip().replace("Z", "+00:00"))


def glue_job_args(config: PrepareConfig) -> dict[str, str]:
    """Return the ``--name: value`` arguments of ``config`` for Airflow's GlueJobOperator.

    :meth:`PrepareConfig.from_args` reads them back; unset optional fields are ``"none"``.
    """
    arguments: dict[str, str] = {}
    for item in fields(config):
        value = getattr(config, item.name)
        if value is None:
            text = _NONE_TEXT
        elif isinstance(value, datetime):
            text = value.isoformat()
        elif isinstance(value, list):
            text = ",".join(value)
        else:
            text = str(value)
        arguments[f"--{item.name}"] = text
    return arguments


def glue_operator_kwargs(
    config: PrepareConfig,
    *,
    script_location: str,
    iam_role_arn: str,
    extra_py_files: Sequence[str] = (),
    additional_python_modules: Sequence[str] = ("orjson",),
    job_name: str = "saodf-prepare",
    glue_version: str = "5.0",
    worker_type: str = "G.1X",
    number_of_workers: int = 2,
) -> dict[str, Any]:
    """Return the keyword arguments of Airflow's ``GlueJobOperator`` for a run of ``config``.

    The job is a ``glueetl`` (Spark) job that runs this file as its script. Both engines
    run on it: ``pandas`` on the Glue driver only, and ``spark`` on the job's cluster,
    because ``spark_master`` is set to None. ``extra_py_files`` must give a zip or wheel
    with the ``etl`` and ``saodf`` packages (Glue puts it on ``sys.path``), and
    ``additional_python_modules`` the PyPI packages that Glue installs before the run.

    NOTE: checked against moto's Glue API and by running the script with awsglue's
    ``getResolvedOptions``; no run on AWS Glue itself has been made from this project.
    """
    if not isinstance(number_of_workers, int) or number_of_workers < 2:
        raise ConfigError(
            f"number_of_workers {number_of_workers!r} is invalid; Glue Spark jobs need at least 2"
        )
    if config.engine == "spark":
        config = replace(config, spark_master=None)
    default_arguments = {"--job-language": "python"}
    if extra_py_files:
        default_arguments["--extra-py-files"] = ",".join(extra_py_files)
    if additional_python_modules:
        default_arguments["--additional-python-modules"] = ",".join(additional_python_modules)
    return {
        "job_name": job_name,
        "job_desc": "SAODF preprocessing: raw telemetry to DeepAR JSON Lines",
        "script_location": script_location,
        "iam_role_arn": iam_role_arn,
        "script_args": glue_job_args(config),
        "create_job_kwargs": {
            "Command": {
                "Name": "glueetl",
                "ScriptLocation": script_location,
                "PythonVersion": "3",
            },
            "GlueVersion": glue_version,
            "WorkerType": worker_type,
            "NumberOfWorkers": number_of_workers,
            "DefaultArguments": default_arguments,
        },
    }


# ---------------------------------------------------------------------------
# Per-device work, shared by the pandas and the Spark engine


@dataclass
class DeviceResult:
    """The outcome of preparing one device: a regular series or the reason it was skipped."""

    device_id: str
    target_metric: str | None
    freq: str | None
    frame: pd.DataFrame | None
    stats: SeriesStats
    skip_reason: str | None = None


def choose_target_metric(metrics: Sequence[str], requested: str) -> str | None:
    """Pick the metric to forecast: ``value``, else ``temperature``, else the first by name."""
    available = sorted(set(metrics))
    if requested != "auto":
        return requested if requested in available else None
    for preferred in ("value", "temperature"):
        if preferred in available:
            return preferred
    return available[0] if available else None


ARRIVAL_ORDER = ("kafka_partition", "kafka_offset")


def prepare_device(device_id: str, rows: pd.DataFrame, config: PrepareConfig) -> DeviceResult:
    """Prepare one device's raw long-format rows (``timestamp``, ``metric``, ``value``).

    Rows with ``kafka_partition`` and ``kafka_offset`` are put in arrival order first, so
    that out-of-order counts and the choice among duplicate timestamps (the last to
    arrive) do not depend on how an engine ordered the rows.
    """
    if all(column in rows.columns for column in ARRIVAL_ORDER):
        rows = rows.sort_values(list(ARRIVAL_ORDER), kind="mergesort")
    metric = choose_target_metric(rows["metric"].dropna().unique().tolist(), config.target_metric)
    if metric is None:
        reason = (
            f"no readings of target metric {config.target_metric!r}; the device has "
            f"{sorted(rows['metric'].dropna().unique().tolist())}"
        )
        return DeviceResult(device_id, None, None, None, SeriesStats(rows_in=len(rows)), reason)
    readings = rows[rows["metric"] == metric]
    try:
        prepared = prepare_series(
            readings["timestamp"],
            readings["value"],
            freq=config.freq,
            min_freq=config.min_freq,
            aggregation=config.aggregation,
            imputation=config.imputation,
            max_gap=config.max_gap,
            zscore_threshold=config.zscore_threshold,
            outlier_method=config.outlier_method,
            not_after=pd.Timestamp(config.resolved_not_after()),
            max_steps=config.max_steps,
        )
    except DatasetError as exc:
        stats = SeriesStats(rows_in=len(readings))
        return DeviceResult(device_id, metric, None, None, stats, str(exc))
    length = len(prepared.frame)
    if length < config.min_length:
        reason = (
            f"{length} steps of {prepared.freq} after resampling; needs at least "
            f"context_length + 2 * prediction_length = {config.min_length}"
        )
        return DeviceResult(device_id, metric, prepared.freq, None, prepared.stats, reason)
    nan_share = float(prepared.frame["target"].isna().mean())
    if nan_share > config.max_nan_share:
        # The deepar_dataset gate rejects a whole batch for one such series, so it is left
        # out here with its reason; its raw readings stay in the lake.
        reason = (
            f"{nan_share:.0%} of the target is still missing after imputation (max_gap "
            f"{config.max_gap} steps); the limit is {config.max_nan_share:.0%} (max_nan_share)"
        )
        return DeviceResult(device_id, metric, prepared.freq, None, prepared.stats, reason)
    return DeviceResult(device_id, metric, prepared.freq, prepared.frame, prepared.stats)


def prepare_devices_pandas(raw: pd.DataFrame, config: PrepareConfig) -> list[DeviceResult]:
    results = []
    for device_id, rows in raw.groupby("device_id", sort=True):
        results.append(prepare_device(str(device_id), rows, config))
    return results


# ---------------------------------------------------------------------------
# Output


def _group_name(freq: str) -> str:
    return freq


def _series_records(
    result: DeviceResult, cat: int, config: PrepareConfig
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Return the train record, the test record and the manifest entry of one device."""
    frame = result.frame
    index = pd.DatetimeIndex(frame["timestamp"])
    record = deepar.make_record(
        index[0],
        frame["target"].tolist(),
        cat=[cat],
        dynamic_feat=deepar.time_features(index, config.dynamic_features),
    )
    train, test = deepar.split_train_test(record, config.prediction_length)
    entry = {
        "device_id": result.device_id,
        "cat": cat,
        "target_metric": result.target_metric,
        "start": record["start"],
        "train_length": len(train["target"]),
        "test_length": len(test["target"]),
        "end": index[-1].isoformat().replace("+00:00", "Z"),
    }
    return train, test, entry


def _write_json(url: str, payload: Any) -> None:
    storage.write_bytes(url, orjson.dumps(payload, option=orjson.OPT_INDENT_2) + b"\n")


def _write_prepared(url: str, frames: list[pd.DataFrame]) -> int:
    if frames:
        table = pd.concat(frames, ignore_index=True)[PREPARED_COLUMNS]
    else:
        table = PREPARED_SCHEMA.empty_table().to_pandas()
    arrow = pa.Table.from_pandas(table, schema=PREPARED_SCHEMA, preserve_index=False)
    buffer = io.BytesIO()
    pq.write_table(arrow, buffer)
    storage.write_bytes(url, buffer.getvalue())
    return len(table)


def _report_entry(result: DeviceResult) -> dict[str, Any]:
    return {
        "device_id": result.device_id,
        "target_metric": result.target_metric,
        "freq": result.freq,
        **result.stats.to_dict(),
        "skipped": result.skip_reason,
    }


def write_outputs(results: list[DeviceResult], config: PrepareConfig) -> dict[str, Any]:
    """Write the groups, prepared table, report and manifest of ``results``; return the summary."""
    prepared_results = [r for r in results if r.skip_reason is None]
    skipped = [
        {"device_id": r.device_id, "reason": r.skip_reason} for r in results if r.skip_reason
    ]
    categories = (
        deepar.assign_categories(
            config.resolved_cat_mapping_url(), [r.device_id for r in prepared_results]
        )
        if prepared_results
        else {}
    )

    storage.remove_tree(storage.join(config.output_url, "groups"))
    groups = []
    prepared_frames = []
    for freq in sorted({r.freq for r in prepared_results}, key=lambda f: pd.Timedelta(f)):
        group = _group_name(freq)
        members = sorted((r for r in prepared_results if r.freq == freq), key=lambda r: r.device_id)
        train_records, test_records, entries = [], [], []
        for result in members:
            train, test, entry = _series_records(result, categories[result.device_id], config)
            train_records.append(train)
            test_records.append(test)
            entries.append(entry)
            prepared_frames.append(result.frame.assign(device_id=result.device_id, group=group))
        train_path = f"groups/{group}/train/data.jsonl"
        test_path = f"groups/{group}/test/data.jsonl"
        deepar.write_jsonl(train_records, storage.join(config.output_url, train_path))
        deepar.write_jsonl(test_records, storage.join(config.output_url, test_path))
        groups.append(
            {
                "group": group,
                "freq": freq,
                "prediction_length": config.prediction_length,
                "context_length": config.context_length,
                "train": train_path,
                "test": test_path,
                "dynamic_feat_names": list(config.dynamic_features),
                "series": entries,
            }
        )

    rows = _write_prepared(storage.join(config.output_url, "prepared.parquet"), prepared_frames)
    run_key = config.resolved_run_key()
    _write_json(
        storage.join(config.output_url, "report.json"),
        {"run_key": run_key, "devices": [_report_entry(r) for r in results]},
    )
    manifest = {
        "run_key": run_key,
        "created_at": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
        "config": config.to_json_dict(),
        "groups": groups,
        "skipped_devices": skipped,
    }
    _write_json(storage.join(config.output_url, "manifest.json"), manifest)
    return {
        "run_key": run_key,
        "output_url": config.output_url,
        "devices": len(prepared_results),
        "skipped_devices": skipped,
        "groups": {g["group"]: len(g["series"]) for g in groups},
        "rows": rows,
    }


# ---------------------------------------------------------------------------
# Entry points


def _read_raw(config: PrepareConfig) -> pd.DataFrame:
    from saodf import lake

    return lake.read_raw(config.raw_url, config.devices, config.start, config.end)


def run(config: PrepareConfig) -> dict[str, Any]:
    """Prepare the raw readings selected by ``config`` and write the output layout.

    Returns:
        A JSON-serialisable summary: run key, output URL, device count, skipped devices,
        series per group and rows of ``prepared.parquet``.

    Raises:
        DatasetError: No device had enough readings; the report and manifest are written
            first, so they show each device's reason.
    """
    config.validate()
    # Fixed once, so that every device and every Spark worker uses the same bound.
    config = replace(config, not_after=config.resolved_not_after())
    raw = _read_raw(config)
    logger.info(
        "Preparing %d raw rows of %d devices from %s into %s (engine %s)",
        len(raw),
        raw["device_id"].nunique(),
        config.raw_url,
        config.output_url,
        config.engine,
    )
    if config.engine == "spark":
        from etl.spark_engine import prepare_devices_spark

        results = prepare_devices_spark(raw, config, master=config.spark_master)
    else:
        results = prepare_devices_pandas(raw, config)

    present = {r.device_id for r in results}
    for device_id in config.devices or []:
        if device_id not in present:
            results.append(
                DeviceResult(
                    device_id, None, None, None, SeriesStats(), "no raw readings in the interval"
                )
            )
    results.sort(key=lambda r: r.device_id)
    for result in results:
        if result.skip_reason:
            logger.warning("Skipped device %s: %s", result.device_id, result.skip_reason)

    summary = write_outputs(results, config)
    logger.info(
        "Prepared run %s: %d devices in groups %s, %d skipped",
        summary["run_key"],
        summary["devices"],
        summary["groups"],
        len(summary["skipped_devices"]),
    )
    if summary["devices"] == 0:
        reasons = "; ".join(f"{s['device_id']}: {s['reason']}" for s in summary["skipped_devices"])
        raise DatasetError(
            f"no device of run {summary['run_key']} could be prepared ({reasons or 'no raw rows'}); "
            "replay more data, widen start/end or lower context_length/prediction_length"
        )
    return summary


def _argument_names(argv: Sequence[str]) -> set[str]:
    """Return the names of the ``--name value`` and ``--name=value`` options in ``argv``."""
    return {token[2:].split("=", 1)[0] for token in argv if token.startswith("--")}


def _parse_cli(argv: list[str]) -> dict[str, str | None]:
    """Parse ``--name value`` arguments with awsglue when it is installed, else argparse.

    On AWS Glue, ``getResolvedOptions`` also accepts the arguments that Glue and Airflow's
    GlueJobOperator add (``--JOB_NAME``, ``--TempDir``, ``--job-bookmark-option``,
    ``--airflow_task_uuid``); they are not passed on to :class:`PrepareConfig`.
    """
    names = [item.name for item in fields(PrepareConfig)]
    try:
        from awsglue.utils import GlueArgumentError, getResolvedOptions
    except ImportError:
        getResolvedOptions = None
    if getResolvedOptions is not None:
        given = _argument_names(argv)
        present = [name for name in names if name in given and name not in REQUIRED_ARGS]
        try:
            resolved = getResolvedOptions(["etl.glue_job", *argv], [*REQUIRED_ARGS, *present])
        except GlueArgumentError as exc:
            raise ConfigError(
                f"invalid job arguments ({exc}); give at least --raw_url and --output_url"
            ) from None
        return {name: resolved[name] for name in [*REQUIRED_ARGS, *present]}
    parser = argparse.ArgumentParser(
        prog="python -m etl.glue_job", description="Prepare raw telemetry for DeepAR."
    )
    for name in names:
        parser.add_argument(f"--{name}", required=name in REQUIRED_ARGS)
    parsed = vars(parser.parse_args(argv))
    return {name: value for name, value in parsed.items() if value is not None}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the job from command-line arguments and print its summary as JSON."""
    from saodf.log import configure_logging

    configure_logging()
    argv = list(sys.argv[1:] if argv is None else argv)
    config = PrepareConfig.from_args(_parse_cli(argv))
    summary = run(config)
    print(json.dumps(summary, indent=2))  # noqa: T201 (command-line output)
    return summary


if __name__ == "__main__":
    main()

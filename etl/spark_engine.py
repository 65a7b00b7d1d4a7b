"""The Spark engine of the preprocessing job: per-device work through ``applyInPandas``.

Each device's rows go to :func:`etl.glue_job.prepare_device`, the same function that
the pandas engine calls, and come back as one flat frame per device. The driver rebuilds
the :class:`~etl.glue_job.DeviceResult` objects, so the output files do not depend on
the engine.
"""

from __future__ import annotations

import json
import logging
import os
import sys

import pandas as pd

from etl.glue_job import DeviceResult, PrepareConfig, prepare_device
from etl.transforms import SeriesStats

logger = logging.getLogger(__name__)

RESULT_SCHEMA = (
    "device_id string, timestamp timestamp, target double, is_outlier boolean, "
    "is_imputed boolean, freq string, target_metric string, skip_reason string, stats string"
)
RAW_COLUMNS = ["device_id", "timestamp", "metric", "value", "kafka_partition", "kafka_offset"]
RAW_SCHEMA = (
    "device_id string, timestamp timestamp, metric string, value double, "
    "kafka_partition int, kafka_offset long"
)


def _session(master: str | None = "local[2]"):
    """Start or reuse a Spark session in UTC with Arrow transfers.

    ``master=None`` leaves the master to ``spark-submit`` or AWS Glue. A local master
    binds the driver to 127.0.0.1.
    """
    # Workers must run the interpreter that has pandas and this project installed.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.appName("saodf-prepare")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
    )
    if master is not None:
        builder = (
            builder.master(master)
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
        )
    return builder.getOrCreate()


def _result_to_frame(result: DeviceResult) -> pd.DataFrame:
    """Flatten a result to rows of RESULT_SCHEMA; a skipped device is one row without timestamp."""
    stats = json.dumps(result.stats.to_dict())
    if result.frame is None:
        frame = pd.DataFrame(
            {
                "timestamp": pd.Series([pd.NaT], dtype="datetime64[ns]"),
                "target": [float("nan")],
                "is_outlier": [False],
                "is_imputed": [False],
            }
        )
    else:
        frame = result.frame.copy()
        # Spark reads naive timestamps in the session zone, which is UTC.
        frame["timestamp"] = frame["timestamp"].dt.tz_convert("UTC").dt.tz_localize(None)
    frame["device_id"] = result.device_id
    frame["freq"] = result.freq
    frame["target_metric"] = result.target_metric
    frame["skip_reason"] = result.skip_reason
    frame["stats"] = stats
    return frame[
        [
            "device_id",
            "timestamp",
            "target",
            "is_outlier",
            "is_imputed",
            "freq",
            "target_metric",
            "skip_reason",
            "stats",
        ]
    ]


def _frame_to_result(rows: pd.DataFrame) -> DeviceResult:
    first = rows.iloc[0]
    stats = SeriesStats(**json.loads(first["stats"]))
    skip_reason = first["skip_reason"] if isinstance(first["skip_reason"], str) else None
    frame = None
    if skip_reason is None:
        ordered = rows.sort_values("timestamp")
        frame = pd.DataFrame(
            {
                "timestamp": pd.DatetimeIndex(ordered["timestamp"]).tz_localize("UTC"),
                "target": ordered["target"].astype("float64").to_numpy(),
                "is_outlier": ordered["is_outlier"].astype(bool).to_numpy(),
                "is_imputed": ordered["is_imputed"].astype(bool).to_numpy(),
            }
        )
    return DeviceResult(
        device_id=str(first["device_id"]),
        target_metric=first["target_metric"] if isinstance(first["target_metric"], str) else None,
        freq=first["freq"] if isinstance(first["freq"], str) else None,
        frame=frame,
        stats=stats,
        skip_reason=skip_reason,
    )


def prepare_devices_spark(
    raw: pd.DataFrame, config: PrepareConfig, master: str | None = "local[2]"
) -> list[DeviceResult]:
    """Prepare every device of ``raw`` on Spark and return the results sorted by device id."""
    if raw.empty:
        return []
    from pyspark.sql import SparkSession

    started_here = SparkSession.getActiveSession() is None
    spark = _session(master)
    try:
        return _prepare_on(spark, raw, config, master)
    finally:
        # A session this call started is stopped, so its JVM (about 1.7 GB) does not linger.
        if started_here:
            spark.stop()


def _prepare_on(
    spark, raw: pd.DataFrame, config: PrepareConfig, master: str | None
) -> list[DeviceResult]:
    source = raw.reindex(columns=RAW_COLUMNS).copy()
    source["timestamp"] = source["timestamp"].dt.tz_convert("UTC").dt.tz_localize(None)
    # Frames from outside the raw zone may lack offsets; -1 keeps Spark's row order.
    source["kafka_partition"] = source["kafka_partition"].fillna(-1).astype("int32")
    source["kafka_offset"] = source["kafka_offset"].fillna(-1).astype("int64")
    frame = spark.createDataFrame(source, schema=RAW_SCHEMA)

    def apply(rows: pd.DataFrame) -> pd.DataFrame:
        rows = rows.assign(timestamp=pd.to_datetime(rows["timestamp"]).dt.tz_localize("UTC"))
        device_id = str(rows["device_id"].iloc[0])
        return _result_to_frame(prepare_device(device_id, rows, config))

    logger.info(
        "Preparing %d devices on Spark %s", raw["device_id"].nunique(), master or "cluster master"
    )
    collected = frame.groupBy("device_id").applyInPandas(apply, schema=RESULT_SCHEMA).toPandas()
    results = [_frame_to_result(rows) for _, rows in collected.groupby("device_id", sort=True)]
    return sorted(results, key=lambda result: result.device_id)

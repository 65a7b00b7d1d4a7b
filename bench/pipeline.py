"""Benchmark ``pipeline``: window event to populated forecast cache, per stage, on the shared data.

The readings of SKAB and NAB files are written to the raw zone the way the lake writer
writes them (one Parquet file per device, hour and offset range), and a window event
for them is built. From that event on, the ``telemetry_pipeline`` DAG's task functions
(``saodf.pipeline``) run in-process, in DAG order, against a real redis-server and
``mlflow server`` started on free 127.0.0.1 ports. Airflow scheduling, the Kafka leg and
the AssetWatcher delay are not part of the figures.

The reference is a plain ``lake.read_raw`` of the same readings, measured in the same run.
"""

from __future__ import annotations

import logging
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from saodf import bench as harness
from saodf.config import Settings

logger = logging.getLogger(__name__)

QUICK_INPUT = {"skab": ["valve1/0.csv", "valve1/1.csv"], "nab": []}
FULL_INPUT = {
    "skab": ["valve1/*.csv", "anomaly-free/*.csv"],
    "nab": ["realKnownCause/machine_temperature_system_failure.csv", "realKnownCause/nyc_taxi.csv"],
}
QUICK_TRAINING = {"epochs": 1, "num_batches_per_epoch": 5}
FULL_TRAINING = {"epochs": 3, "num_batches_per_epoch": 20}
STAGES = (
    "validate_raw",
    "preprocess",
    "validate_prepared",
    "train",
    "batch_transform",
    "populate_cache",
)


def _input_files(data_dir: Path, selection: dict[str, list[str]]) -> list[tuple[str, Path]]:
    files = []
    for dataset, patterns in selection.items():
        for pattern in patterns:
            files += [(dataset, p) for p in sorted((data_dir / dataset / "data").glob(pattern))]
    return files


def write_raw_zone(settings: Settings, files: list[tuple[str, Path]]) -> dict[str, Any]:
    """Write the files' readings to the raw zone as the lake writer does; return a window event."""
    from etl.readers import DeviceSeries, read_nab_series, read_skab_file, to_messages
    from saodf.lake import raw_file_name, raw_partition_url, write_parquet_atomic
    from saodf.telemetry import parse_timestamp
    from streaming.lake_writer import Reading, group_readings, readings_table

    readings: list[Reading] = []
    devices = []
    for dataset, path in files:
        if dataset == "skab":
            frame, _ = read_skab_file(path)
            frame = frame.drop(columns=["anomaly", "changepoint"])
        else:
            frame, _ = read_nab_series(path)
        device_id = f"bench-{dataset}-{path.parent.name}-{path.stem}".replace("_", "-")
        devices.append(device_id)
        for message in to_messages(DeviceSeries(device_id, frame, None, str(path))):
            moment = parse_timestamp(message["timestamp"])
            readings.append(Reading(0, len(readings), message, moment))
    topic = settings.topic_raw
    for (device_id, hour_start, partition), items in group_readings(readings).items():
        url = "/".join(
            [
                raw_partition_url(settings.lake_url, device_id, hour_start),
                raw_file_name(topic, partition, items[0].offset, items[-1].offset),
            ]
        )
        write_parquet_atomic(readings_table(topic, items), url)
    end = max(r.timestamp for r in readings) + timedelta(seconds=1)
    return {
        "window_id": f"bench-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}",
        "devices": sorted(devices),
        "end": end.astimezone(timezone.utc).isoformat().replace("+00:00", "Z"),
        "message_count": len(readings),
    }


def run_stages(settings: Settings, event: dict[str, Any], training: dict) -> dict[str, Any]:
    """Run the DAG's tasks from a window event to the populated cache and time each stage."""
    from saodf import pipeline

    seconds: dict[str, float] = {}

    def timed(name, function, *args, **kwargs):
        started = time.perf_counter()
        result = function(*args, **kwargs)
        seconds[name] = time.perf_counter() - started
        return result

    total_started = time.perf_counter()
    scope = pipeline.scope_from_window_event(event)
    raw = timed("validate_raw", pipeline.validate_raw, scope, settings)
    prepared = timed("preprocess", pipeline.preprocess, scope, settings)
    timed("validate_prepared", pipeline.validate_prepared, scope, settings)
    trained = timed("train", pipeline.train, scope, settings, config_overrides=training)
    timed("batch_transform", pipeline.batch_transform, scope, trained, settings)
    cache = timed("populate_cache", pipeline.populate_cache, scope, settings)
    window_to_cache = time.perf_counter() - total_started
    timed("teardown", pipeline.teardown, scope, scope["run_key"], settings)
    timed("report_cost", pipeline.report_cost, scope, dict(seconds), settings)
    return {
        "seconds": seconds,
        "window_to_cache_seconds": window_to_cache,
        "raw_rows": raw["rows"],
        "devices": raw["devices"],
        "gates_passed": bool(raw["success"]),
        "prepared_summary": prepared["summary"],
        "groups": {
            group: {"champion": info["champion_kind"], "metrics": info["metrics"]}
            for group, info in trained["groups"].items()
        },
        "cache": {k: v for k, v in cache["stats"].items() if k != "devices"},
    }


def run(settings: Settings, quick: bool) -> dict:
    """Measure window event to populated cache on SKAB (and NAB unless ``quick``)."""
    from saodf import lake

    selection = QUICK_INPUT if quick else FULL_INPUT
    training = QUICK_TRAINING if quick else FULL_TRAINING
    files = _input_files(settings.data_dir, selection)
    if not files:
        raise FileNotFoundError(f"no input files under {settings.data_dir}; set SAODF_DATA_DIR")
    with tempfile.TemporaryDirectory(prefix="saodf-bench-pipeline-") as home:
        with harness.local_services(["redis", "mlflow"], settings, Path(home)) as stack:
            started = time.perf_counter()
            event = write_raw_zone(stack, files)
            lake_write = time.perf_counter() - started
            started = time.perf_counter()
            reference_rows = len(lake.read_raw(stack.lake_url, event["devices"]))
            raw_read = time.perf_counter() - started
            outcome = run_stages(stack, event, training)

    figures = {f"{name}_seconds": round(value, 3) for name, value in outcome["seconds"].items()}
    figures.update(
        window_to_cache_seconds=round(outcome["window_to_cache_seconds"], 3),
        lake_write_seconds=round(lake_write, 3),
        raw_rows=int(outcome["raw_rows"]),
        devices=int(outcome["devices"]),
        messages=int(event["message_count"]),
    )
    for group, info in outcome["groups"].items():
        for kind, metrics in info["metrics"].items():
            figures[f"{group}_{kind}_mean_wql"] = metrics.get("mean_wql")
    champions = ", ".join(f"{g} {i['champion']}" for g, i in outcome["groups"].items())
    notes = [
        f"inputs: {len(files)} files ({', '.join(f'{d}/{p.parent.name}/{p.name}' for d, p in files[:6])}"
        f"{', ...' if len(files) > 6 else ''}); DeepAR overrides {training}",
        "task functions of saodf.pipeline run in-process in DAG order against redis-server and "
        "mlflow server on free 127.0.0.1 ports; Airflow scheduling and the Kafka leg are excluded",
        f"champions: {champions}; cache stats {outcome['cache']}",
        f"reference: lake.read_raw of the same {reference_rows} raw rows",
        f"raw-zone gate passed: {outcome['gates_passed']}",
    ]
    window_to_cache = outcome["window_to_cache_seconds"]
    return {
        "figures": figures,
        "reference": {"raw_read_seconds": round(raw_read, 3)},
        "ratios": {
            "window_to_cache_over_raw_read": round(window_to_cache / max(raw_read, 1e-9), 1)
        },
        "goals": {},
        "notes": notes,
    }

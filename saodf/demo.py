"""``saodf demo``: the whole platform end to end on the shared NAB and SKAB telemetry."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from saodf.config import Settings
from saodf.errors import SaodfError, ServiceError

logger = logging.getLogger(__name__)

DAG_ID = "telemetry_pipeline"
SKAB_GROUPS = ["valve1", "anomaly-free"]
# One window for the whole replay: the demo then waits for exactly one Kafka-triggered run.
DEMO_WINDOW_MESSAGES = 1_000_000
DEMO_WINDOW_SECONDS = 45.0


@dataclass
class DemoReport:
    dag_run_id: str = ""
    dag_run_seconds: float = 0.0
    scope: dict[str, Any] = field(default_factory=dict)
    groups: dict[str, Any] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)
    forecasts: list[dict[str, Any]] = field(default_factory=list)
    anomalies: dict[str, Any] = field(default_factory=dict)
    replayed: dict[str, int] = field(default_factory=dict)
    cache_entries: int = 0
    # Devices that preprocessing skipped, with the reason from the prepared report.json.
    left_out: list[dict[str, str]] = field(default_factory=list)


def check_data_dir(settings: Settings, nab_group: str) -> None:
    """Raise DatasetError unless the SKAB and NAB folders that the demo replays exist.

    The demo checks this before it starts the stack, so a wrong data folder costs seconds.
    """
    from saodf.errors import DatasetError

    folders = [settings.data_dir / "skab" / "data" / group for group in SKAB_GROUPS]
    folders.append(settings.data_dir / "nab" / "data" / nab_group)
    missing = [str(folder) for folder in folders if not folder.is_dir()]
    if missing:
        raise DatasetError(
            f"data folder(s) {', '.join(missing)} not found under {settings.data_dir}; set "
            "SAODF_DATA_DIR to the folder that contains skab/ and nab/ "
            "(e.g. SAODF_DATA_DIR=/path/to/shared/data make demo)"
        )


def left_out_devices(settings: Settings, run_key: str) -> list[dict[str, str]]:
    """Return the devices that the run's preprocessing skipped, with their reasons."""
    import json

    import fsspec

    from saodf import pipeline

    url = pipeline.urls(settings, run_key)["prepared"] + "/report.json"
    try:
        with fsspec.open(url, "r") as handle:
            report = json.load(handle)
    except FileNotFoundError:
        logger.warning("run %s has no preprocessing report at %s", run_key, url)
        return []
    return [
        {"device_id": entry["device_id"], "reason": entry["skipped"]}
        for entry in report.get("devices", [])
        if entry.get("skipped")
    ]


def group_devices(settings: Settings, run_key: str) -> dict[str, list[str]]:
    """Read the devices of each frequency group from the run's prepared manifest."""
    import json

    import fsspec

    from saodf import pipeline

    url = pipeline.urls(settings, run_key)["prepared"] + "/manifest.json"
    with fsspec.open(url, "r") as handle:
        manifest = json.load(handle)
    return {
        group["group"]: [series["device_id"] for series in group["series"]]
        for group in manifest["groups"]
    }


def demo_settings(settings: Settings) -> Settings:
    """Use one large window unless the user set the window size explicitly."""
    changes = {}
    if not os.environ.get("SAODF_WINDOW_MESSAGES"):
        changes["window_messages"] = DEMO_WINDOW_MESSAGES
    if not os.environ.get("SAODF_WINDOW_SECONDS"):
        changes["window_seconds"] = DEMO_WINDOW_SECONDS
    return settings.with_overrides(**changes) if changes else settings


def _replay(settings: Settings, dataset: str, groups: list[str], echo) -> int:
    from streaming.replay import replay

    stats = replay(
        dataset, settings.data_dir, groups=groups, speed=0.0, settings=settings, progress=True
    )
    for line in stats.summary_lines():
        echo(f"    {line}")
    return int(stats.delivered)


def wait_for_triggered_run(client, known: set[str], timeout: float, echo) -> dict:
    """Wait for a new asset-triggered run of the pipeline to finish; raise if it fails."""
    deadline = time.monotonic() + timeout
    last_line = ""
    run = None
    while time.monotonic() < deadline:
        runs = [
            r
            for r in client.dag_runs(DAG_ID)
            if r["run_type"] == "asset_triggered" and r["dag_run_id"] not in known
        ]
        if runs:
            run = sorted(runs, key=lambda r: r.get("queued_at") or r.get("run_after") or "")[0]
            tasks = client.task_instances(DAG_ID, run["dag_run_id"])
            done = sum(1 for t in tasks if t["state"] in ("success", "skipped"))
            running = [
                t["task_id"] for t in tasks if t["state"] in ("running", "queued", "up_for_retry")
            ]
            line = f"    run {run['dag_run_id']}: {run['state']}, {done}/{len(tasks)} tasks done"
            if running:
                line += f", now {', '.join(running)}"
            if line != last_line:
                echo(line)
                last_line = line
            if run["state"] == "success":
                return run
            if run["state"] == "failed":
                failed = [
                    t["task_id"] for t in tasks if t["state"] in ("failed", "upstream_failed")
                ]
                raise SaodfError(
                    f"DAG run {run['dag_run_id']} failed (tasks {failed}); see the task logs in the "
                    f"Airflow UI or under {client.base}"
                )
        time.sleep(5)
    state = run["state"] if run else "not started"
    raise SaodfError(
        f"no Kafka-triggered run of {DAG_ID} succeeded within {timeout:.0f} s (last state: {state}); "
        "check `saodf stack status` and the logs under .saodf/logs"
    )


def xcom(client, run_id: str, task_id: str) -> Any:
    value = client.get(
        f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
    )
    return value.get("value")


def skab_labels(settings: Settings) -> dict[tuple[str, str], int]:
    """Map (device id, ISO timestamp) to the SKAB anomaly label of that reading."""
    from etl.readers import iter_dataset

    labels: dict[tuple[str, str], int] = {}
    for series, _report in iter_dataset("skab", settings.data_dir, SKAB_GROUPS):
        frame = series.labels
        if frame is None:
            continue
        for moment, label in zip(frame["timestamp"], frame["anomaly"], strict=True):
            labels[(series.device_id, moment.strftime("%Y-%m-%dT%H:%M:%SZ"))] = int(label)
    return labels


def score_anomalies(flagged: list[dict], labels: dict[tuple[str, str], int]) -> dict[str, Any]:
    """Precision and recall of flagged readings against the per-reading labels."""
    flagged_keys = set()
    for record in flagged:
        reading = record.get("message", record)
        key = (reading.get("device_id"), reading.get("timestamp"))
        if key in labels:
            flagged_keys.add(key)
    positives = {key for key, label in labels.items() if label == 1}
    true_positives = len(flagged_keys & positives)
    precision = true_positives / len(flagged_keys) if flagged_keys else 0.0
    recall = true_positives / len(positives) if positives else 0.0
    return {
        "labelled_readings": len(labels),
        "labelled_anomalies": len(positives),
        "flagged": len(flagged_keys),
        "true_positives": true_positives,
        "precision": precision,
        "recall": recall,
    }


def read_anomalies(
    settings: Settings, expected_readings: int, timeout: float = 180.0
) -> list[dict]:
    """Read telemetry.anomalies from the start until the consumer has caught up or time runs out."""
    import uuid

    import orjson
    from confluent_kafka import Consumer, KafkaError

    from streaming.kafka import consumer_config

    consumer = Consumer(
        consumer_config(
            settings, f"saodf-demo-{uuid.uuid4().hex[:8]}", **{"auto.offset.reset": "earliest"}
        )
    )
    consumer.subscribe([settings.topic_anomalies])
    records: list[dict] = []
    deadline = time.monotonic() + timeout
    idle_since = time.monotonic()
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None:
                # The consumer flags readings while the pipeline runs, so a quiet topic means done.
                if records and time.monotonic() - idle_since > 15:
                    break
                continue
            if message.error():
                if message.error().code() != KafkaError._PARTITION_EOF:
                    logger.warning("anomaly topic read error: %s", message.error())
                continue
            idle_since = time.monotonic()
            try:
                records.append(orjson.loads(message.value()))
            except orjson.JSONDecodeError:
                logger.warning("skipping undecodable record at offset %d", message.offset())
    finally:
        consumer.close()
    return records


def run_demo(
    settings: Settings, timeout: float = 1200.0, nab_group: str = "realKnownCause", echo=print
):
    from saodf.airflow_api import AirflowClient
    from saodf.stack import manager

    started = time.monotonic()
    settings = demo_settings(settings)
    check_data_dir(settings, nab_group)

    echo("[1/6] starting the local stack")
    manager.up(settings, echo=echo)
    try:
        return _run_steps(settings, AirflowClient(settings), nab_group, timeout, started, echo)
    except SaodfError:
        echo(
            "the demo stopped; the stack is still running (saodf stack status), stop it with: "
            ".venv/bin/saodf stack down"
        )
        raise


def _run_steps(settings: Settings, client, nab_group: str, timeout: float, started, echo):
    """Run demo steps 2 to 6 on the running stack."""
    report = DemoReport()
    client.wait_for_dag(DAG_ID)
    errors = client.import_errors()
    if errors:
        raise ServiceError(f"Airflow reports DAG import errors: {errors}")
    known = {r["dag_run_id"] for r in client.dag_runs(DAG_ID, limit=100)}

    echo("[2/6] replaying SKAB (valve1, anomaly-free) and NAB (%s) to telemetry.raw" % nab_group)
    report.replayed["skab"] = _replay(settings, "skab", SKAB_GROUPS, echo)
    report.replayed["nab"] = _replay(settings, "nab", [nab_group], echo)

    echo(
        f"[3/6] waiting for the Kafka-triggered run of {DAG_ID} (window after {settings.window_seconds:.0f} s)"
    )
    run = wait_for_triggered_run(client, known, timeout, echo)
    report.dag_run_id = run["dag_run_id"]
    report.dag_run_seconds = _duration(run)
    report.scope = xcom(client, run["dag_run_id"], "resolve_scope") or {}
    trained = xcom(client, run["dag_run_id"], "model.train") or {}
    report.groups = trained.get("groups", {})
    populated = xcom(client, run["dag_run_id"], "populate_cache") or {}
    report.cache_entries = int(populated.get("stats", {}).get("entries", 0))
    devices = group_devices(settings, report.scope["run_key"])
    report.left_out = left_out_devices(settings, report.scope["run_key"])
    for group, info in report.groups.items():
        info["devices"] = devices.get(group, [])

    echo("[4/6] calling the forecast action through the gateway")
    report.forecasts = call_forecasts(settings, report.groups, echo)

    echo("[5/6] scoring flagged anomalies against the SKAB labels")
    labels = skab_labels(settings)
    flagged = read_anomalies(settings, len(labels))
    report.anomalies = score_anomalies(flagged, labels)
    report.anomalies["flagged_all_devices"] = len(flagged)

    from actions.cache import ForecastCache
    from actions.redis_acl import READER

    report.cache = ForecastCache.from_settings(settings, role=READER).stats()
    echo("[6/6] summary")
    print_summary(settings, report, time.monotonic() - started, echo)
    return report


def call_forecasts(settings: Settings, groups: dict[str, Any], echo) -> list[dict]:
    """Invoke ``forecast`` for one device per group, then once on a cache miss.

    The miss is made by deleting one cached forecast, so the action loads the champion
    from the MLflow registry, forecasts from the stored context and caches the result.
    """
    from actions.cache import ForecastCache
    from actions.redis_acl import WRITER
    from saodf.gateway_client import invoke

    calls = []

    def call(device: str, group: str) -> dict:
        begin = time.perf_counter()
        result = invoke(settings, "forecast", {"device_id": device})
        elapsed_ms = (time.perf_counter() - begin) * 1000
        if "error" in result:
            raise SaodfError(f"forecast for {device} failed: {result['error']}")
        calls.append(
            {"device_id": device, "group": group, "cache": result.get("cache"), "ms": elapsed_ms}
        )
        echo(
            f"    {device}: {len(result.get('mean') or [])} steps from {result.get('forecast_start')}, "
            f"model {result.get('model_name')} v{result.get('model_version')}, "
            f"cache {result.get('cache')}, {elapsed_ms:.0f} ms"
        )
        return result

    firsts = []
    for group, info in sorted(groups.items()):
        devices = info.get("devices") or []
        if devices:
            firsts.append((devices[0], group))
            call(devices[0], group)
    if firsts:
        # Prefer a DeepAR champion for the miss, so the call runs a real DeepAR inference.
        deepar_groups = {g for g, info in groups.items() if info.get("champion_kind") == "deepar"}
        firsts.sort(key=lambda item: item[1] not in deepar_groups)
        device, group = firsts[0]
        cache = ForecastCache.from_settings(settings, role=WRITER)
        pointer = cache.pointer(device)
        if pointer is not None:
            cache.client.delete(pointer.forecast_key)
            echo(f"    deleted the cached forecast of {device}: the next call takes the miss path")
            call(device, group)
            call(device, group)
    return calls


def _duration(run: dict) -> float:
    from datetime import datetime

    start, end = run.get("start_date"), run.get("end_date")
    if not start or not end:
        return 0.0
    parse = lambda text: datetime.fromisoformat(text.replace("Z", "+00:00"))  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()


def print_summary(settings: Settings, report: DemoReport, total_seconds: float, echo) -> None:
    from saodf.stack import manager

    echo("")
    echo("SAODF demo summary")
    echo(f"  DAG run          {report.dag_run_id} ({report.dag_run_seconds:.0f} s)")
    echo(
        f"  window           {report.scope.get('window_id')} -> run key {report.scope.get('run_key')}"
    )
    echo(f"  devices          {len(report.scope.get('devices') or [])}; replayed {report.replayed}")
    for group, info in sorted(report.groups.items()):
        deepar = info.get("metrics", {}).get("deepar", {})
        baseline = info.get("metrics", {}).get("seasonal_naive", {})
        candidate = info.get("candidate_kind", info.get("champion_kind"))
        promoted = "promoted" if info.get("promoted", True) else "not promoted"
        echo(
            f"  group {group:<8} candidate {candidate} v{info.get('candidate_version', '?')} "
            f"(MLflow run {info.get('run_ids', {}).get(candidate)}), {promoted}: "
            f"{info.get('promotion_reason', '')}"
        )
        echo(
            f"                   champion now {info.get('model_name')} v{info.get('model_version')} "
            f"({info.get('champion_kind')})"
        )
        ets = info.get("metrics", {}).get("auto_ets", {})
        nan = float("nan")
        echo(
            f"                   mean wQL DeepAR {deepar.get('mean_wql', nan):.4f}, "
            f"seasonal naive {baseline.get('mean_wql', nan):.4f}, "
            f"AutoETS {ets.get('mean_wql', nan):.4f}; MASE {deepar.get('mase', nan):.3f}, "
            f"{baseline.get('mase', nan):.3f}, {ets.get('mase', nan):.3f}"
        )
    for skipped in report.left_out:
        echo(f"  left out         {skipped['device_id']}: {skipped['reason']}")
    cache = report.cache
    ratio = cache.get("hit_ratio")
    ratio_text = "n/a" if ratio is None else f"{ratio:.2f}"
    used_mib = (cache.get("used_memory") or 0) / 2**20
    echo(
        f"  forecast cache   {report.cache_entries} forecasts cached, hit ratio {ratio_text} "
        f"({cache.get('hits', 0)} hits, {cache.get('misses', 0)} misses, "
        f"{cache.get('evictions', 0)} evictions), {used_mib:.1f} MiB used"
    )
    a = report.anomalies
    echo(
        f"  anomalies        {a.get('flagged', 0)} SKAB readings flagged of {a.get('labelled_readings', 0)}; "
        f"precision {a.get('precision', 0):.2f}, recall {a.get('recall', 0):.2f} "
        f"against {a.get('labelled_anomalies', 0)} labelled anomalous readings"
    )
    echo(f"  total time       {total_seconds:.0f} s")
    echo("")
    links = manager.urls(settings)
    echo(
        f"  Airflow UI  {links['airflow']}  (user admin, password in {settings.home / 'secrets' / 'airflow_admin_password'})"
    )
    echo(f"  MLflow UI   {links['mlflow']}")
    echo(
        f"  Gateway     {links['gateway']}  (API keys in {settings.home / 'secrets' / 'gateway_keys.json'})"
    )
    echo("  Stop everything with: .venv/bin/saodf stack down")

"""Task logic of the ``telemetry_pipeline`` DAG, importable and testable without Airflow.

Every function takes and returns JSON-serialisable values (they travel as XCom) and
writes its outputs under paths derived from the run key, so a retry or a replayed
window overwrites its own outputs instead of adding new ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import fsspec

from saodf.config import Settings, get_settings
from saodf.errors import DatasetError, SaodfError
from saodf.telemetry import format_timestamp

logger = logging.getLogger(__name__)


class NoDataError(SaodfError):
    """The run's scope has no raw readings, so there is nothing to process."""


def run_key_for_window(window_id: str) -> str:
    return "window-" + hashlib.sha1(window_id.encode()).hexdigest()[:16]


def run_key_for_interval(start: datetime, end: datetime) -> str:
    return f"interval-{start:%Y%m%dT%H%M}-{end:%Y%m%dT%H%M}"


_iso = format_timestamp


def scope_from_window_event(event: dict[str, Any]) -> dict[str, Any]:
    """Build the run scope of a Kafka-triggered run from its window event."""
    return {
        "run_key": run_key_for_window(event["window_id"]),
        "source": "window",
        "window_id": event["window_id"],
        "window_ids": list(event.get("window_ids") or [event["window_id"]]),
        "devices": sorted(event["devices"]),
        # Train on each device's whole history up to the window end.
        "start": None,
        "end": event["end"],
        "message_count": event.get("message_count"),
    }


def scope_from_interval(
    start: datetime, end: datetime, history_hours: int | None = None
) -> dict[str, Any]:
    """Build the run scope of a scheduled or backfilled run from its data interval.

    The run covers the devices that sent readings in ``[start, end)``. The raw gate checks
    only that interval; preprocessing and training also read the ``history_hours`` before
    ``end``, because DeepAR needs more context than one interval holds. Nothing after
    ``end`` is read, so a backfilled run gives the same result whenever it runs.
    """
    history = history_hours if history_hours is not None else get_settings().history_hours
    return {
        "run_key": run_key_for_interval(start, end),
        "source": "schedule",
        "window_id": None,
        "window_ids": [],
        "devices": None,
        "interval_start": _iso(start),
        "start": _iso(min(start, end - timedelta(hours=history))),
        "end": _iso(end),
        "message_count": None,
    }


def urls(settings: Settings, run_key: str) -> dict[str, str]:
    return {
        "raw": settings.lake_url,
        "prepared": settings.lake_path("prepared", run_key),
        "forecasts": settings.lake_path("forecasts", run_key),
        "quarantine": settings.lake_path("quarantine"),
        "cat_mapping": settings.lake_path("meta", "cat_mapping.json"),
        "done_marker": settings.lake_path("runs", run_key, "done.json"),
    }


def workspace(settings: Settings, run_key: str) -> Path:
    """Return the run's batch workspace (model checkpoints, scratch files), created on demand."""
    path = settings.batch_dir / run_key
    path.mkdir(parents=True, exist_ok=True)
    return path


def _parse_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def with_tenant(scope: dict[str, Any], tenant: str | None) -> dict[str, Any]:
    """Return ``scope`` for a run of ``tenant`` (None: the default deployment).

    Every device of a tenant's run must be the tenant's (``<tenant>.<device>``).

    Raises:
        SaodfError: a device of the scope belongs to another tenant or to none.
    """
    if tenant is None:
        return scope
    from saodf.tenants import tenant_layout

    layout = tenant_layout(tenant)
    foreign = [d for d in scope.get("devices") or [] if not layout.owns_device(d)]
    if foreign:
        raise SaodfError(
            f"run {scope['run_key']} of tenant {tenant!r} names devices of another tenant or "
            f"of none: {foreign[:5]}; a tenant's windows must hold only ids {tenant}.*"
        )
    # Runs of the default deployment and of tenants share the batch workspace folder and
    # job names, so a tenant's run key carries the tenant's name.
    run_key = scope["run_key"]
    if not run_key.startswith(f"{tenant}."):
        run_key = f"{tenant}.{run_key}"
    return {**scope, "tenant": tenant, "run_key": run_key}


def settings_for(scope: dict[str, Any] | None, settings: Settings | None = None) -> Settings:
    """Return ``settings``, or the settings of the scope's tenant, or the process settings.

    A tenant's run reads and writes only the tenant's lake prefix, MLflow experiment and
    registered models (see ``saodf.tenants.tenant_settings``).
    """
    if settings is not None:
        return settings
    tenant = (scope or {}).get("tenant")
    if tenant:
        from saodf.tenants import tenant_settings

        return tenant_settings(tenant, get_settings())
    return get_settings()


def is_done(scope: dict[str, Any], settings: Settings | None = None) -> bool:
    settings = settings_for(scope, settings)
    fs, path = fsspec.core.url_to_fs(urls(settings, scope["run_key"])["done_marker"])
    return fs.exists(path)


def claim_keys(scope: dict[str, Any]) -> list[str]:
    """Return the dedup keys of a scope: one per window event, or the run key of an interval."""
    if scope.get("window_ids"):
        return [run_key_for_window(window_id) for window_id in scope["window_ids"]]
    return [scope["run_key"]]


def claim_url(settings: Settings, key: str) -> str:
    return settings.lake_path("runs", "claims", f"{key}.json")


def read_claim(settings: Settings, key: str) -> dict[str, Any] | None:
    fs, path = fsspec.core.url_to_fs(claim_url(settings, key))
    if not fs.exists(path):
        return None
    with fs.open(path, "r") as handle:
        return json.load(handle)


def is_window_claimed(window_id: str, settings: Settings | None = None) -> bool:
    """Tell whether a DAG run already took this window event (used by the trigger to drop repeats)."""
    settings = settings or get_settings()
    return read_claim(settings, run_key_for_window(window_id)) is not None


def claim_run(scope: dict[str, Any], dag_run_id: str, settings: Settings | None = None) -> bool:
    """Record ``dag_run_id`` as the owner of the scope's windows; return False if all were taken.

    Each claim is created with an exclusive open, so two runs of the same window (an
    at-least-once redelivery) cannot both proceed. The owner may claim again (a retry, or a
    cleared and re-run DAG run). A run whose windows are only partly taken by other runs
    goes ahead: its outputs are keyed by its own run key, so the overlap is processed twice
    but nothing is overwritten or duplicated.
    """
    settings = settings_for(scope, settings)
    record = {
        "dag_run_id": dag_run_id,
        "run_key": scope["run_key"],
        "claimed_at": _iso(datetime.now(timezone.utc)),
    }
    taken_by_others = []
    keys = claim_keys(scope)
    for key in keys:
        fs, path = fsspec.core.url_to_fs(claim_url(settings, key))
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        try:
            with fs.open(path, "x") as handle:
                json.dump(record, handle)
        except FileExistsError:
            owner = read_claim(settings, key) or {}
            if owner.get("dag_run_id") != dag_run_id:
                taken_by_others.append((key, owner.get("dag_run_id")))
    if taken_by_others:
        logger.warning(
            "DAG run %s: %d of %d windows of run key %s are already claimed: %s",
            dag_run_id,
            len(taken_by_others),
            len(keys),
            scope["run_key"],
            taken_by_others,
        )
    return len(taken_by_others) < len(keys)


def resolve_devices(scope: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """Fill in the devices of a scheduled run: those with raw readings in its interval."""
    from saodf import lake

    settings = settings_for(scope, settings)
    if scope["devices"]:
        return scope
    start = _parse_time(scope.get("interval_start"))
    end = _parse_time(scope["end"])
    files = lake.list_raw_files(settings.lake_url, None, start, end)
    devices = sorted(
        {
            part[len("device_id=") :]
            for f in files
            for part in f.split("/")
            if part.startswith("device_id=")
        }
    )
    return {**scope, "devices": devices}


def validate_raw(scope: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """Gate the run's raw readings with the ``raw_telemetry`` suite; quarantine on failure."""
    from expectations.gate import gate
    from saodf import lake

    settings = settings_for(scope, settings)
    started = time.monotonic()
    # A scheduled run gates only its own interval; a window run gates everything it will read.
    gate_start = scope.get("interval_start") or scope["start"]
    frame = lake.read_raw(
        settings.lake_url, scope["devices"], _parse_time(gate_start), _parse_time(scope["end"])
    )
    if frame.empty:
        raise NoDataError(
            f"no raw readings for devices {scope['devices']} before {scope['end']} in "
            f"{settings.lake_url}; replay data first (saodf replay) or check SAODF_LAKE_URL"
        )
    result = gate(
        frame, "raw_telemetry", scope["run_key"], urls(settings, scope["run_key"])["quarantine"]
    )
    return {
        "rows": int(len(frame)),
        "devices": int(frame["device_id"].nunique()),
        "success": bool(result.success),
        "seconds": time.monotonic() - started,
    }


def preprocess(
    scope: dict[str, Any], settings: Settings | None = None, **overrides
) -> dict[str, Any]:
    """Run the Glue job script locally for the run's devices and return its summary."""
    from etl.glue_job import run

    settings = settings_for(scope, settings)
    started = time.monotonic()
    paths = urls(settings, scope["run_key"])
    config = prepare_config(scope, settings, **overrides)
    try:
        summary = run(config)
    except DatasetError as exc:
        # Every device was too short or empty: nothing to train on is not a pipeline fault.
        # The raw readings stay in the lake and the reasons in the prepared report.
        if _prepared_groups(paths["prepared"]) == []:
            raise NoDataError(str(exc)) from exc
        raise
    return {
        "prepared_url": paths["prepared"],
        "summary": summary,
        "seconds": time.monotonic() - started,
    }


def prepare_config(scope: dict[str, Any], settings: Settings | None = None, **overrides):
    """Return the preprocessing job's ``PrepareConfig`` for the run's devices and time range."""
    from etl.glue_job import PrepareConfig

    settings = settings_for(scope, settings)
    paths = urls(settings, scope["run_key"])
    return PrepareConfig(
        raw_url=paths["raw"],
        output_url=paths["prepared"],
        cat_mapping_url=paths["cat_mapping"],
        devices=scope["devices"],
        start=_parse_time(scope["start"]),
        end=_parse_time(scope["end"]),
        run_key=scope["run_key"],
        **overrides,
    )


def _prepared_groups(prepared_url: str) -> list | None:
    fs, path = fsspec.core.url_to_fs(prepared_url + "/manifest.json")
    if not fs.exists(path):
        return None
    with fs.open(path, "r") as handle:
        return json.load(handle).get("groups")


def validate_prepared(scope: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """Gate the prepared series and the DeepAR channels built from them; quarantine on failure.

    ``prepared_series`` checks the long table, ``deepar_dataset`` the JSON Lines channels
    (start alignment, lengths, train a prefix of test, ``cat`` in range, feature counts).
    """
    import pandas as pd

    from expectations.deepar_dataset import gate_deepar_dataset
    from expectations.gate import gate

    settings = settings_for(scope, settings)
    started = time.monotonic()
    paths = urls(settings, scope["run_key"])
    fs, path = fsspec.core.url_to_fs(paths["prepared"] + "/prepared.parquet")
    with fs.open(path, "rb") as handle:
        frame = pd.read_parquet(handle)
    result = gate(frame, "prepared_series", scope["run_key"], paths["quarantine"])
    channels = gate_deepar_dataset(
        paths["prepared"],
        scope["run_key"],
        paths["quarantine"],
        cat_mapping_url=paths["cat_mapping"],
    )
    return {
        "rows": int(len(frame)),
        "success": bool(result.success and channels.success),
        "data_docs": [url for url in (result.docs_url, channels.docs_url) if url],
        "seconds": time.monotonic() - started,
    }


def train(
    scope: dict[str, Any], settings: Settings | None = None, config_overrides=None
) -> dict[str, Any]:
    """Train DeepAR and the baseline per group, log both to MLflow and set the champion alias."""
    from models.pipeline import train_and_register

    settings = settings_for(scope, settings)
    started = time.monotonic()
    paths = urls(settings, scope["run_key"])
    results = train_and_register(
        paths["prepared"],
        scope["run_key"],
        settings.mlflow_tracking_uri,
        workspace(settings, scope["run_key"]) / "train",
        config_overrides=config_overrides,
        experiment=settings.mlflow_experiment,
        model_prefix=settings.registered_model_prefix,
    )
    urls_by_group = {}
    for group, info in results.items():
        run_id = info.get("parent_run_id")
        if run_id:
            urls_by_group[group] = mlflow_run_url(settings.mlflow_tracking_uri, run_id)
    return {"groups": results, "mlflow_urls": urls_by_group, "seconds": time.monotonic() - started}


def mlflow_run_url(tracking_uri: str, run_id: str) -> str:
    """Return the MLflow UI address of ``run_id``."""
    from models.registry import client_for

    experiment_id = client_for(tracking_uri).get_run(run_id).info.experiment_id
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def batch_transform(
    scope: dict[str, Any], trained: dict[str, Any], settings: Settings | None = None
):
    """Forecast every series with its group's champion and write DeepAR output JSON Lines."""
    from models.pipeline import batch_transform as transform

    settings = settings_for(scope, settings)
    started = time.monotonic()
    paths = urls(settings, scope["run_key"])
    chosen = {
        group: (info["model_name"], str(info["model_version"]))
        for group, info in trained["groups"].items()
    }
    result = transform(paths["prepared"], paths["forecasts"], settings.mlflow_tracking_uri, chosen)
    return {
        "forecasts_url": paths["forecasts"],
        "result": result,
        "seconds": time.monotonic() - started,
    }


def populate_cache(scope: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """Load the run's forecasts into the Redis forecast cache."""
    from actions.cache import ForecastCache, populate_from_forecasts, record_left_out
    from actions.redis_acl import WRITER

    settings = settings_for(scope, settings)
    started = time.monotonic()
    paths = urls(settings, scope["run_key"])
    cache = None
    if scope.get("tenant"):
        from actions.cache import redis_client
        from saodf.tenants import tenant_layout

        # The pipeline writes as the stack's writer role, whose ACL covers every tenant's
        # cache keys, under the tenant's key prefix.
        cache = ForecastCache(
            redis_client(get_settings(), role=WRITER),
            key_prefix=tenant_layout(scope["tenant"]).redis_key_prefix,
        )
    if cache is None:
        cache = ForecastCache.from_settings(settings, role=WRITER)
    stats = populate_from_forecasts(paths["forecasts"], paths["prepared"], settings, cache=cache)
    # Devices that preprocessing skipped get no pointer. Their entry lets a forecast request
    # return the skip reason.
    report_url = paths["prepared"].rstrip("/") + "/report.json"
    stats["left_out"] = record_left_out(report_url, cache, scope["run_key"])
    return {"stats": stats, "seconds": time.monotonic() - started}


def teardown(scope: dict[str, Any] | None, run_key: str, settings: Settings | None = None) -> dict:
    """Destroy the run's batch stack if one was applied, then remove its batch workspace.

    On the aws target this is ``terraform destroy`` of the run's workspace, retried, and a
    failure names the resources that survived. Locally, without an applied stack, it
    removes the workspace folder (model checkpoints and scratch files).
    """
    from saodf.teardown import teardown_batch

    settings = settings or get_settings()
    result = teardown_batch(
        settings, run_key, log=lambda line: logger.info("teardown %s: %s", run_key, line)
    )
    path = settings.batch_dir / run_key
    if path.exists():
        raise SaodfError(f"teardown failed: batch workspace {path} still exists after removal")
    logger.info("teardown of run %s: %s", run_key, result)
    return result


def report_cost(
    scope: dict[str, Any],
    stage_seconds: dict[str, float],
    settings: Settings | None = None,
    forecast_count: int | None = None,
) -> dict[str, Any]:
    """Log the run's cost summary to MLflow and write the done marker that deduplicates windows."""
    from models.cost import log_cost_summary

    settings = settings_for(scope, settings)
    summary = log_cost_summary(
        settings.mlflow_tracking_uri,
        scope["run_key"],
        stage_seconds,
        experiment=settings.mlflow_experiment,
        forecast_count=forecast_count,
    )
    paths = urls(settings, scope["run_key"])
    fs, path = fsspec.core.url_to_fs(paths["done_marker"])
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "w") as handle:
        json.dump(
            {"scope": scope, "cost": summary, "finished_at": _iso(datetime.now(timezone.utc))},
            handle,
        )
    return summary


def merge_window_events(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge the window events that triggered one run (Airflow may batch several) into a scope."""
    if not events:
        raise ValueError("no window events to merge")
    if len(events) == 1:
        return scope_from_window_event(events[0])
    window_ids = sorted({event["window_id"] for event in events})
    merged = {
        "window_id": "+".join(window_ids),
        "window_ids": window_ids,
        "devices": sorted({device for event in events for device in event["devices"]}),
        "end": max(event["end"] for event in events),
        "message_count": sum(int(event.get("message_count") or 0) for event in events),
    }
    return scope_from_window_event(merged)


def finished_runs(settings: Settings | None = None) -> list[dict[str, Any]]:
    """Return the done markers of finished runs, newest first."""
    settings = settings or get_settings()
    fs, root = fsspec.core.url_to_fs(settings.lake_path("runs"))
    if not fs.exists(root):
        return []
    markers = []
    for path in fs.glob(f"{root}/*/done.json"):
        with fs.open(path, "r") as handle:
            markers.append(json.load(handle))
    return sorted(markers, key=lambda marker: marker.get("finished_at", ""), reverse=True)

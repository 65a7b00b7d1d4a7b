"""``dag.test()`` of the whole pipeline on one small interval, in-process.

Raw readings are written straight into the lake (no broker); the tasks run against a
real Redis and MLflow server. Airflow uses a throwaway SQLite metadata DB.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone

import pandas as pd
import pyarrow as pa
import pytest

from saodf.config import PROJECT_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEVICE = "skab-anomaly-free"
LOGICAL_DATE = datetime(2020, 2, 8, 16, tzinfo=timezone.utc)


def write_raw(settings, limit: int | None = None, device: str = DEVICE) -> int:
    from etl.readers import iter_dataset, to_messages
    from saodf import lake

    rows = []
    for series, _report in iter_dataset("skab", settings.data_dir, ["anomaly-free"]):
        for offset, message in enumerate(to_messages(series)):
            if limit is not None and offset >= limit:
                break
            for name, value in message.items():
                if name not in ("device_id", "timestamp", "schema_version"):
                    rows.append(
                        (device, message["timestamp"], name, value, 1, "telemetry.raw", 0, offset)
                    )
    frame = pd.DataFrame(rows, columns=[field.name for field in lake.RAW_SCHEMA])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    for hour, group in frame.groupby(frame["timestamp"].dt.floor("h")):
        table = pa.Table.from_pandas(group, schema=lake.RAW_SCHEMA, preserve_index=False)
        name = lake.raw_file_name(
            "telemetry.raw", 0, int(group.kafka_offset.min()), int(group.kafka_offset.max())
        )
        lake.write_parquet_atomic(
            table, lake.raw_partition_url(settings.lake_url, device, hour) + "/" + name
        )
    return int(frame["kafka_offset"].nunique())


def test_dag_test_full_pipeline(airflow_db, saodf_env, redis_server, mlflow_uri):
    from airflow.models import DagBag

    from actions.cache import ForecastCache
    from actions.redis_acl import READER
    from saodf import pipeline

    sent = write_raw(saodf_env)
    assert sent == 9405
    sys.path[:0] = [str(PROJECT_ROOT / "plugins")]
    dag = DagBag(dag_folder=str(PROJECT_ROOT / "dags")).dags["telemetry_pipeline"]
    run = dag.test(logical_date=LOGICAL_DATE)
    assert run.state == "success"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert set(states.values()) == {"success"}, states

    scope = pipeline.scope_from_interval(
        datetime(2020, 2, 8, 15, tzinfo=timezone.utc), LOGICAL_DATE
    )
    assert pipeline.is_done(scope, saodf_env)
    cache = ForecastCache.from_settings(saodf_env, role=READER)
    assert cache.pointer(DEVICE) is not None
    assert not (saodf_env.batch_dir / scope["run_key"]).exists()

"""``dag.test()`` of a tenant's pipeline DAG: it reads and writes only the tenant's resources."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone

import fsspec
import pytest

from saodf.config import PROJECT_ROOT
from tests.integration.test_dag_test import DEVICE, write_raw

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TENANT = "acme"
TENANT_DEVICE = f"{TENANT}.{DEVICE}"
LOGICAL_DATE = datetime(2020, 2, 8, 16, tzinfo=timezone.utc)


def test_tenant_dag_stays_in_tenant(
    airflow_db,
    saodf_env,
    redis_server,
    mlflow_uri,
    monkeypatch,
):
    from airflow.models import DagBag

    from actions.cache import ForecastCache
    from models.registry import client_for
    from saodf import pipeline
    from saodf.tenants import tenant_layout, tenant_settings

    tenant = tenant_settings(TENANT, saodf_env)
    assert write_raw(tenant, device=TENANT_DEVICE) == 9405
    monkeypatch.setenv("SAODF_PIPELINE_TENANTS", TENANT)
    sys.path[:0] = [str(PROJECT_ROOT / "plugins")]
    dag = DagBag(dag_folder=str(PROJECT_ROOT / "dags")).dags[f"telemetry_pipeline__{TENANT}"]
    run = dag.test(logical_date=LOGICAL_DATE)
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert set(states.values()) == {"success"}, states

    scope = pipeline.with_tenant(
        pipeline.scope_from_interval(LOGICAL_DATE - timedelta(hours=1), LOGICAL_DATE), TENANT
    )
    tenant_cache = ForecastCache(
        redis_server.client(decode_responses=True),
        key_prefix=tenant_layout(TENANT).redis_key_prefix,
    )
    default_cache = ForecastCache(redis_server.client(decode_responses=True))
    fs, default_runs = fsspec.core.url_to_fs(saodf_env.lake_path("prepared"))
    experiments = [e.name for e in client_for(mlflow_uri).search_experiments()]
    assert pipeline.is_done(scope)
    assert tenant_cache.pointer(TENANT_DEVICE) is not None
    assert default_cache.pointer(TENANT_DEVICE) is None
    assert not fs.exists(default_runs)
    assert f"{TENANT}.{saodf_env.mlflow_experiment}" in experiments
    models = [m.name for m in client_for(mlflow_uri).search_registered_models()]
    assert any(name.startswith(f"{TENANT}.") for name in models)

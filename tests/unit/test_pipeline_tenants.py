"""A tenant's pipeline runs: scope, settings and the per-tenant DAG."""

from __future__ import annotations

import json

import pytest

from saodf import pipeline
from saodf.config import PROJECT_ROOT, Settings, reset_settings
from saodf.errors import SaodfError


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("SAODF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SAODF_LAKE_URL", (tmp_path / "lake").as_uri())
    reset_settings()
    yield Settings.from_env()
    reset_settings()


def _scope(devices):
    return {"run_key": "window-abc", "devices": devices, "window_ids": ["w1"]}


def test_with_tenant_prefixes_run_key():
    scope = pipeline.with_tenant(_scope(["acme.pump-1"]), "acme")
    assert scope["run_key"] == "acme.window-abc"
    assert scope["tenant"] == "acme"


def test_with_tenant_keeps_prefixed_key():
    scope = pipeline.with_tenant({**_scope(["acme.pump-1"]), "run_key": "acme.window-abc"}, "acme")
    assert scope["run_key"] == "acme.window-abc"


def test_with_tenant_rejects_foreign_device():
    with pytest.raises(SaodfError, match=r"devices of another tenant or of none: \['beta.x'\]"):
        pipeline.with_tenant(_scope(["acme.pump-1", "beta.x"]), "acme")


def test_with_tenant_rejects_default_device():
    with pytest.raises(SaodfError, match="skab-valve1-0"):
        pipeline.with_tenant(_scope(["skab-valve1-0"]), "acme")


def test_default_scope_unchanged():
    scope = _scope(["skab-valve1-0"])
    assert pipeline.with_tenant(scope, None) is scope


def test_settings_for_tenant_lake(settings):
    scoped = pipeline.settings_for({"tenant": "acme"})
    assert scoped.lake_url == settings.lake_path("tenants/acme")
    assert scoped.mlflow_experiment == "acme." + settings.mlflow_experiment


def test_settings_for_default(settings):
    assert pipeline.settings_for({"run_key": "x"}).lake_url == settings.lake_url


def test_tenant_urls_stay_under_prefix(settings):
    scope = pipeline.with_tenant(_scope(["acme.pump-1"]), "acme")
    paths = pipeline.urls(pipeline.settings_for(scope), scope["run_key"])
    root = settings.lake_path("tenants/acme")
    assert all(url.startswith(root) for url in paths.values())


def test_tenant_pipeline_env(settings):
    from saodf.stack.services import tenant_pipeline_env
    from saodf.tenants import create_tenant

    create_tenant("acme", settings=settings)
    env = tenant_pipeline_env(settings, {"group.id": "saodf-airflow-windows"})
    connection = json.loads(env["AIRFLOW_CONN_SAODF_KAFKA_ACME"])
    assert env["SAODF_PIPELINE_TENANTS"] == "acme"
    assert connection["extra"]["group.id"] == "saodf-airflow-windows-acme"


@pytest.fixture(scope="module")
def tenant_dags():
    from airflow.models import DagBag

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SAODF_PIPELINE_TENANTS", "acme,beta-2")
        bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
    assert bag.import_errors == {}
    return bag.dags


def test_tenant_dag_per_tenant(tenant_dags):
    assert {"telemetry_pipeline__acme", "telemetry_pipeline__beta-2"} <= set(tenant_dags)


def test_tenant_dag_watches_own_topic(tenant_dags):
    condition = tenant_dags["telemetry_pipeline__beta-2"].timetable.asset_condition
    (watcher,) = condition.watchers
    assert watcher.trigger.topics == ["t.beta-2.telemetry.windows"]
    assert watcher.trigger.dlq_topic == "t.beta-2.telemetry.dlq"
    assert watcher.trigger.kafka_config_id == "saodf_kafka_beta_2"


def test_tenant_dag_follows_policy(tenant_dags):
    from saodf.dag_policy import check_dag

    assert check_dag(tenant_dags["telemetry_pipeline__acme"]) == []


def test_tenant_dag_same_tasks(tenant_dags):
    default = {t.task_id for t in tenant_dags["telemetry_pipeline"].tasks}
    assert {t.task_id for t in tenant_dags["telemetry_pipeline__acme"].tasks} == default

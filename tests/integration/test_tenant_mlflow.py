"""Tenant MLflow names on a real MLflow server: each tenant's experiment and models apart."""

from __future__ import annotations

import uuid

import pytest

from models.registry import client_for
from saodf.tenants import tenant_settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def names(session_settings, mlflow_uri):
    """Register one experiment and one model per tenant under names from their settings."""
    # Both URIs: without a registry URI MLflow writes models to ./mlflow.db.
    client = client_for(mlflow_uri)
    run = uuid.uuid4().hex[:8]
    base = session_settings.with_overrides(
        mlflow_experiment=f"telemetry_pipeline-{run}", registered_model_prefix=f"forecaster-{run}"
    )
    scoped = {name: tenant_settings(name, base) for name in ("acme", "beta")}
    for settings in scoped.values():
        client.create_experiment(settings.mlflow_experiment)
        client.create_registered_model(f"{settings.registered_model_prefix}-pumps")
    return client, base, scoped


def _models(client, prefix):
    return sorted(m.name for m in client.search_registered_models(f"name LIKE '{prefix}%'"))


def test_tenant_experiment_created(names):
    client, _, scoped = names
    assert client.get_experiment_by_name(scoped["acme"].mlflow_experiment) is not None


def test_tenant_experiments_apart(names):
    client, _, scoped = names
    ids = {
        client.get_experiment_by_name(s.mlflow_experiment).experiment_id for s in scoped.values()
    }
    assert len(ids) == 2


def test_tenant_models_own_prefix(names):
    client, _, scoped = names
    prefix = scoped["acme"].registered_model_prefix
    assert _models(client, prefix) == [f"{prefix}-pumps"]


def test_default_prefix_not_tenant(names):
    client, base, _ = names
    assert _models(client, base.registered_model_prefix) == []

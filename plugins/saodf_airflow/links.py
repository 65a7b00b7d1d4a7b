"""Extra link from a task instance to the MLflow run it logged."""

from __future__ import annotations

from airflow.providers.common.compat.sdk import BaseOperatorLink, XCom

MLFLOW_URL_XCOM_KEY = "mlflow_run_url"


class MlflowRunLink(BaseOperatorLink):
    """Button "MLflow run" on tasks that pushed ``mlflow_run_url``; empty for the others."""

    name = "MLflow run"

    def get_link(self, operator, *, ti_key) -> str:
        url = XCom.get_value(key=MLFLOW_URL_XCOM_KEY, ti_key=ti_key)
        return url if isinstance(url, str) else ""

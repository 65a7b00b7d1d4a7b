"""Extra link from a task instance to the MLflow run it logged."""

from __future__ import annotations

import logging
from typing import Any

from airflow.providers.common.compat.sdk import BaseOperatorLink

logger = logging.getLogger(__name__)

MLFLOW_URL_XCOM_KEY = "mlflow_run_url"


def read_run_url(ti_key: Any) -> str:
    """Return the ``mlflow_run_url`` XCom of a task instance, or "" when it has none.

    Airflow 3 calls ``get_link`` of a plugin's global links in the API server, outside any
    task. There the Task SDK's ``XCom`` has no supervisor to ask, so this reads the XCom table
    of the metadata DB directly, as Airflow 3.3's own ``XComOperatorLink`` does. Only http and
    https URLs are returned, so a pushed value cannot become a ``javascript:`` link.
    """
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    query = XComModel.get_many(
        key=MLFLOW_URL_XCOM_KEY,
        run_id=ti_key.run_id,
        dag_ids=ti_key.dag_id,
        task_ids=ti_key.task_id,
        map_indexes=ti_key.map_index,
    ).with_only_columns(XComModel.value)
    with create_session() as session:
        row = session.execute(query).first()
    if row is None:
        return ""
    url = XComModel.deserialize_value(row)
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        logger.warning(
            "ignoring XCom %s of task %s in run %s: %r is not an http(s) URL",
            MLFLOW_URL_XCOM_KEY,
            ti_key.task_id,
            ti_key.run_id,
            url,
        )
        return ""
    return url


class MlflowRunLink(BaseOperatorLink):
    """Button "MLflow run" on tasks that pushed ``mlflow_run_url``; empty for the others."""

    name = "MLflow run"

    def get_link(self, operator, *, ti_key) -> str:
        return read_run_url(ti_key)

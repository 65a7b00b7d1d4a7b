"""Airflow plugin of SAODF: registers the MLflow run link on every task."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from saodf_airflow.links import MlflowRunLink


class SaodfPlugin(AirflowPlugin):
    name = "saodf"
    global_operator_extra_links = [MlflowRunLink()]

"""Small client of the Airflow 3 REST API (v2) used by the demo and the CLI."""

from __future__ import annotations

import logging
import time
from typing import Any

import requests

from saodf.config import Settings
from saodf.errors import ServiceError

logger = logging.getLogger(__name__)


class AirflowClient:
    """Authenticate with the generated admin password and call ``/api/v2``."""

    def __init__(
        self, settings: Settings, username: str = "admin", timeout: float = 30.0, attempts: int = 4
    ):
        from saodf.secrets import airflow_admin_password

        self.base = f"http://{settings.host}:{settings.ports['airflow']}"
        self.username = username
        self._password = airflow_admin_password(settings)
        self.timeout = timeout
        self.attempts = attempts
        self._token: str | None = None

    def _headers(self) -> dict[str, str]:
        if self._token is None:
            response = requests.post(
                f"{self.base}/auth/token",
                json={"username": self.username, "password": self._password},
                timeout=self.timeout,
            )
            if response.status_code not in (200, 201):
                raise ServiceError(
                    f"Airflow login as {self.username!r} failed with HTTP {response.status_code}: "
                    f"{response.text[:200]}"
                )
            self._token = response.json()["access_token"]
        return {"Authorization": f"Bearer {self._token}"}

    def get(self, path: str, **params) -> Any:
        """GET ``/api/v2{path}``; retry timeouts and refused connections with backoff."""
        delay = 1.0
        for attempt in range(1, self.attempts + 1):
            try:
                response = requests.get(
                    f"{self.base}/api/v2{path}",
                    headers=self._headers(),
                    params=params,
                    timeout=self.timeout,
                )
            except (requests.Timeout, requests.ConnectionError) as exc:
                if attempt == self.attempts:
                    raise ServiceError(
                        f"GET {path} failed after {attempt} attempts: {exc}; is the Airflow "
                        f"api-server at {self.base} up (`saodf stack status`)?"
                    ) from exc
                logger.warning(
                    "GET %s attempt %d failed (%s); retrying in %.0f s", path, attempt, exc, delay
                )
                time.sleep(delay)
                delay *= 2
                continue
            if response.status_code == 401 and attempt < self.attempts:
                self._token = None
                continue
            if response.status_code >= 400:
                raise ServiceError(
                    f"GET {path} failed with HTTP {response.status_code}: {response.text[:300]}"
                )
            return response.json()
        raise ServiceError(f"GET {path} failed: no attempt left")

    def import_errors(self) -> list[dict]:
        return self.get("/importErrors").get("import_errors", [])

    def dag(self, dag_id: str) -> dict | None:
        try:
            return self.get(f"/dags/{dag_id}")
        except ServiceError as exc:
            if "HTTP 404" in str(exc):
                return None
            raise

    def dag_runs(self, dag_id: str, limit: int = 50) -> list[dict]:
        return self.get(f"/dags/{dag_id}/dagRuns", limit=limit, order_by="-run_after").get(
            "dag_runs", []
        )

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances").get("task_instances", [])

    def wait_for_dag(self, dag_id: str, timeout: float = 180.0) -> dict:
        """Wait until the dag-processor has parsed ``dag_id``; raise with the import errors if not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.dag(dag_id)
            if found is not None:
                return found
            time.sleep(2)
        errors = self.import_errors()
        raise ServiceError(
            f"DAG {dag_id} did not appear within {timeout:.0f} s; import errors: {errors or 'none'}"
        )

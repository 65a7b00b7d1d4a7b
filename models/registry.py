"""MLflow tracking and registry helpers: experiments, idempotent runs, versions and aliases."""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Iterator, Mapping

from models.errors import RegistryError
from saodf.log import silence_sagemaker_mlflow_header_warning

logger = logging.getLogger(__name__)

CHAMPION_ALIAS = "champion"
PARENT_KIND = "parent"
# run_key and group values go into MLflow filter strings in single quotes.
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.:+\-/ ]{1,200}$")
_TRACKING_LOCK = threading.RLock()


def check_filter_value(name: str, value: str) -> str:
    """Return ``value`` if it is safe inside an MLflow filter string, else raise RegistryError."""
    if not _SAFE_VALUE.match(value):
        raise RegistryError(
            f"{name}={value!r} is invalid; use 1-200 letters, digits, spaces or _ . : + - /"
        )
    return value


@contextlib.contextmanager
def tracking(tracking_uri: str) -> Iterator[None]:
    """Point the fluent MLflow API at ``tracking_uri`` and restore the previous URIs after.

    The fluent API keeps its URIs in process-wide state, so a lock serializes the
    threads that use this context manager.
    """
    import mlflow

    silence_sagemaker_mlflow_header_warning()
    with _TRACKING_LOCK:
        previous_tracking = mlflow.get_tracking_uri()
        previous_registry = mlflow.get_registry_uri()
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(previous_tracking)
            mlflow.set_registry_uri(previous_registry)


def client_for(tracking_uri: str):
    """Return an ``MlflowClient`` whose tracking and registry URIs are both ``tracking_uri``."""
    import mlflow

    silence_sagemaker_mlflow_header_warning()
    return mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def ensure_experiment(client, name: str) -> str:
    """Return the id of experiment ``name``, creating it when missing."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    experiment_id = client.create_experiment(name)
    logger.info("created MLflow experiment %s (id %s)", name, experiment_id)
    return experiment_id


def find_finished_parent(client, experiment_id: str, run_key: str, group: str):
    """Return the newest FINISHED parent run of ``run_key`` and ``group``, or None."""
    check_filter_value("run_key", run_key)
    check_filter_value("group", group)
    runs = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.run_key = '{run_key}' and tags.group = '{group}' "
            f"and tags.model_kind = '{PARENT_KIND}' and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def find_version_for_run_key(client, name: str, run_key: str):
    """Return the newest version of ``name`` tagged with ``run_key``, or None."""
    check_filter_value("model name", name)
    versions = client.search_model_versions(f"name = '{name}'", max_results=1000)
    tagged = [v for v in versions if v.tags.get("run_key") == run_key]
    return max(tagged, key=lambda v: int(v.version)) if tagged else None


def register_version(
    tracking_uri: str, name: str, model_uri: str, run_id: str, run_key: str, tags: Mapping[str, str]
) -> str:
    """Register ``model_uri`` as a version of ``name`` and return it, without moving aliases.

    A version already tagged with ``run_key`` is reused, so a retry after a crash
    between registration and the end of the parent run adds no second version.
    """
    client = client_for(tracking_uri)
    existing = find_version_for_run_key(client, name, run_key)
    if existing is not None:
        version = str(existing.version)
        logger.info("reusing version %s of %s for run_key %s", version, name, run_key)
        return version
    import mlflow

    # register_model resolves a models:/<model_id> source for both SQL and REST
    # registries, through the fluent tracking URI.
    with tracking(tracking_uri):
        created = mlflow.register_model(model_uri, name, tags={"run_key": run_key, **tags})
    version = str(created.version)
    logger.info("registered version %s of %s from run %s", version, name, run_id)
    return version


def register_champion(
    tracking_uri: str, name: str, model_uri: str, run_id: str, run_key: str, tags: Mapping[str, str]
) -> str:
    """Register ``model_uri`` as a version of ``name``, alias it ``champion`` and return it."""
    version = register_version(tracking_uri, name, model_uri, run_id, run_key, tags)
    client_for(tracking_uri).set_registered_model_alias(name, CHAMPION_ALIAS, version)
    return version


def current_champion(client, name: str):
    """Return the model version that the ``champion`` alias of ``name`` names, or None."""
    import mlflow

    try:
        return client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    except mlflow.exceptions.MlflowException:
        return None


def move_champion(client, name: str, version: str) -> None:
    """Point the ``champion`` alias of ``name`` at ``version``."""
    client.set_registered_model_alias(name, CHAMPION_ALIAS, str(version))
    logger.info("moved alias %s of %s to version %s", CHAMPION_ALIAS, name, version)


def resolve_version(client, name: str, version_or_alias: str | int) -> str:
    """Return the version number that ``version_or_alias`` names for model ``name``.

    Raises:
        RegistryError: the model, version or alias does not exist.
    """
    import mlflow

    text = str(version_or_alias)
    try:
        if text.isdigit():
            return str(client.get_model_version(name, text).version)
        return str(client.get_model_version_by_alias(name, text).version)
    except mlflow.exceptions.MlflowException as exc:
        raise RegistryError(
            f"model {name!r} version or alias {text!r} not found in the registry: "
            f"{exc.message}; train and register the model first"
        ) from None

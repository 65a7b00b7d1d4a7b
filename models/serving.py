"""One-series inference for the cache-miss path, with registered models cached in-process."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from models.errors import ModelInputError

logger = logging.getLogger(__name__)

MAX_CACHED_MODELS = 8

_cache: OrderedDict[tuple[str, str, str], LoadedModel] = OrderedDict()
_cache_lock = threading.Lock()


@dataclass(frozen=True)
class LoadedModel:
    """A registered model version loaded as an MLflow pyfunc model."""

    name: str
    version: str
    pyfunc: Any
    kind: str
    freq: str
    prediction_length: int

    def predict(self, records: list[dict]) -> list[dict]:
        """Forecast ``records`` and return one DeepAR output object per record."""
        return self.pyfunc.predict(records)


def load_model_version(tracking_uri: str, name: str, version_or_alias: str | int) -> LoadedModel:
    """Load a registered model version, or reuse the copy this process loaded before.

    An alias is resolved to its version number on every call, so moving ``champion``
    to a new version loads the new model. The cache keeps at most
    ``MAX_CACHED_MODELS`` versions and evicts the least recently used.

    Raises:
        RegistryError: the model, version or alias does not exist.
    """
    from models.registry import client_for, resolve_version, tracking

    version = resolve_version(client_for(tracking_uri), name, version_or_alias)
    key = (tracking_uri, name, version)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]

    import mlflow.pyfunc

    with tracking(tracking_uri):
        pyfunc = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    inner = pyfunc.unwrap_python_model()
    loaded = LoadedModel(
        name=name,
        version=version,
        pyfunc=pyfunc,
        kind=inner.kind,
        freq=inner.freq,
        prediction_length=inner.prediction_length,
    )
    with _cache_lock:
        _cache[key] = loaded
        _cache.move_to_end(key)
        while len(_cache) > MAX_CACHED_MODELS:
            evicted, _ = _cache.popitem(last=False)
            logger.info("evicted model %s version %s from the in-process cache", *evicted[1:])
    logger.info("loaded model %s version %s (%s, freq %s)", name, version, loaded.kind, loaded.freq)
    return loaded


def clear_model_cache() -> None:
    """Forget every loaded model, so the next load reads the registry again."""
    with _cache_lock:
        _cache.clear()


def forecast_record(model: LoadedModel, record: Mapping, freq: str, horizon: int) -> dict:
    """Forecast the ``horizon`` steps after one series' target.

    Args:
        model: the result of :func:`load_model_version`.
        record: a DeepAR record with ``start``, ``target`` and optional ``cat``.
        freq: the series frequency; it must equal the model's.
        horizon: steps to return, from 1 to the model's ``prediction_length``.

    Returns:
        One DeepAR output object with ``mean`` and quantiles ``0.1``, ``0.5``, ``0.9``.

    Raises:
        ModelInputError: ``horizon`` is out of range, or the record is invalid.
    """
    if not 1 <= horizon <= model.prediction_length:
        raise ModelInputError(
            f"horizon={horizon} is out of range for model {model.name} version {model.version}; "
            f"use 1 to {model.prediction_length}"
        )
    request = {key: value for key, value in record.items() if key in ("start", "target", "cat")}
    request["freq"] = freq
    if "target" in request:
        request["target"] = [
            float(v) if v is not None else None for v in _as_list(request["target"])
        ]
    (forecast,) = model.predict([request])
    return {
        "mean": forecast["mean"][:horizon],
        "quantiles": {key: values[:horizon] for key, values in forecast["quantiles"].items()},
    }


def _as_list(values: Any) -> list:
    return values.tolist() if hasattr(values, "tolist") else list(values)

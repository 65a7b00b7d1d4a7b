"""MLflow pyfunc wrapper of a trained forecaster: GluonTS DeepAR or a statsforecast baseline.

``predict`` takes DeepAR records and returns DeepAR output objects, so the batch
transform, the serving path and ``mlflow models serve`` share one interface. This
module imports mlflow at load time because the model class subclasses PythonModel:
import it inside functions from modules that Airflow parses.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow.pyfunc

from models.errors import ModelInputError
from models.prepared import normalize_record

logger = logging.getLogger(__name__)

MODEL_KINDS = ("deepar", "seasonal_naive", "auto_ets")
QUANTILE_KEYS = ("0.1", "0.5", "0.9")
PREDICTOR_ARTIFACT = "predictor"

# Distributions whose versions pin the logged model's environment; listing them
# explicitly skips MLflow's requirement inference, which costs about 20 s per model.
_REQUIREMENTS = ("mlflow", "gluonts", "torch", "lightning", "statsforecast", "pandas", "numpy")


class ForecasterModel(mlflow.pyfunc.PythonModel):
    """Pyfunc model that forecasts ``prediction_length`` steps after each input series."""

    def __init__(
        self,
        kind: str,
        freq: str,
        prediction_length: int,
        season_length: int | None = None,
        cardinality: list[int] | None = None,
    ):
        if kind not in MODEL_KINDS:
            raise ModelInputError(f"model kind {kind!r} is unknown; use one of {MODEL_KINDS}")
        if kind != "deepar" and not season_length:
            raise ModelInputError(f"a {kind} model needs a positive season_length")
        self.kind = kind
        self.freq = freq
        self.prediction_length = int(prediction_length)
        self.season_length = season_length
        self.cardinality = cardinality
        self._predictor = None

    def load_context(self, context) -> None:
        """Deserialize the GluonTS predictor from the model's artifacts (DeepAR only)."""
        if self.kind != "deepar":
            return
        from gluonts.model.predictor import Predictor

        self._predictor = Predictor.deserialize(Path(context.artifacts[PREDICTOR_ARTIFACT]))

    def predict(self, context, model_input, params: dict[str, Any] | None = None) -> list[dict]:
        """Forecast each input series and return DeepAR output objects in input order.

        Args:
            context: MLflow context, unused after loading.
            model_input: a DataFrame with columns ``start``, ``target``, optional ``cat``
                and ``freq``, or a list of DeepAR record dicts.
            params: unused; accepted for the pyfunc interface.

        Raises:
            ModelInputError: a record is malformed or its freq differs from the model's.
        """
        records = records_from_input(model_input, self.freq)
        if self.kind == "deepar":
            from models.local_deepar import predict_deepar

            if self._predictor is None:
                raise ModelInputError("DeepAR predictor is not loaded; load the model with MLflow")
            return predict_deepar(self._predictor, records, self.freq, self.cardinality)

        from models.baselines import forecast_baseline

        return forecast_baseline(
            records, self.prediction_length, int(self.season_length), model=self.kind
        )

    def attach_predictor(self, predictor: Any) -> None:
        """Use an in-memory GluonTS predictor, for evaluation before the model is logged."""
        self._predictor = predictor

    def __getstate__(self) -> dict:
        # The predictor is logged as an artifact folder and never pickled.
        state = dict(self.__dict__)
        state["_predictor"] = None
        return state


def records_from_input(model_input: Any, model_freq: str) -> list[dict]:
    """Return normalized DeepAR records from a DataFrame or a list of dicts.

    Raises:
        ModelInputError: the input type is unsupported, a record is invalid, or its
            ``freq`` differs from ``model_freq``.
    """
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        rows = model_input.to_dict(orient="records")
    elif isinstance(model_input, dict):
        rows = [model_input]
    elif isinstance(model_input, Sequence) and not isinstance(model_input, (str, bytes)):
        rows = list(model_input)
    else:
        raise ModelInputError(
            f"model input of type {type(model_input).__name__} is unsupported; "
            "pass a DataFrame with start and target columns or a list of DeepAR records"
        )
    records = []
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ModelInputError(f"model input row {index} is not a DeepAR record dict")
        freq = row.get("freq")
        if freq is not None and not _is_missing(freq) and not _same_freq(str(freq), model_freq):
            raise ModelInputError(
                f"model input row {index} has freq={freq!r} but the model was trained at "
                f"{model_freq!r}; use the model of the {freq!r} group"
            )
        clean = {k: v for k, v in row.items() if not _is_missing(v)}
        if "target" in clean and not isinstance(clean["target"], list):
            clean["target"] = list(clean["target"])
        records.append(normalize_record(clean, f"model input row {index}"))
    return records


def log_forecaster(
    model: ForecasterModel, predictor: Any | None = None, name: str = "model"
) -> Any:
    """Log ``model`` to the active MLflow run with explicit pip requirements.

    A DeepAR model needs ``predictor``, which is serialized into a temporary folder
    and logged as the ``predictor`` artifact.

    Returns:
        The ``ModelInfo`` that ``mlflow.pyfunc.log_model`` returns.
    """
    requirements = [f"{dist}=={metadata.version(dist)}" for dist in _REQUIREMENTS]
    with tempfile.TemporaryDirectory(prefix="saodf-predictor-") as tmp:
        artifacts = None
        if model.kind == "deepar":
            if predictor is None:
                raise ModelInputError("a DeepAR model needs its trained predictor to be logged")
            predictor_dir = Path(tmp) / PREDICTOR_ARTIFACT
            predictor_dir.mkdir()
            predictor.serialize(predictor_dir)
            artifacts = {PREDICTOR_ARTIFACT: str(predictor_dir)}
        # NOTE: the model pickles a reference to models.pyfunc, so the environment that
        # loads it needs this project installed; pip_requirements lists only third parties.
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=model,
            artifacts=artifacts,
            pip_requirements=requirements,
        )
    logger.info("logged %s forecaster as %s", model.kind, info.model_uri)
    return info


def _same_freq(left: str, right: str) -> bool:
    import pandas as pd

    try:
        return pd.tseries.frequencies.to_offset(left) == pd.tseries.frequencies.to_offset(right)
    except ValueError:
        return False


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return value != value
    return False

"""DeepAR hyperparameters under their SageMaker names, with a mapping to GluonTS.

The valid ranges follow the SageMaker DeepAR hyperparameter reference
(https://docs.aws.amazon.com/sagemaker/latest/dg/deepar_hyperparameters.html).
``num_batches_per_epoch`` and ``seed`` exist only for local GluonTS training.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from saodf.errors import ConfigError

# SageMaker DeepAR likelihoods mapped to the GluonTS torch distribution output class.
# deterministic-L1 trains a point forecaster with an L1 loss, which the GluonTS torch
# DeepAR (a DistributionOutput model) has no equivalent for.
LIKELIHOOD_OUTPUTS: dict[str, str | None] = {
    "gaussian": "NormalOutput",
    "student-T": "StudentTOutput",
    "negative-binomial": "NegativeBinomialOutput",
    "beta": "BetaOutput",
    "deterministic-L1": None,
}

# SageMaker accepts an optional integer followed by M, W, D, H or min.
_SAGEMAKER_FREQ = re.compile(r"^(\d+)?(M|W|D|H|min)$")

# Local-only fields that SageMaker's built-in DeepAR does not accept.
_LOCAL_ONLY = ("num_batches_per_epoch", "seed")


@dataclass
class DeepARConfig:
    """DeepAR hyperparameters; the defaults train in well under a minute on 2 CPU cores."""

    prediction_length: int = 12
    context_length: int = 48
    time_freq: str = "5min"
    epochs: int = 5
    num_cells: int = 40
    num_layers: int = 2
    likelihood: str = "student-T"
    dropout_rate: float = 0.1
    learning_rate: float = 1e-3
    mini_batch_size: int = 32
    early_stopping_patience: int | None = None
    embedding_dimension: int = 10
    num_eval_samples: int = 100
    num_batches_per_epoch: int = 20
    seed: int = 42

    @classmethod
    def from_overrides(cls, base: dict[str, Any], overrides: dict[str, Any] | None) -> DeepARConfig:
        """Build a validated config from ``base`` values updated by ``overrides``.

        Raises:
            ConfigError: an override names no hyperparameter, or a value is out of range.
        """
        values = dict(base)
        known = {f.name for f in dataclasses.fields(cls)}
        for key, value in (overrides or {}).items():
            if key not in known:
                raise ConfigError(
                    f"unknown DeepAR hyperparameter {key!r}; use one of {sorted(known)}"
                )
            values[key] = value
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        """Raise ConfigError naming the first hyperparameter that is out of its valid range."""
        _check_int("prediction_length", self.prediction_length, 1)
        _check_int("context_length", self.context_length, 1)
        _check_int("epochs", self.epochs, 1)
        _check_int("num_cells", self.num_cells, 30, 200)
        _check_int("num_layers", self.num_layers, 1, 8)
        _check_int("mini_batch_size", self.mini_batch_size, 1)
        _check_int("embedding_dimension", self.embedding_dimension, 1)
        _check_int("num_eval_samples", self.num_eval_samples, 1)
        _check_int("num_batches_per_epoch", self.num_batches_per_epoch, 1)
        _check_int("seed", self.seed, 0)
        if self.early_stopping_patience is not None:
            _check_int("early_stopping_patience", self.early_stopping_patience, 1)
        _check_float("dropout_rate", self.dropout_rate, 0.0, 1.0, upper_open=True)
        _check_float("learning_rate", self.learning_rate, 1e-4, 0.1)
        if self.likelihood not in LIKELIHOOD_OUTPUTS:
            raise ConfigError(
                f"likelihood={self.likelihood!r} is invalid; use one of {list(LIKELIHOOD_OUTPUTS)}"
            )
        _pandas_offset(self.time_freq)

    def to_sagemaker_hyperparameters(self) -> dict[str, str]:
        """Return the hyperparameters as the string map that CreateTrainingJob expects.

        Raises:
            ConfigError: ``time_freq`` has no SageMaker equivalent (seconds, for example).
        """
        self.validate()
        values = {
            key: value
            for key, value in dataclasses.asdict(self).items()
            if key not in _LOCAL_ONLY and value is not None
        }
        values["time_freq"] = sagemaker_time_freq(self.time_freq)
        return {key: str(value) for key, value in values.items()}

    def to_gluonts_estimator_kwargs(self) -> dict[str, Any]:
        """Return keyword arguments for ``gluonts.torch.DeepAREstimator``.

        ``freq``, ``trainer_kwargs`` and the categorical-feature arguments depend on the
        data and the work folder, so the trainer adds them.

        Raises:
            ConfigError: the likelihood has no GluonTS distribution output.
        """
        self.validate()
        output_name = LIKELIHOOD_OUTPUTS[self.likelihood]
        if output_name is None:
            raise ConfigError(
                f"likelihood={self.likelihood!r} has no GluonTS torch DeepAR equivalent; "
                "use gaussian, student-T, negative-binomial or beta for local training"
            )
        from gluonts.torch import distributions

        return {
            "prediction_length": self.prediction_length,
            "context_length": self.context_length,
            "num_layers": self.num_layers,
            "hidden_size": self.num_cells,
            "lr": self.learning_rate,
            "dropout_rate": self.dropout_rate,
            "batch_size": self.mini_batch_size,
            "num_batches_per_epoch": self.num_batches_per_epoch,
            "num_parallel_samples": self.num_eval_samples,
            "distr_output": getattr(distributions, output_name)(),
        }

    def to_params(self) -> dict[str, str]:
        """Return every field, local-only ones included, as strings for MLflow params."""
        return {key: str(value) for key, value in dataclasses.asdict(self).items()}


def sagemaker_time_freq(freq: str) -> str:
    """Convert a pandas frequency such as ``5min``, ``h`` or ``W-SUN`` to SageMaker's form.

    Raises:
        ConfigError: the frequency is finer than a minute or is not a multiple of
            a minute, hour, day, week or month.
    """
    offset = _pandas_offset(freq)
    name = offset.name.split("-")[0]
    aliases = {"min": "min", "h": "H", "D": "D", "W": "W", "ME": "M", "MS": "M"}
    unit = aliases.get(name)
    if unit is None:
        raise ConfigError(
            f"time_freq={freq!r} has no SageMaker DeepAR equivalent; "
            "SageMaker supports multiples of min, H, D, W and M"
        )
    result = f"{offset.n}{unit}" if offset.n != 1 else unit
    if not _SAGEMAKER_FREQ.match(result):
        raise ConfigError(f"time_freq={freq!r} converts to {result!r}, which SageMaker rejects")
    return result


def _pandas_offset(freq: str):
    import pandas as pd

    try:
        return pd.tseries.frequencies.to_offset(freq)
    except (ValueError, TypeError):
        raise ConfigError(
            f"time_freq={freq!r} is not a pandas frequency; use for example '5min', 'h' or 'D'"
        ) from None


def _check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}={value!r} is not an integer; set a whole number")
    if value < minimum or (maximum is not None and value > maximum):
        valid = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ConfigError(f"{name}={value} is out of range; valid values are {valid}")


def _check_float(
    name: str, value: object, minimum: float, maximum: float, upper_open: bool = False
) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name}={value!r} is not a number")
    above = value >= maximum if upper_open else value > maximum
    if value < minimum or above:
        bracket = ")" if upper_open else "]"
        raise ConfigError(
            f"{name}={value} is out of range; valid values are in [{minimum}, {maximum}{bracket}"
        )

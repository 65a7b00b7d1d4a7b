"""Errors raised by the forecasting models, their output format and the registry."""

from __future__ import annotations

from saodf.errors import SaodfError


class ModelError(SaodfError):
    """A model could not be trained, loaded or asked for a forecast."""


class ForecastFormatError(ModelError):
    """A forecast line that breaks the SageMaker DeepAR output format."""


class ModelInputError(ModelError):
    """A DeepAR record or prepared dataset that a model cannot forecast from."""


class RegistryError(ModelError):
    """A registered model, version or alias that is missing or inconsistent."""

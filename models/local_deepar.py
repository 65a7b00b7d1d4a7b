"""Local DeepAR training and prediction with ``gluonts.torch.DeepAREstimator`` on CPU."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.config import DeepARConfig
from models.errors import ModelInputError

logger = logging.getLogger(__name__)


@dataclass
class TrainedDeepAR:
    """A trained GluonTS predictor and the wall-clock seconds its training took."""

    predictor: Any
    training_seconds: float
    cardinality: list[int] | None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy, torch and Lightning so that a rerun trains the same weights."""
    import lightning.pytorch as pl
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    pl.seed_everything(seed, workers=True, verbose=False)


def infer_cardinality(records: Sequence[dict]) -> list[int] | None:
    """Return one cardinality per ``cat`` position (max value + 1), or None without ``cat``.

    Raises:
        ModelInputError: some records have ``cat`` and others do not, or lengths differ.
    """
    with_cat = [r for r in records if "cat" in r]
    if not with_cat:
        return None
    if len(with_cat) != len(records):
        raise ModelInputError(
            f"{len(with_cat)} of {len(records)} records have 'cat'; give every series a cat or none"
        )
    widths = {len(r["cat"]) for r in with_cat}
    if len(widths) != 1:
        raise ModelInputError(f"records have cat lists of lengths {sorted(widths)}; use one length")
    cats = np.asarray([r["cat"] for r in with_cat], dtype=int)
    if (cats < 0).any():
        raise ModelInputError("cat values must be 0-based non-negative integers")
    return [int(v) + 1 for v in cats.max(axis=0)]


def to_gluonts_entries(
    records: Sequence[dict], freq: str, cardinality: list[int] | None
) -> list[dict]:
    """Convert DeepAR records to GluonTS data entries with ``pd.Period`` starts.

    Records without ``cat`` get category 0 when the model was trained with ``cat``.

    Raises:
        ModelInputError: a start cannot be parsed, or a cat is beyond the trained cardinality.
    """
    import pandas as pd

    entries = []
    for index, record in enumerate(records):
        try:
            start = pd.Period(pd.Timestamp(record["start"]), freq=freq)
        except (ValueError, TypeError) as exc:
            raise ModelInputError(
                f"series {index} start={record['start']!r} is invalid for freq={freq!r}: {exc}"
            ) from None
        entry = {"start": start, "target": np.asarray(record["target"], dtype=np.float32)}
        if cardinality is not None:
            cat = list(record.get("cat", [0] * len(cardinality)))
            if len(cat) != len(cardinality) or any(
                not 0 <= c < limit for c, limit in zip(cat, cardinality, strict=True)
            ):
                raise ModelInputError(
                    f"series {index} cat={cat} does not fit the trained cardinality {cardinality}; "
                    "retrain with this category or use a known one"
                )
            entry["feat_static_cat"] = np.asarray(cat, dtype=np.int64)
        entries.append(entry)
    return entries


def train_deepar(
    records: Sequence[dict], freq: str, config: DeepARConfig, workdir: Path
) -> TrainedDeepAR:
    """Train DeepAR on the train channel and return the predictor and training seconds.

    ``cat`` becomes the static categorical feature when every record has it. Lightning
    writes its checkpoints under ``workdir``.

    NOTE: ``dynamic_feat`` is ignored locally, so the local model uses fewer inputs
    than SageMaker DeepAR trained on the same channel.
    """
    from gluonts.torch import DeepAREstimator
    from lightning.pytorch.callbacks import EarlyStopping

    if not records:
        raise ModelInputError("train channel is empty; DeepAR needs at least one series")
    cardinality = infer_cardinality(records)
    entries = to_gluonts_entries(records, freq, cardinality)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)

    callbacks = []
    if config.early_stopping_patience is not None:
        callbacks.append(
            EarlyStopping(monitor="train_loss", mode="min", patience=config.early_stopping_patience)
        )
    trainer_kwargs = {
        "max_epochs": config.epochs,
        "default_root_dir": str(workdir),
        "accelerator": "cpu",
        "devices": 1,
        "deterministic": True,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "logger": False,
        "callbacks": callbacks,
    }
    estimator_kwargs = config.to_gluonts_estimator_kwargs()
    if cardinality is not None:
        estimator_kwargs.update(
            num_feat_static_cat=len(cardinality),
            cardinality=cardinality,
            embedding_dimension=[min(config.embedding_dimension, c) for c in cardinality],
        )
    estimator = DeepAREstimator(freq=freq, trainer_kwargs=trainer_kwargs, **estimator_kwargs)

    seed_everything(config.seed)
    started = time.perf_counter()
    predictor = estimator.train(entries, cache_data=True)
    seconds = time.perf_counter() - started
    logger.info(
        "trained DeepAR on %d series at freq %s in %.1f s (epochs=%d, workdir %s)",
        len(entries),
        freq,
        seconds,
        config.epochs,
        workdir,
    )
    return TrainedDeepAR(predictor=predictor, training_seconds=seconds, cardinality=cardinality)


def predict_deepar(
    predictor: Any,
    records: Sequence[dict],
    freq: str,
    cardinality: list[int] | None,
    quantiles: Sequence[str] = ("0.1", "0.5", "0.9"),
    seed: int | None = 0,
) -> list[dict]:
    """Forecast ``prediction_length`` steps after each record's target, in input order.

    Sampling is seeded with ``seed`` so that equal inputs give equal forecasts.

    Returns:
        DeepAR output objects with ``mean`` and the requested ``quantiles``.
    """
    if not records:
        return []
    entries = to_gluonts_entries(records, freq, cardinality)
    if seed is not None:
        import torch

        torch.manual_seed(seed)
    outputs = []
    for forecast in predictor.predict(entries):
        outputs.append(
            {
                "mean": np.asarray(forecast.mean, dtype=float).tolist(),
                "quantiles": {
                    key: np.asarray(forecast.quantile(float(key)), dtype=float).tolist()
                    for key in quantiles
                },
            }
        )
    return outputs

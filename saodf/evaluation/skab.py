"""SKAB's outlier detection protocol: point-wise F1, false alarm rate and missing alarm rate.

The Skoltech Anomaly Benchmark (github.com/waico/SKAB, evaluation from its ``tsad``
package) scores every row of every experiment as one binary decision and pools the rows
of all experiments before counting:

- F1 is the harmonic mean of precision ``TP / (TP + FP)`` and recall ``TP / (TP + FN)``;
- the false alarm rate (FAR) is ``FP / (FP + TN)``;
- the missing alarm rate (MAR) is ``FN / (FN + TP)``.

Rates are fractions here; the SKAB leaderboard prints FAR and MAR in percent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from saodf.evaluation.nab import ScoringError


@dataclass(frozen=True)
class OutlierMetrics:
    """Pooled confusion counts and SKAB's outlier metrics; a rate is NaN when undefined."""

    true_positives: int
    false_positives: int
    false_negatives: int
    true_negatives: int
    precision: float
    recall: float
    f1: float
    false_alarm_rate: float
    missing_alarm_rate: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def outlier_metrics(
    labels: Sequence[Sequence[int] | np.ndarray], predictions: Sequence[Sequence[bool] | np.ndarray]
) -> OutlierMetrics:
    """Return SKAB's outlier metrics of 0/1 predictions against 0/1 labels, pooled over files.

    ``labels`` and ``predictions`` hold one array per experiment, each with one value per row.
    F1 is 0 when there is no true positive (SKAB's null detector scores F1 0).
    """
    if len(labels) != len(predictions):
        raise ScoringError(
            f"got {len(predictions)} prediction arrays for {len(labels)} label arrays"
        )
    counts = np.zeros(4, dtype=np.int64)
    for index, (truth, predicted) in enumerate(zip(labels, predictions, strict=True)):
        truth = np.asarray(truth).astype(bool)
        predicted = np.asarray(predicted).astype(bool)
        if truth.shape != predicted.shape:
            raise ScoringError(
                f"experiment {index} has {truth.size} labels but {predicted.size} predictions; "
                "pass one prediction per labelled row"
            )
        counts += [
            np.sum(truth & predicted),
            np.sum(~truth & predicted),
            np.sum(truth & ~predicted),
            np.sum(~truth & ~predicted),
        ]
    tp, fp, fn, tn = (int(c) for c in counts)
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return OutlierMetrics(
        true_positives=tp,
        false_positives=fp,
        false_negatives=fn,
        true_negatives=tn,
        precision=precision,
        recall=recall,
        f1=f1,
        false_alarm_rate=_ratio(fp, fp + tn),
        missing_alarm_rate=_ratio(fn, fn + tp),
    )

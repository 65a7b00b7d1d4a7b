"""SKAB outlier metrics against hand-computed confusion counts."""

import math

import pytest

from saodf.evaluation.nab import ScoringError
from saodf.evaluation.skab import outlier_metrics


def test_outlier_metrics_single_file():
    # TP 2 (rows 2, 3), FP 1 (row 1), FN 1 (row 4), TN 2 (rows 0, 5).
    result = outlier_metrics([[0, 0, 1, 1, 1, 0]], [[0, 1, 1, 1, 0, 0]])
    assert (result.true_positives, result.false_positives) == (2, 1)
    assert (result.false_negatives, result.true_negatives) == (1, 2)
    assert result.f1 == pytest.approx(2 / 3)
    assert result.false_alarm_rate == pytest.approx(1 / 3)
    assert result.missing_alarm_rate == pytest.approx(1 / 3)


def test_outlier_metrics_pools_files():
    # File 1: TP 1, FN 1. File 2: FP 1, TN 3. Pooled precision 1/2, recall 1/2.
    result = outlier_metrics([[1, 1], [0, 0, 0, 0]], [[1, 0], [1, 0, 0, 0]])
    assert result.precision == pytest.approx(0.5)
    assert result.recall == pytest.approx(0.5)
    assert result.f1 == pytest.approx(0.5)
    assert result.false_alarm_rate == pytest.approx(0.25)
    assert result.missing_alarm_rate == pytest.approx(0.5)


def test_null_detector_scores():
    result = outlier_metrics([[0, 1, 1]], [[0, 0, 0]])
    assert result.f1 == 0.0
    assert result.false_alarm_rate == 0.0
    assert result.missing_alarm_rate == 1.0
    assert math.isnan(result.precision)


def test_perfect_detector_scores():
    result = outlier_metrics([[0, 1, 1, 0]], [[0, 1, 1, 0]])
    assert result.f1 == 1.0
    assert result.false_alarm_rate == 0.0
    assert result.missing_alarm_rate == 0.0


def test_length_mismatch_rejected():
    with pytest.raises(ScoringError, match="3 labels but 2 predictions"):
        outlier_metrics([[0, 1, 1]], [[0, 1]])

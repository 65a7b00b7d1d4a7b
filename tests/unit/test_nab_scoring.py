"""NAB scorer against hand-computed cases.

Hand computation uses S(p) = 2 / (1 + exp(5 p)) - 1, so S(-1) = 0.9866143,
S(-0.1) / S(-1) = 0.2442 / 0.9866 = 0.2482415 and S(1/3) = -0.6822618.
A file of 100 rows has a probationary period of floor(0.15 * 100) = 15 rows.
"""

import math

import numpy as np
import pandas as pd
import pytest

from saodf.evaluation.nab import (
    PROFILES,
    FileLabels,
    ScoringError,
    optimise_threshold,
    probationary_length,
    scaled_sigmoid,
    score_corpus,
    score_file,
    windows_from_labels,
    windows_from_timestamps,
)


def _detections(rows: int, *indices: int) -> np.ndarray:
    flags = np.zeros(rows, dtype=bool)
    flags[list(indices)] = True
    return flags


FILE = FileLabels("one-window", 100, [(50, 59)])


def test_scaled_sigmoid_values():
    assert scaled_sigmoid(-1.0) == pytest.approx(0.9866143, abs=1e-7)
    assert scaled_sigmoid(0.0) == 0.0
    assert scaled_sigmoid(1.0) == pytest.approx(-0.9866143, abs=1e-7)
    assert scaled_sigmoid(3.0) == -1.0


def test_probationary_length_cap():
    assert probationary_length(100) == 15
    assert probationary_length(22695) == 750


def test_detection_at_window_start_scores_tp_weight():
    result = score_corpus([FILE], [_detections(100, 50)], "standard")
    assert result.raw == pytest.approx(1.0)
    assert result.score == pytest.approx(100.0)


def test_null_detector_scores_zero():
    result = score_corpus([FILE], [_detections(100)], "standard")
    assert result.raw == pytest.approx(-1.0)
    assert result.score == pytest.approx(0.0)


def test_late_detection_in_window():
    # Row 59 is the window's last row: p = -(59 - 59 + 1) / 10 = -0.1.
    result = score_corpus([FILE], [_detections(100, 59)], "standard")
    assert result.raw == pytest.approx(0.2482415, abs=1e-7)
    # 100 * (0.2482415 + 1) / (1 + 1)
    assert result.score == pytest.approx(62.41208, abs=1e-5)


def test_only_earliest_detection_in_window_counts():
    result = score_file(FILE, _detections(100, 55, 50, 58), PROFILES["standard"])
    assert result.raw == pytest.approx(1.0)
    assert result.true_positives == 1
    assert result.false_positives == 0


def test_false_positives_before_and_after_window():
    # Row 20 precedes every window: -0.11. Row 62: p = (62 - 59) / (10 - 1) = 1/3,
    # 0.11 * S(1/3) = -0.0750488. Row 5 is probationary and ignored.
    result = score_file(FILE, _detections(100, 5, 20, 50, 62), PROFILES["standard"])
    assert result.raw == pytest.approx(1.0 - 0.11 - 0.0750488, abs=1e-6)
    assert result.false_positives == 2


def test_false_positive_far_after_window():
    # Row 90: p = 31 / 9 >= 3, so the full fp weight is charged.
    result = score_file(FILE, _detections(100, 90), PROFILES["reward_low_FP_rate"])
    assert result.raw == pytest.approx(-1.0 - 0.22)


def test_missed_window_under_low_fn_profile():
    result = score_corpus([FILE], [_detections(100, 59)], "reward_low_FN_rate")
    # null -2, perfect 1, raw 0.2482415: 100 * 2.2482415 / 3.
    assert result.null == pytest.approx(-2.0)
    assert result.score == pytest.approx(74.94138, abs=1e-5)


def test_corpus_sums_files_before_normalising():
    second = FileLabels("no-window", 100, [])
    result = score_corpus([FILE, second], [_detections(100, 50), _detections(100, 30)])
    assert result.raw == pytest.approx(1.0 - 0.11)
    assert result.score == pytest.approx(100 * (0.89 + 1) / 2)


def test_window_in_probation_not_counted():
    early = FileLabels("early", 100, [(2, 8), (50, 59)])
    result = score_corpus([early], [_detections(100)])
    assert result.files[0].windows == 1
    assert result.null == pytest.approx(-1.0)


def test_optimise_threshold_picks_best():
    scores = np.zeros(100)
    scores[30] = 0.9  # false positive, costs 0.11
    scores[52] = 0.5  # true positive at p = -0.8
    result = optimise_threshold([FILE], [scores], "standard")
    assert result.threshold == pytest.approx(0.5)
    expected_raw = scaled_sigmoid(-0.8) / scaled_sigmoid(-1.0) - 0.11
    assert result.raw == pytest.approx(expected_raw)


def test_optimise_threshold_without_detections_is_null():
    scores = np.zeros(100)
    scores[30] = 1.0
    result = optimise_threshold([FILE], [scores], "standard")
    assert math.isinf(result.threshold)
    assert result.score == pytest.approx(0.0)


def test_windows_from_timestamps_inclusive():
    stamps = pd.date_range("2024-01-01", periods=10, freq="5min", tz="UTC")
    windows = [("2024-01-01 00:10:00", "2024-01-01 00:20:00")]
    assert windows_from_timestamps(stamps, windows) == [(2, 4)]


def test_windows_from_labels_runs():
    assert windows_from_labels([0, 1, 1, 0, 0, 1]) == [(1, 2), (5, 5)]


def test_overlapping_windows_rejected():
    with pytest.raises(ScoringError, match="overlap"):
        FileLabels("bad", 100, [(10, 20), (15, 30)])


def test_detection_length_mismatch_rejected():
    with pytest.raises(ScoringError, match="100 rows but 3 detections"):
        score_corpus([FILE], [np.zeros(3, dtype=bool)])


def test_unknown_profile_rejected():
    with pytest.raises(ScoringError, match="profile 'strict' is unknown"):
        score_corpus([FILE], [_detections(100)], "strict")


def test_corpus_without_windows_rejected():
    with pytest.raises(ScoringError, match="no scorable anomaly window"):
        score_corpus([FileLabels("empty", 100, [])], [_detections(100)])

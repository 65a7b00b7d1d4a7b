from datetime import datetime, timezone

import numpy as np
import pytest

from saodf import drift
from saodf.errors import ConfigError

END = datetime(2014, 2, 1, tzinfo=timezone.utc)


def _series(seed: int, size: int = 500, level: float = 50.0):
    return np.random.default_rng(seed).normal(level, 5.0, size)


def test_psi_same_distribution_small():
    # Below 0.1 is the usual reading of "no significant change".
    assert drift.population_stability_index(_series(1), _series(2)) < 0.1


def test_psi_level_shift_large():
    assert drift.population_stability_index(_series(1), _series(2, level=65.0)) > 1.0


def test_psi_constant_reference_shifted():
    assert drift.population_stability_index(np.full(100, 3.0), np.full(100, 4.0)) > 1.0


def test_psi_rejects_empty_sample():
    with pytest.raises(ValueError, match="finite values"):
        drift.population_stability_index([np.nan], [1.0])


def test_ks_detects_shift():
    statistic, pvalue = drift.ks_statistic(_series(1), _series(2, level=60.0))
    assert statistic > 0.5
    assert pvalue < 1e-6


def test_residual_score_in_reference_sd():
    reference = [0.0, 2.0] * 50  # standard deviation 1
    assert drift.residual_score(reference, [5.0, 5.0], [2.0, 2.0]) == pytest.approx(3.0)


def test_residual_score_without_overlap():
    assert drift.residual_score([0.0, 2.0], [np.nan], [1.0]) is None


def test_level_shift_triggers_retraining():
    shifted = drift.evaluate_device("dev-1", _series(1), _series(2, level=65.0))
    steady = drift.evaluate_device("dev-2", _series(3), _series(4))
    request = drift.retrain_request([shifted, steady], END)
    assert shifted.drifted
    assert not steady.drifted
    assert request["devices"] == ["dev-1"]
    assert request["window_id"].startswith("drift-")
    assert request["end"] == "2014-02-01T00:00:00Z"


def test_no_shift_no_retraining():
    results = [drift.evaluate_device(f"dev-{i}", _series(i), _series(i + 10)) for i in range(3)]
    assert drift.retrain_request(results, END) is None


def test_residual_alone_triggers():
    result = drift.evaluate_device("dev-1", _series(1), _series(2), residual=4.0)
    assert result.drifted
    assert result.reasons == ["residual 4.00 sd >= 3.0"]


def test_too_few_points_not_scored():
    result = drift.evaluate_device("dev-1", _series(1, size=10), _series(2, level=90.0, size=10))
    assert result.psi is None
    assert not result.drifted


def test_retrain_request_is_a_window_event():
    from saodf_airflow.triggers import parse_window_event

    shifted = drift.evaluate_device("dev-1", _series(1), _series(2, level=65.0))
    event = parse_window_event(drift.retrain_request([shifted], END))
    assert event["devices"] == ["dev-1"]


def test_limits_reject_non_positive():
    with pytest.raises(ConfigError, match="psi=0"):
        drift.DriftLimits(psi=0)

import math

import numpy as np
import pytest

from models.errors import ModelInputError
from models.metrics import (
    evaluate_forecasts,
    interval_coverage,
    mase,
    quantile_loss,
    seasonal_error,
    weighted_quantile_loss,
)

NAN = math.nan


def test_quantile_loss_hand_computed():
    # y = [10, 20], q = [12, 15], level 0.1:
    # point 1: y <= q, |(10 - 12) * (1 - 0.1)| = 1.8; point 2: y > q, |(20 - 15) * (0 - 0.1)| = 0.5
    assert quantile_loss(np.array([10.0, 20.0]), np.array([12.0, 15.0]), 0.1) == pytest.approx(
        2 * 2.3
    )


def test_quantile_loss_median_is_abs_error():
    assert quantile_loss(np.array([10.0, 20.0]), np.array([12.0, 15.0]), 0.5) == pytest.approx(7.0)


def test_wql_hand_computed():
    actuals = [np.array([10.0, 20.0]), np.array([30.0])]
    forecasts = [np.array([12.0, 15.0]), np.array([33.0])]
    # level 0.9: |(-2) * 0.1| + |5 * -0.9| + |(-3) * 0.1| = 0.2 + 4.5 + 0.3 = 5.0, times 2 = 10
    assert weighted_quantile_loss(actuals, forecasts, 0.9) == pytest.approx(10.0 / 60.0)


def test_wql_skips_nan_actuals():
    actuals = [np.array([10.0, NAN, 20.0])]
    forecasts = [np.array([12.0, 1000.0, 15.0])]
    assert weighted_quantile_loss(actuals, forecasts, 0.5) == pytest.approx(7.0 / 30.0)


def test_wql_all_nan_is_nan():
    assert math.isnan(weighted_quantile_loss([np.array([NAN])], [np.array([1.0])], 0.5))


def test_seasonal_error_hand_computed():
    # lag 2 diffs: |3-1|, |5-2|, |4-3| -> mean 2
    assert seasonal_error(np.array([1.0, 2.0, 3.0, 5.0, 4.0]), 2) == pytest.approx(2.0)


def test_seasonal_error_skips_nan_pairs():
    # lag 1 pairs: (1, nan) and (nan, 4) drop out, |6-4| = 2 remains
    assert seasonal_error(np.array([1.0, NAN, 4.0, 6.0]), 1) == pytest.approx(2.0)


def test_seasonal_error_short_series_uses_lag_one():
    assert seasonal_error(np.array([1.0, 3.0]), 24) == pytest.approx(2.0)


def test_seasonal_error_rejects_zero_seasonality():
    with pytest.raises(ModelInputError, match=r"seasonality=0 is invalid"):
        seasonal_error(np.array([1.0, 2.0]), 0)


def test_mase_hand_computed():
    insample = np.array([1.0, 2.0, 3.0, 5.0, 4.0])  # seasonal error 2 at m=2
    actual = np.array([6.0, 8.0])
    forecast = np.array([5.0, 5.0])  # MAE (1 + 3) / 2 = 2
    assert mase([actual], [forecast], [insample], 2) == pytest.approx(1.0)


def test_mase_averages_series():
    insamples = [np.array([0.0, 1.0, 2.0]), np.array([0.0, 2.0, 4.0])]  # scales 1 and 2 at m=1
    actuals = [np.array([3.0]), np.array([6.0])]
    forecasts = [np.array([2.0]), np.array([2.0])]  # scores 1 and 2
    assert mase(actuals, forecasts, insamples, 1) == pytest.approx(1.5)


def test_mase_per_series_seasonality():
    insamples = [np.array([1.0, 2.0, 3.0, 5.0, 4.0]), np.array([0.0, 2.0, 4.0])]
    actuals = [np.array([6.0, 8.0]), np.array([6.0, 6.0])]
    forecasts = [np.array([5.0, 5.0]), np.array([2.0, 2.0])]
    assert mase(actuals, forecasts, insamples, [2, 1]) == pytest.approx(1.5)


def test_mase_skips_nan_actuals():
    insample = np.array([0.0, 1.0, 2.0])
    assert mase([np.array([NAN, 3.0])], [np.array([100.0, 2.0])], [insample], 1) == pytest.approx(
        1.0
    )


def test_mase_constant_insample_is_nan():
    assert math.isnan(mase([np.array([1.0])], [np.array([2.0])], [np.array([5.0, 5.0, 5.0])], 1))


def test_coverage_hand_computed():
    actuals = [np.array([1.0, 5.0, 10.0, NAN])]
    lowers = [np.array([0.0, 6.0, 10.0, 0.0])]
    uppers = [np.array([2.0, 7.0, 12.0, 0.0])]
    # inside: 1 (yes), 5 (no), 10 (yes, bound included); NaN skipped
    assert interval_coverage(actuals, lowers, uppers) == pytest.approx(2 / 3)


def test_metrics_reject_shape_mismatch():
    with pytest.raises(
        ModelInputError, match=r"actual shape \(2,\) differs from forecast shape \(3,\)"
    ):
        weighted_quantile_loss([np.zeros(2)], [np.zeros(3)], 0.5)


def test_metrics_reject_count_mismatch():
    with pytest.raises(ModelInputError, match=r"got 2 forecasts for 1 actual series"):
        weighted_quantile_loss([np.zeros(2)], [np.zeros(2), np.zeros(2)], 0.5)


def test_evaluate_forecasts_keys_and_values():
    forecast = {
        "mean": [5.0, 5.0],
        "quantiles": {"0.1": [4.0, 4.0], "0.5": [5.0, 5.0], "0.9": [7.0, 7.0]},
    }
    result = evaluate_forecasts(
        [np.array([6.0, 8.0])], [forecast], [np.array([1.0, 2.0, 3.0, 5.0, 4.0])], 2
    )
    assert sorted(result) == ["coverage_80", "mase", "mean_wql", "wql_0.1", "wql_0.5", "wql_0.9"]
    # level 0.5: sum of absolute errors 1 + 3 = 4
    assert result["wql_0.5"] == pytest.approx(4.0 / 14.0)
    # level 0.1: y > q at both points, 2 * (0.1 * 2 + 0.1 * 4) = 1.2
    assert result["wql_0.1"] == pytest.approx(1.2 / 14.0)
    # level 0.9: 6 <= 7 gives |(-1) * 0.1| = 0.1; 8 > 7 gives |1 * -0.9| = 0.9; times 2 = 2.0
    assert result["wql_0.9"] == pytest.approx(2.0 / 14.0)
    assert result["mean_wql"] == pytest.approx((1.2 + 4.0 + 2.0) / 3 / 14.0)
    assert result["mase"] == pytest.approx(1.0)
    assert result["coverage_80"] == pytest.approx(0.5)

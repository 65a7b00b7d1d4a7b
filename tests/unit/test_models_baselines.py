import math

import numpy as np
import pytest

from models.baselines import fill_gaps, forecast_baseline, season_length_for
from models.errors import ModelInputError


@pytest.mark.parametrize(
    ("freq", "expected"),
    [
        ("1s", 60),
        ("15s", 4),
        ("min", 1440),
        ("5min", 288),
        ("h", 24),
        ("D", 7),
        ("W", 52),
        ("MS", 12),
    ],
)
def test_season_length_per_freq(freq, expected):
    assert season_length_for(freq) == expected


def test_season_length_capped_by_series():
    assert season_length_for("5min", 100) == 50


def test_season_length_at_least_one():
    assert season_length_for("h", 1) == 1


def test_fill_gaps_interpolates_and_extends():
    filled = fill_gaps(np.array([math.nan, 1.0, math.nan, 3.0, math.nan]))
    assert filled.tolist() == [1.0, 1.0, 2.0, 3.0, 3.0]


def test_fill_gaps_rejects_all_nan():
    with pytest.raises(ModelInputError, match=r"target has no known value"):
        fill_gaps(np.array([math.nan, math.nan]))


def _records():
    pattern = np.tile([1.0, 2.0, 3.0, 4.0], 6)
    return [
        {"start": "2024-01-01 00:00:00", "target": pattern},
        {"start": "2024-01-01 00:00:00", "target": np.arange(6.0)},
    ]


def test_seasonal_naive_output_shape():
    forecasts = forecast_baseline(_records(), horizon=5, season_length=4)
    assert len(forecasts) == 2
    assert sorted(forecasts[0]["quantiles"]) == ["0.1", "0.5", "0.9"]
    assert all(len(values) == 5 for values in forecasts[0]["quantiles"].values())
    assert len(forecasts[0]["mean"]) == 5


def test_seasonal_naive_repeats_last_season():
    forecasts = forecast_baseline(_records(), horizon=5, season_length=4)
    assert forecasts[0]["mean"] == [1.0, 2.0, 3.0, 4.0, 1.0]


def test_seasonal_naive_caps_season_per_series():
    # 6 points cap the season at 3, so the last 3 values repeat.
    forecasts = forecast_baseline(_records(), horizon=4, season_length=4)
    assert forecasts[1]["mean"] == [3.0, 4.0, 5.0, 3.0]


def test_seasonal_naive_keeps_input_order():
    records = list(reversed(_records()))
    forecasts = forecast_baseline(records, horizon=2, season_length=4)
    assert forecasts[0]["mean"] == [3.0, 4.0]
    assert forecasts[1]["mean"] == [1.0, 2.0]


def test_seasonal_naive_quantiles_ordered():
    noisy = {"start": "2024-01-01", "target": np.random.default_rng(0).normal(10, 1, 40)}
    (forecast,) = forecast_baseline([noisy], horizon=3, season_length=4)
    quantiles = forecast["quantiles"]
    assert all(lo <= mid for lo, mid in zip(quantiles["0.1"], quantiles["0.5"], strict=True))
    assert all(mid <= hi for mid, hi in zip(quantiles["0.5"], quantiles["0.9"], strict=True))


def test_seasonal_naive_fills_gaps():
    record = {"start": "2024-01-01", "target": np.array([1.0, 2.0, 1.0, math.nan])}
    (forecast,) = forecast_baseline([record], horizon=2, season_length=2)
    assert forecast["mean"] == [1.0, 1.0]


def test_auto_ets_output_shape():
    (forecast,) = forecast_baseline(_records()[:1], horizon=3, season_length=4, model="auto_ets")
    assert len(forecast["quantiles"]["0.9"]) == 3


def test_baseline_rejects_short_series():
    with pytest.raises(
        ModelInputError, match=r"series 0 has 1 points; a baseline needs at least 2"
    ):
        forecast_baseline([{"start": "2024-01-01", "target": np.array([1.0])}], 2, 4)


def test_baseline_rejects_unknown_model():
    with pytest.raises(ModelInputError, match=r"baseline model 'arima' is unknown"):
        forecast_baseline(_records(), 2, 4, model="arima")

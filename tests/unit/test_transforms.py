"""Tests of the per-device transforms with the worked preprocessing examples."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from etl.transforms import (
    detect_outliers,
    impute,
    infer_frequency,
    order_and_deduplicate,
    prepare_series,
    remove_outliers,
    resample,
    to_utc,
)
from saodf.errors import ConfigError, DatasetError

READINGS_40_TO_60 = [40, 42, 45, 47, 50, 52, 55, 57, 60, 58, 53, 48, 44, 41, 46, 51, 56, 59, 49, 54]


def _utc(*texts: str) -> pd.DatetimeIndex:
    return pd.DatetimeIndex([pd.Timestamp(text, tz="UTC") for text in texts])


def _series(index: pd.DatetimeIndex, values: list[float]) -> pd.Series:
    return pd.Series(values, index=index, dtype="float64")


# ---------------------------------------------------------------------------
# Outliers


def test_zscore_flags_105():
    values = pd.Series([*READINGS_40_TO_60, 105.0])
    mask = detect_outliers(values)
    assert mask.iloc[-1]
    assert not mask.iloc[:-1].any()


def test_zscore_threshold_respected():
    values = pd.Series([*READINGS_40_TO_60, 105.0])
    assert not detect_outliers(values, threshold=10).any()


def test_mad_flags_105():
    values = pd.Series([*READINGS_40_TO_60, 105.0])
    mask = detect_outliers(values, method="mad")
    assert mask.iloc[-1]
    assert mask.sum() == 1


def test_mad_modified_zscore_value():
    # median 3, MAD 1: the modified z-score of 8.5 is 0.6745 * 5.5 = 3.71.
    values = pd.Series([1.0, 2.0, 3.0, 4.0, 5.0, 3.0, 8.5])
    assert detect_outliers(values, threshold=3.7, method="mad").iloc[-1]
    assert not detect_outliers(values, threshold=3.72, method="mad").iloc[-1]


def test_constant_series_flags_nothing():
    values = pd.Series([7.0] * 30)
    assert not detect_outliers(values).any()
    assert not detect_outliers(values, method="mad").any()


def test_outliers_ignore_nan():
    values = pd.Series([*READINGS_40_TO_60, float("nan"), 105.0])
    mask = detect_outliers(values)
    assert not mask.iloc[-2]
    assert mask.iloc[-1]


def test_remove_outliers_sets_nan():
    cleaned, mask = remove_outliers(pd.Series([*READINGS_40_TO_60, 105.0]))
    assert math.isnan(cleaned.iloc[-1])
    assert cleaned.iloc[0] == 40.0
    assert mask.sum() == 1


def test_outlier_method_invalid():
    with pytest.raises(
        ConfigError, match="outlier method 'iqr' is invalid; use one of: zscore, mad"
    ):
        detect_outliers(pd.Series([1.0, 2.0]), method="iqr")


# ---------------------------------------------------------------------------
# Imputation


def test_ffill_gives_65():
    values = _series(_utc("2025-04-20 12:00", "2025-04-20 12:10"), [65, 75])
    filled, imputed = impute(resample(values, "5min"), "ffill")
    assert filled.tolist() == [65.0, 65.0, 75.0]
    assert imputed.tolist() == [False, True, False]


def test_linear_gives_70():
    values = _series(_utc("2025-04-20 12:00", "2025-04-20 12:10"), [65, 75])
    filled, _ = impute(resample(values, "5min"), "linear")
    assert filled.tolist() == [65.0, 70.0, 75.0]


def test_max_gap_leaves_rest_nan():
    index = pd.date_range("2025-04-20 12:00", periods=6, freq="1min", tz="UTC")
    values = _series(index, [1.0, np.nan, np.nan, np.nan, np.nan, 6.0])
    filled, imputed = impute(values, "ffill", max_gap=2)
    assert filled.iloc[1:3].tolist() == [1.0, 1.0]
    assert filled.iloc[3:5].isna().all()
    assert imputed.sum() == 2


def test_max_gap_zero_fills_nothing():
    index = pd.date_range("2025-04-20 12:00", periods=3, freq="1min", tz="UTC")
    filled, imputed = impute(_series(index, [1.0, np.nan, 3.0]), "linear", max_gap=0)
    assert math.isnan(filled.iloc[1])
    assert not imputed.any()


def test_linear_keeps_edges_nan():
    index = pd.date_range("2025-04-20 12:00", periods=4, freq="1min", tz="UTC")
    filled, _ = impute(_series(index, [np.nan, 1.0, 2.0, np.nan]), "linear")
    assert math.isnan(filled.iloc[0])
    assert math.isnan(filled.iloc[-1])


def test_imputation_invalid():
    with pytest.raises(ConfigError, match="imputation 'spline' is invalid"):
        impute(pd.Series([1.0]), "spline")


def test_max_gap_negative_invalid():
    with pytest.raises(ConfigError, match="max_gap -1 is invalid"):
        impute(pd.Series([1.0]), "linear", max_gap=-1)


# ---------------------------------------------------------------------------
# Resampling


def test_resample_mean_then_linear():
    values = _series(
        _utc("2025-04-20 12:00:00", "2025-04-20 12:01:30", "2025-04-20 12:03:12"),
        [100, 110, 115],
    )
    regular = resample(values, "1min", "mean")
    filled, _ = impute(regular, "linear")
    assert list(filled.index) == list(
        pd.date_range("2025-04-20 12:00", periods=4, freq="1min", tz="UTC")
    )
    assert filled.tolist() == [100.0, 110.0, 112.5, 115.0]


def test_resample_mean_averages_bin():
    values = _series(_utc("2025-04-20 12:00:00", "2025-04-20 12:00:30"), [1, 3])
    assert resample(values, "1min", "mean").tolist() == [2.0]


def test_resample_last_takes_last():
    values = _series(_utc("2025-04-20 12:00:00", "2025-04-20 12:00:30"), [1, 3])
    assert resample(values, "1min", "last").tolist() == [3.0]


def test_aggregation_invalid():
    with pytest.raises(ConfigError, match="aggregation 'max' is invalid"):
        resample(pd.Series(dtype="float64"), "1min", "max")


# ---------------------------------------------------------------------------
# Time zones, duplicates and ordering


def test_naive_assumed_utc():
    result = to_utc(pd.Series(pd.to_datetime(["2025-04-20 12:00"])))
    assert result.iloc[0] == pd.Timestamp("2025-04-20 12:00", tz="UTC")


def test_naive_other_zone():
    result = to_utc(pd.Series(pd.to_datetime(["2025-04-20 12:00"])), assume_tz="Europe/Berlin")
    assert result.iloc[0] == pd.Timestamp("2025-04-20 10:00", tz="UTC")


def test_aware_converted_to_utc():
    moment = pd.Timestamp("2025-04-20 14:00", tz="Europe/Berlin")
    assert to_utc(pd.Series([moment])).iloc[0] == pd.Timestamp("2025-04-20 12:00", tz="UTC")


def _unordered() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "timestamp": pd.to_datetime(
                ["2025-04-20 12:02", "2025-04-20 12:00", "2025-04-20 12:01", "2025-04-20 12:01"],
                utc=True,
            ),
            "value": [3.0, 1.0, 2.0, 4.0],
        }
    )


def test_duplicates_keep_last():
    frame, duplicates, out_of_order = order_and_deduplicate(_unordered(), keep="last")
    assert frame["value"].tolist() == [1.0, 4.0, 3.0]
    assert duplicates == 1
    assert out_of_order == 1


def test_duplicates_mean():
    frame, duplicates, _ = order_and_deduplicate(_unordered(), keep="mean")
    assert frame["value"].tolist() == [1.0, 3.0, 3.0]
    assert duplicates == 1


def test_duplicate_policy_invalid():
    with pytest.raises(ConfigError, match="duplicate policy 'first' is invalid"):
        order_and_deduplicate(_unordered(), keep="first")


# ---------------------------------------------------------------------------
# Frequency inference


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ("1s", "1s"),
        ("10s", "10s"),
        ("31s", "30s"),
        ("1min", "1min"),
        ("290s", "5min"),
        ("5min", "5min"),
        ("1h", "1h"),
        ("1D", "1D"),
    ],
)
def test_infer_frequency_aliases(step, expected):
    timestamps = pd.Series(pd.date_range("2025-04-20", periods=10, freq=step, tz="UTC"))
    assert infer_frequency(timestamps) == expected


def test_infer_frequency_uses_median():
    timestamps = pd.Series(pd.date_range("2025-04-20", periods=10, freq="5min", tz="UTC"))
    gapped = pd.concat([timestamps, pd.Series([timestamps.iloc[-1] + pd.Timedelta(hours=6)])])
    assert infer_frequency(gapped) == "5min"


def test_infer_frequency_one_point():
    with pytest.raises(DatasetError, match="from 1 distinct timestamp"):
        infer_frequency(pd.Series(pd.to_datetime(["2025-04-20"], utc=True)))


# ---------------------------------------------------------------------------
# prepare_series


def test_prepare_worked_example():
    prepared = prepare_series(
        pd.Series(
            pd.to_datetime(["2025-04-20 12:00:00", "2025-04-20 12:01:30", "2025-04-20 12:03:12"])
        ),
        pd.Series([100.0, 110.0, 115.0]),
        freq="1min",
    )
    assert prepared.frame["target"].tolist() == [100.0, 110.0, 112.5, 115.0]
    assert prepared.frame["is_imputed"].tolist() == [False, False, True, False]
    assert prepared.stats.imputed == 1
    assert prepared.stats.gaps_left == 0


def test_prepare_outlier_imputed():
    index = pd.date_range("2025-04-20 12:00", periods=21, freq="1min", tz="UTC")
    values = [*READINGS_40_TO_60[:10], 105.0, *READINGS_40_TO_60[10:]]
    prepared = prepare_series(pd.Series(index), pd.Series(values), freq="1min")
    row = prepared.frame.iloc[10]
    assert row["is_outlier"]
    assert row["is_imputed"]
    assert row["target"] == pytest.approx((58.0 + 53.0) / 2)
    assert prepared.stats.outliers == 1


def test_prepare_counts_duplicates():
    timestamps = pd.Series(
        pd.to_datetime(["2025-04-20 12:01", "2025-04-20 12:00", "2025-04-20 12:01"], utc=True)
    )
    prepared = prepare_series(timestamps, pd.Series([1.0, 2.0, 3.0]), freq="auto")
    assert prepared.freq == "1min"
    assert prepared.stats.rows_in == 3
    assert prepared.stats.duplicates == 1
    assert prepared.stats.out_of_order == 1
    assert prepared.frame["target"].tolist() == [2.0, 3.0]


def test_prepare_gaps_left_counted():
    timestamps = pd.Series(pd.to_datetime(["2025-04-20 12:00", "2025-04-20 12:10"], utc=True))
    prepared = prepare_series(timestamps, pd.Series([1.0, 2.0]), freq="1min", max_gap=3)
    assert prepared.stats.imputed == 3
    assert prepared.stats.gaps_left == 6

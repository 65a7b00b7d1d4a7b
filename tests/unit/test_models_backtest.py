import math

import numpy as np
import pytest

from models.backtest import (
    backtest,
    data_hash,
    rolling_windows,
    score,
    training_records,
    window_count,
)
from models.errors import ModelInputError
from models.pipeline import decide_promotion, pick_candidate


def _records():
    return [
        {"start": "2024-01-01 00:00:00", "target": np.arange(20, dtype=float)},
        {"start": "2024-01-01 00:00:00", "target": np.arange(100, 124, dtype=float)},
    ]


def test_windows_end_with_series():
    windows = rolling_windows(_records(), 3, 2)
    assert [len(c["target"]) for c in windows[0].contexts] == [14, 18]
    assert windows[0].actuals[0].tolist() == [14.0, 15.0, 16.0]
    assert windows[1].actuals[0].tolist() == [17.0, 18.0, 19.0]
    assert windows[1].actuals[1].tolist() == [121.0, 122.0, 123.0]


def test_training_records_precede_first_window():
    records = training_records(_records(), 3, 2)
    assert [len(r["target"]) for r in records] == [14, 18]


def test_window_count_limited_by_shortest():
    assert window_count(_records(), 3, 10, min_context=4) == 5


def test_window_count_rejects_short_series():
    with pytest.raises(ModelInputError, match=r"shortest series has 20 points"):
        window_count(_records(), 10, 3, min_context=11)


def test_window_count_rejects_zero_windows():
    with pytest.raises(ModelInputError, match=r"windows=0 is invalid"):
        window_count(_records(), 3, 0, min_context=4)


def _last_value(contexts):
    forecasts = []
    for context in contexts:
        value = float(context["target"][-1])
        forecasts.append(
            {"mean": [value] * 3, "quantiles": {q: [value] * 3 for q in ("0.1", "0.5", "0.9")}}
        )
    return forecasts


def test_backtest_pools_windows_and_series():
    result = backtest(_last_value, rolling_windows(_records(), 3, 2), 1, ["a", "b"])
    assert sorted(result["series"]) == ["a", "b"]
    assert len(result["windows"]) == 2
    assert len(result["forecasts"]) == 2
    # Naive forecasts of a unit ramp miss by 1, 2, 3: MASE is mean(1, 2, 3) / 1 = 2.
    assert result["metrics"]["mase"] == pytest.approx(2.0)
    assert result["series"]["a"]["mase"] == pytest.approx(2.0)


def test_backtest_rejects_short_output():
    with pytest.raises(ModelInputError, match=r"returned 1 forecasts for 2 series in window 0"):
        backtest(lambda c: _last_value(c)[:1], rolling_windows(_records(), 3, 1), 1)


def test_score_nan_is_worst():
    assert score({"mean_wql": math.nan}) == math.inf
    assert score(None) == math.inf
    assert score({"mean_wql": 0.5}) == 0.5


def test_pick_lowest_wql():
    metrics = {"deepar": {"mean_wql": 0.1}, "seasonal_naive": {"mean_wql": 0.2}}
    metrics["auto_ets"] = {"mean_wql": 0.15}
    assert pick_candidate(metrics) == "deepar"


def test_pick_tie_goes_to_simpler():
    metrics = {k: {"mean_wql": 0.1} for k in ("deepar", "seasonal_naive", "auto_ets")}
    assert pick_candidate(metrics) == "seasonal_naive"


def test_pick_nan_loses():
    metrics = {"deepar": {"mean_wql": math.nan}, "seasonal_naive": {"mean_wql": 9.0}}
    metrics["auto_ets"] = {"mean_wql": math.nan}
    assert pick_candidate(metrics) == "seasonal_naive"


@pytest.mark.parametrize(
    ("candidate", "champion", "promoted"),
    [
        (0.1, 0.2, True),
        (0.2, 0.2, False),
        (0.3, 0.2, False),
        (0.3, math.nan, True),
        (math.nan, 0.2, False),
        (math.nan, math.nan, False),
    ],
)
def test_promotion_needs_strictly_lower(candidate, champion, promoted):
    decided, reason = decide_promotion({"mean_wql": candidate}, {"mean_wql": champion})
    assert decided is promoted
    assert "champion" in reason


def test_promotion_without_champion():
    decided, reason = decide_promotion({"mean_wql": 0.5}, None)
    assert decided is True
    assert reason == "no current champion could be scored on these windows"


def test_data_hash_changes_with_content():
    assert data_hash(b"a", b"b") == data_hash(b"a", b"b")
    assert data_hash(b"a", b"b") != data_hash(b"ab", b"")


def test_fan_chart_writes_png(tmp_path):
    from models.charts import fan_chart

    windows = rolling_windows(_records(), 3, 1)
    path = fan_chart(
        tmp_path / "fan.png",
        "t",
        windows[0].contexts,
        windows[0].actuals,
        _last_value(windows[0].contexts),
        ["a", "b"],
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

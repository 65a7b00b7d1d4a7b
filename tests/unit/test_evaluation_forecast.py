"""Rolling-origin forecast backtest with the seasonal-naive baseline."""

import numpy as np
import pandas as pd
import pytest

from saodf.errors import ConfigError, DatasetError
from saodf.evaluation.forecast import (
    BacktestConfig,
    Series,
    _fold_origins,
    backtest,
    load_series,
    write_report,
)


def _periodic(name="a/one.csv", length=200, period=24):
    steps = np.arange(length)
    target = 10 + np.sin(2 * np.pi * steps / period)
    return Series(name, "value", "h", pd.Timestamp("2024-01-01", tz="UTC"), target)


CONFIG = BacktestConfig(horizon=6, folds=3, models=("seasonal_naive",), context_length=24)


def test_fold_origins_one_horizon_apart():
    assert _fold_origins(100, CONFIG) == [82, 88, 94]


def test_seasonal_naive_exact_on_periodic(tmp_path):
    result = backtest([_periodic()], CONFIG, tmp_path)
    metrics = result.aggregate["seasonal_naive"]
    # A 24-step season repeats exactly, so the median forecast equals the actuals.
    assert metrics["wql_0.5"] == pytest.approx(0.0, abs=1e-9)
    assert result.champion == "seasonal_naive"


def test_short_series_skipped(tmp_path):
    result = backtest([_periodic(), _periodic("a/short.csv", length=30)], CONFIG, tmp_path)
    assert [s.name for s in result.series] == ["a/one.csv"]
    assert result.skipped == ["a/short.csv: 30 steps, needs 42"]


def test_no_usable_series_rejected(tmp_path):
    with pytest.raises(DatasetError, match="lower --folds or --horizon"):
        backtest([_periodic(length=30)], CONFIG, tmp_path)


def test_unknown_model_rejected(tmp_path):
    config = BacktestConfig(models=("prophet",))
    with pytest.raises(ConfigError, match="models \\['prophet'\\] are invalid"):
        backtest([_periodic()], config, tmp_path)


def test_report_with_fan_chart(tmp_path):
    result = backtest([_periodic()], CONFIG, tmp_path / "work")
    path = write_report(result, tmp_path / "report")
    text = path.read_text()
    assert "| seasonal_naive |" in text
    assert "![a/one.csv](charts/a__one.png)" in text
    assert (tmp_path / "report" / "charts" / "a__one.png").stat().st_size > 0


def test_load_series_nab_layout(tmp_path):
    folder = tmp_path / "data" / "group"
    folder.mkdir(parents=True)
    stamps = pd.date_range("2024-01-01", periods=50, freq="5min")
    lines = ["timestamp,value"] + [f"{t:%Y-%m-%d %H:%M:%S},{i}" for i, t in enumerate(stamps)]
    (folder / "s.csv").write_text("\n".join(lines) + "\n")
    series, skipped = load_series(tmp_path)
    assert skipped == []
    assert series[0].freq == "5min"
    assert series[0].target.size == 50

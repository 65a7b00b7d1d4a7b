import json

import numpy as np
import pandas as pd
import pytest

from models.config import DeepARConfig
from models.errors import ModelInputError
from models.local_deepar import infer_cardinality, predict_deepar, to_gluonts_entries, train_deepar
from models.output import format_forecast_line, parse_forecast_line
from models.pyfunc import ForecasterModel, records_from_input

TINY = DeepARConfig(
    prediction_length=6,
    context_length=12,
    time_freq="5min",
    epochs=1,
    num_cells=30,
    num_layers=1,
    dropout_rate=0.0,
    mini_batch_size=8,
    num_batches_per_epoch=3,
    num_eval_samples=20,
)


def _records(count=3, length=80):
    rng = np.random.default_rng(1)
    records = []
    for index in range(count):
        target = 10 + index + np.sin(np.arange(length) / 4) + rng.normal(0, 0.1, length)
        target[3] = np.nan
        records.append({"start": "2024-01-01 00:00:00", "target": target, "cat": [index]})
    return records


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_deepar(_records(), "5min", TINY, tmp_path_factory.mktemp("deepar"))


def test_deepar_checkpoints_in_workdir(tmp_path):
    train_deepar(_records(count=2), "5min", TINY, tmp_path)
    assert list(tmp_path.glob("**/*.ckpt"))


def test_deepar_reports_training_seconds(trained):
    assert trained.training_seconds > 0


def test_deepar_uses_cat_cardinality(trained):
    assert trained.cardinality == [3]


def test_deepar_predict_output_format(trained):
    forecasts = predict_deepar(trained.predictor, _records(), "5min", trained.cardinality)
    parsed = [parse_forecast_line(format_forecast_line(f)) for f in forecasts]
    assert len(parsed) == 3
    assert len(parsed[0]["mean"]) == TINY.prediction_length
    assert sorted(parsed[0]["quantiles"]) == ["0.1", "0.5", "0.9"]
    assert all(np.isfinite(parsed[0]["quantiles"]["0.9"]))


def test_deepar_predict_repeatable(trained):
    first = predict_deepar(trained.predictor, _records(), "5min", trained.cardinality)
    second = predict_deepar(trained.predictor, _records(), "5min", trained.cardinality)
    assert first == second


def test_deepar_training_repeatable(trained, tmp_path):
    again = train_deepar(_records(), "5min", TINY, tmp_path)
    first = predict_deepar(trained.predictor, _records(), "5min", trained.cardinality)
    second = predict_deepar(again.predictor, _records(), "5min", again.cardinality)
    assert np.allclose(first[0]["mean"], second[0]["mean"])


def test_deepar_rejects_unknown_cat(trained):
    record = {**_records()[0], "cat": [7]}
    with pytest.raises(
        ModelInputError, match=r"cat=\[7\] does not fit the trained cardinality \[3\]"
    ):
        predict_deepar(trained.predictor, [record], "5min", trained.cardinality)


def test_cardinality_none_without_cat():
    assert infer_cardinality([{"start": "2024-01-01", "target": np.zeros(3)}]) is None


def test_cardinality_rejects_mixed_cat():
    records = [
        {"start": "2024-01-01", "target": np.zeros(3), "cat": [0]},
        {"start": "2024-01-01", "target": np.zeros(3)},
    ]
    with pytest.raises(ModelInputError, match=r"1 of 2 records have 'cat'"):
        infer_cardinality(records)


def test_entries_reject_bad_start():
    with pytest.raises(ModelInputError, match=r"series 0 start='yesterday' is invalid"):
        to_gluonts_entries([{"start": "yesterday", "target": np.zeros(3)}], "5min", None)


def test_pyfunc_predicts_dataframe(trained):
    model = ForecasterModel(
        "deepar", "5min", TINY.prediction_length, cardinality=trained.cardinality
    )
    model.attach_predictor(trained.predictor)
    frame = pd.DataFrame(
        [{"start": "2024-01-01 00:00:00", "target": [10.0] * 40, "cat": [1], "freq": "5min"}]
    )
    (forecast,) = model.predict(None, frame)
    assert len(forecast["quantiles"]["0.5"]) == TINY.prediction_length


def test_pyfunc_baseline_predicts_records():
    model = ForecasterModel("seasonal_naive", "5min", 3, season_length=2)
    records = [{"start": "2024-01-01 00:00:00", "target": [1.0, 2.0, "NaN", 4.0]}]
    (forecast,) = model.predict(None, records)
    assert forecast["mean"] == [3.0, 4.0, 3.0]


def test_pyfunc_rejects_other_freq():
    with pytest.raises(
        ModelInputError, match=r"row 0 has freq='h' but the model was trained at '5min'"
    ):
        records_from_input([{"start": "2024-01-01", "target": [1.0], "freq": "h"}], "5min")


def test_pyfunc_rejects_string_input():
    with pytest.raises(ModelInputError, match=r"model input of type str is unsupported"):
        records_from_input(json.dumps({"start": "x"}), "5min")


def test_pyfunc_rejects_unknown_kind():
    with pytest.raises(ModelInputError, match=r"model kind 'prophet' is unknown"):
        ForecasterModel("prophet", "5min", 3)

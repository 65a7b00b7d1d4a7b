"""Tests of the DeepAR JSON Lines serializer."""

from __future__ import annotations

import gzip
import json
import math

import pandas as pd
import pytest

from etl.deepar import (
    assign_categories,
    load_category_mapping,
    make_record,
    read_jsonl,
    split_train_test,
    time_features,
    write_jsonl,
)
from saodf.errors import ConfigError, DatasetError

START = pd.Timestamp("2025-04-20 12:00", tz="UTC")


def _record(length: int = 5) -> dict:
    index = pd.date_range(START, periods=length, freq="1h")
    target = [float(i) for i in range(length)]
    target[1] = math.nan
    return make_record(START, target, cat=[0], dynamic_feat=time_features(index))


def test_record_start_format():
    record = make_record(pd.Timestamp("2025-04-20 14:00", tz="Europe/Berlin"), [1.0])
    assert record["start"] == "2025-04-20 12:00:00"


def test_record_nan_as_string():
    record = make_record(START, [1.0, math.nan, None, 0.0])
    assert record["target"] == [1.0, "NaN", "NaN", 0.0]


def test_record_inf_rejected():
    with pytest.raises(DatasetError, match="infinite"):
        make_record(START, [1.0, math.inf])


def test_record_feature_length_checked():
    with pytest.raises(DatasetError, match=r"dynamic_feat\[0\] has 2 values but target has 3"):
        make_record(START, [1.0, 2.0, 3.0], dynamic_feat=[[0.0, 0.1]])


def test_record_negative_cat_rejected():
    with pytest.raises(DatasetError, match="cat \\[-1\\] is invalid"):
        make_record(START, [1.0], cat=[-1])


def test_time_features_range():
    index = pd.date_range("2025-04-20", periods=24 * 7, freq="1h", tz="UTC")
    features = time_features(index, ["hour_of_day", "day_of_week", "minute_of_hour"])
    assert len(features) == 3
    for feature in features:
        assert len(feature) == len(index)
        assert min(feature) >= -0.5
        assert max(feature) <= 0.5
    assert features[0][0] == -0.5
    assert features[0][23] == 0.5


def test_time_features_unknown():
    with pytest.raises(ConfigError, match="'week_of_year' are unknown"):
        time_features(pd.date_range("2025-04-20", periods=2, freq="1h"), ["week_of_year"])


def test_split_holds_out_last_points():
    train, test = split_train_test(_record(5), prediction_length=2)
    assert len(train["target"]) == 3
    assert len(test["target"]) == 5
    assert train["start"] == test["start"]
    assert all(len(f) == 3 for f in train["dynamic_feat"])
    assert all(len(f) == 5 for f in test["dynamic_feat"])


def test_split_too_short_raises():
    with pytest.raises(DatasetError, match="cannot hold out 5 points of a series of 5"):
        split_train_test(_record(5), prediction_length=5)


def test_jsonl_round_trip(tmp_path):
    url = (tmp_path / "data.jsonl").as_uri()
    write_jsonl([_record(), _record(3)], url)
    records = read_jsonl(url)
    assert len(records) == 2
    assert math.isnan(records[0]["target"][1])
    assert records[0]["target"][2] == 2.0
    assert records[0]["cat"] == [0]
    assert len(records[0]["dynamic_feat"][0]) == 5


def test_jsonl_file_has_nan_string(tmp_path):
    path = tmp_path / "data.jsonl"
    write_jsonl([_record()], str(path))
    line = json.loads(path.read_text().splitlines()[0])
    assert line["target"][1] == "NaN"


def test_jsonl_gzip_round_trip(tmp_path):
    path = tmp_path / "data.jsonl.gz"
    write_jsonl([_record()], str(path), compress=True)
    assert gzip.decompress(path.read_bytes()).count(b"\n") == 1
    assert read_jsonl(str(path))[0]["start"] == "2025-04-20 12:00:00"


def test_categories_only_grow(tmp_path):
    url = (tmp_path / "cats.json").as_uri()
    first = assign_categories(url, ["b", "a"])
    second = assign_categories(url, ["c", "a"])
    assert first == {"a": 0, "b": 1}
    assert second == {"a": 0, "b": 1, "c": 2}
    assert load_category_mapping(url) == second


def test_categories_invalid_file(tmp_path):
    path = tmp_path / "cats.json"
    path.write_text('{"a": -1}')
    with pytest.raises(DatasetError, match="must be a JSON object of device id to 0-based int"):
        load_category_mapping(str(path))

import json
import math

import pytest

from models.errors import ForecastFormatError
from models.output import (
    format_forecast_line,
    parse_forecast_line,
    read_forecast_lines,
    write_forecast_lines,
)

VALID = {
    "mean": [1.0, 2.0],
    "quantiles": {"0.1": [0.5, 1.5], "0.5": [1.0, 2.0], "0.9": [1.5, 2.5]},
}


def test_parse_documented_shape():
    parsed = parse_forecast_line(json.dumps(VALID))
    assert parsed == VALID


def test_parse_with_samples():
    parsed = parse_forecast_line(json.dumps({**VALID, "samples": [[1, 2], [3, 4]]}))
    assert parsed["samples"] == [[1.0, 2.0], [3.0, 4.0]]


def test_parse_null_and_nan_string_as_nan():
    parsed = parse_forecast_line('{"mean": [null, "NaN"], "quantiles": {"0.5": [1, 2]}}')
    assert math.isnan(parsed["mean"][0])
    assert math.isnan(parsed["mean"][1])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", r"forecast line is not valid JSON"),
        ("[1, 2]", r"forecast must be a JSON object, got list"),
        ('{"quantiles": {"0.5": [1]}}', r"forecast is missing 'mean'"),
        ('{"mean": [], "quantiles": {"0.5": []}}', r"forecast 'mean' is empty"),
        ('{"mean": [1]}', r"forecast is missing 'quantiles'"),
        ('{"mean": [1], "quantiles": {}}', r"forecast is missing 'quantiles'"),
        (
            '{"mean": [1, 2], "quantiles": {"0.5": [1]}}',
            r"quantiles\['0.5'\] has 1 values but 'mean' has 2",
        ),
        ('{"mean": [1], "quantiles": {"median": [1]}}', r"quantile key 'median' is not a level"),
        ('{"mean": [1], "quantiles": {"1.5": [1]}}', r"quantile key '1.5' is outside \(0, 1\)"),
        (
            '{"mean": ["a"], "quantiles": {"0.5": [1]}}',
            r"forecast mean contains 'a', which is not a number",
        ),
        ('{"mean": [true], "quantiles": {"0.5": [1]}}', r"forecast mean contains True"),
        ('{"mean": 1, "quantiles": {"0.5": [1]}}', r"forecast mean must be a list of numbers"),
        (
            '{"mean": [1], "quantiles": {"0.5": [1]}, "samples": [[1, 2]]}',
            r"samples\[0\] has 2 values",
        ),
        ('{"mean": [1], "quantiles": {"0.5": [1]}, "extra": 1}', r"unknown keys \['extra'\]"),
    ],
)
def test_parse_rejects_malformed(line, message):
    with pytest.raises(ForecastFormatError, match=message):
        parse_forecast_line(line)


def test_format_rejects_non_string_key():
    with pytest.raises(ForecastFormatError, match=r"quantile key 0.5 must be a string"):
        format_forecast_line({"mean": [1.0], "quantiles": {0.5: [1.0]}})


def test_format_writes_nan_as_null():
    line = format_forecast_line({"mean": [math.nan], "quantiles": {"0.5": [1.0]}})
    assert json.loads(line)["mean"] == [None]


def test_write_read_round_trip(tmp_path):
    second = {"mean": [3.0, 4.0], "quantiles": {"0.1": [2, 3], "0.5": [3, 4], "0.9": [4, 5]}}
    url = (tmp_path / "out" / "output.jsonl.out").as_uri()
    assert write_forecast_lines(url, [VALID, second]) == 2
    forecasts = read_forecast_lines(url)
    assert forecasts[0] == VALID
    assert forecasts[1]["mean"] == [3.0, 4.0]


def test_write_validates_before_writing(tmp_path):
    path = tmp_path / "output.jsonl.out"
    with pytest.raises(ForecastFormatError, match=r"forecast is missing 'mean'"):
        write_forecast_lines(str(path), [VALID, {"quantiles": {"0.5": [1.0]}}])
    assert not path.exists()


def test_read_names_bad_line(tmp_path):
    path = tmp_path / "output.jsonl.out"
    path.write_text(json.dumps(VALID) + "\n" + '{"mean": [1]}\n', encoding="utf-8")
    with pytest.raises(ForecastFormatError, match=r"line 2: forecast is missing 'quantiles'"):
        read_forecast_lines(str(path))


def test_read_rejects_empty_line(tmp_path):
    path = tmp_path / "output.jsonl.out"
    path.write_text(json.dumps(VALID) + "\n\n", encoding="utf-8")
    with pytest.raises(ForecastFormatError, match=r"line 2 is empty"):
        read_forecast_lines(str(path))

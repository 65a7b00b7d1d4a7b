"""Labelled dataset loading, the fitted z-score detector and scoring of detections."""

import json

import numpy as np
import pytest

from saodf.errors import ConfigError, DatasetError
from saodf.evaluation.anomalies import evaluate_dataset
from saodf.evaluation.datasets import NAB, SKAB, detect_layout, load_dataset
from saodf.evaluation.detectors import build

SKAB_HEADER = (
    "datetime;Accelerometer1RMS;Accelerometer2RMS;Current;Pressure;Temperature;"
    "Thermocouple;Voltage;Volume Flow RateRMS"
)


def _write_skab(root, rows=40, anomaly=range(30, 35), labelled=True):
    folder = root / "data" / "valve1"
    folder.mkdir(parents=True, exist_ok=True)
    header = SKAB_HEADER + (";anomaly;changepoint" if labelled else "")
    lines = [header]
    for i in range(rows):
        value = 10.0 + (i % 3) * 0.1 + (50.0 if i in anomaly else 0.0)
        fields = [f"2020-03-09 10:00:{i:02d}"] + [f"{value:.3f}"] * 8
        if labelled:
            fields += ["1" if i in anomaly else "0", "0"]
        lines.append(";".join(fields))
    (folder / "0.csv").write_text("\n".join(lines) + "\n")
    return root


def _write_nab(root, rows=100):
    folder = root / "data" / "realTest"
    folder.mkdir(parents=True)
    lines = ["timestamp,value"]
    for i in range(rows):
        value = 1.0 + (30.0 if i == 60 else 0.0)
        lines.append(f"2024-01-01 {i // 12:02d}:{(i % 12) * 5:02d}:00,{value}")
    (folder / "series.csv").write_text("\n".join(lines) + "\n")
    (folder / "unlabelled.csv").write_text("\n".join(lines) + "\n")
    labels = root / "labels"
    labels.mkdir()
    windows = {"realTest/series.csv": [["2024-01-01 04:50:00", "2024-01-01 05:35:00"]]}
    (labels / "combined_windows.json").write_text(json.dumps(windows))
    return root


def test_layout_detection(tmp_path):
    assert detect_layout(_write_skab(tmp_path / "s")) == SKAB
    assert detect_layout(_write_nab(tmp_path / "n")) == NAB


def test_layout_without_data_folder(tmp_path):
    with pytest.raises(DatasetError, match="has no data/ folder"):
        detect_layout(tmp_path)


def test_skab_labels_and_windows(tmp_path):
    dataset = load_dataset(_write_skab(tmp_path))
    item = dataset.series[0]
    assert item.name == "valve1/0.csv"
    assert int(item.labels.sum()) == 5
    assert item.windows == [(30, 34)]


def test_skab_unlabelled_file_skipped(tmp_path):
    _write_skab(tmp_path)
    other = tmp_path / "data" / "anomaly-free"
    other.mkdir()
    _write_skab(tmp_path / "free", labelled=False)
    (tmp_path / "free" / "data" / "valve1" / "0.csv").rename(other / "anomaly-free.csv")
    dataset = load_dataset(tmp_path)
    assert dataset.unlabelled == ["anomaly-free/anomaly-free.csv"]
    assert len(dataset.series) == 1


def test_nab_windows_to_rows(tmp_path):
    dataset = load_dataset(_write_nab(tmp_path))
    item = dataset.series[0]
    # 04:50 is row 58 and 05:35 is row 67 at 5-minute steps.
    assert item.windows == [(58, 67)]
    assert dataset.unlabelled == ["realTest/unlabelled.csv"]


def test_unknown_group_rejected(tmp_path):
    with pytest.raises(DatasetError, match="group\\(s\\) valve9 not found"):
        load_dataset(_write_skab(tmp_path), ["valve9"])


def test_fitted_zscore_flags_anomaly(tmp_path):
    dataset = load_dataset(_write_skab(tmp_path))
    detector, params = build("fitted_zscore", {"train_rows": 20, "span": 1})
    detection = detector(dataset.series[0])
    assert params["train_rows"] == 20
    assert detection.flags[30:35].all()
    assert not detection.flags[:30].any()


def test_fitted_zscore_unknown_parameter():
    with pytest.raises(ConfigError, match="no parameter\\(s\\) \\['alpha'\\]"):
        build("fitted_zscore", {"alpha": 0.1})


def test_unknown_detector_rejected():
    with pytest.raises(ConfigError, match="detector 'magic' is unknown"):
        build("magic", None)


def test_evaluate_dataset_scores(tmp_path):
    dataset = load_dataset(_write_skab(tmp_path))
    detector, params = build("fitted_zscore", {"train_rows": 20, "span": 1})
    evaluation = evaluate_dataset(dataset, detector, "fitted_zscore", params)
    assert evaluation.skab["f1"] == pytest.approx(1.0)
    # One alarm at the window's first row: the perfect score.
    assert evaluation.nab["standard"]["true_positives"] == 1
    assert evaluation.nab_optimised["standard"]["score"] == pytest.approx(100.0)
    assert np.isfinite(evaluation.nab["standard"]["score"])

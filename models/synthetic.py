"""Tiny synthetic prepared datasets in the preprocessing job's layout, for tests and demos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd


def write_synthetic_prepared(
    folder: Path,
    groups: dict[str, str] | None = None,
    series_per_group: int = 3,
    train_length: int = 120,
    prediction_length: int = 12,
    context_length: int = 24,
    seed: int = 0,
    run_key: str = "synthetic",
) -> str:
    """Write sine-plus-noise series with ``cat`` and a few NaN gaps and return the folder URL.

    Args:
        folder: local folder to write into; created when missing.
        groups: group name to pandas frequency; defaults to ``{"5min": "5min"}``.
        series_per_group: number of devices in each group.
        train_length: points per train line; each test line has ``prediction_length`` more.
        prediction_length: forecast horizon written to the manifest.
        context_length: DeepAR context length written to the manifest.
        seed: NumPy seed of the noise.
        run_key: run key written to the manifest.
    """
    groups = groups or {"5min": "5min"}
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    manifest_groups = []
    start = pd.Timestamp("2024-01-01 00:00:00")
    test_length = train_length + prediction_length
    for group, freq in groups.items():
        train_lines, test_lines, series = [], [], []
        for index in range(series_per_group):
            steps = np.arange(test_length)
            values = (
                50 + 5 * index + 3 * np.sin(2 * np.pi * steps / 24) + rng.normal(0, 0.3, steps.size)
            )
            target = [round(float(v), 4) for v in values]
            target[5] = "NaN"
            test_lines.append({"start": str(start), "target": target, "cat": [index]})
            train_lines.append(
                {"start": str(start), "target": target[:train_length], "cat": [index]}
            )
            end = start + (test_length - 1) * pd.tseries.frequencies.to_offset(freq)
            series.append(
                {
                    "device_id": f"device-{group}-{index}",
                    "cat": index,
                    "target_metric": "value",
                    "start": str(start),
                    "train_length": train_length,
                    "test_length": test_length,
                    "end": end.isoformat(),
                }
            )
        for channel, lines in (("train", train_lines), ("test", test_lines)):
            path = folder / "groups" / group / channel / "data.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
        manifest_groups.append(
            {
                "group": group,
                "freq": freq,
                "prediction_length": prediction_length,
                "context_length": context_length,
                "train": f"groups/{group}/train/data.jsonl",
                "test": f"groups/{group}/test/data.jsonl",
                "dynamic_feat_names": [],
                "series": series,
            }
        )
    manifest = {
        "run_key": run_key,
        "created_at": "2024-01-02T00:00:00+00:00",
        "config": {"synthetic": True},
        "groups": manifest_groups,
        "skipped_devices": [],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return folder.resolve().as_uri()

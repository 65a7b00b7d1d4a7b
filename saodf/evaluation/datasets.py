"""Labelled datasets in the NAB or SKAB folder layout, for scoring anomaly detectors.

- NAB layout: ``ROOT/data/<group>/<series>.csv`` (``timestamp,value``) and
  ``ROOT/labels/combined_windows.json`` mapping ``<group>/<series>.csv`` to a list of
  ``[start, end]`` anomaly windows. Series missing from the labels file are unlabelled.
- SKAB layout: ``ROOT/data/<group>/<experiment>.csv``, semicolon separated, with an
  ``anomaly`` 0/1 column. Files without that column (``anomaly-free.csv``) are unlabelled.

Unlabelled files are listed in :attr:`LabelledDataset.unlabelled` and never scored.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from etl.readers import DeviceSeries, ReadReport, read_nab_series, read_skab_file
from saodf.errors import DatasetError
from saodf.evaluation.nab import windows_from_labels, windows_from_timestamps

logger = logging.getLogger(__name__)

NAB = "nab"
SKAB = "skab"
LAYOUTS = (NAB, SKAB)
NAB_WINDOWS_FILE = Path("labels") / "combined_windows.json"


@dataclass
class LabelledSeries:
    """One file of a labelled dataset: its readings, point labels and anomaly windows (rows)."""

    name: str  # <group>/<file>.csv, as in NAB's labels file
    series: DeviceSeries
    labels: np.ndarray  # 1 for rows inside an anomaly window or labelled anomalous
    windows: list[tuple[int, int]]
    report: ReadReport

    @property
    def rows(self) -> int:
        return len(self.series.frame)


@dataclass
class LabelledDataset:
    """The labelled series of one dataset folder and the files left unscored."""

    root: Path
    layout: str
    series: list[LabelledSeries]
    unlabelled: list[str] = field(default_factory=list)


def detect_layout(root: Path) -> str:
    """Return ``nab`` or ``skab`` for a dataset folder, from its labels file or CSV header."""
    root = Path(root)
    data = root / "data"
    if not data.is_dir():
        raise DatasetError(
            f"{root} has no data/ folder; pass a dataset root in the NAB layout "
            "(data/<group>/*.csv and labels/combined_windows.json) or the SKAB layout "
            "(data/<group>/*.csv, semicolon separated)"
        )
    if (root / NAB_WINDOWS_FILE).is_file():
        return NAB
    for path in sorted(data.glob("*/*.csv")):
        with open(path, encoding="utf-8", errors="replace") as handle:
            header = handle.readline()
        return SKAB if ";" in header else NAB
    raise DatasetError(f"{data} contains no <group>/<file>.csv files")


def _device_id(layout: str, group: str, stem: str) -> str:
    text = f"{layout}-{group}-{stem}"
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)


def load_dataset(root: Path | str, groups: list[str] | None = None) -> LabelledDataset:
    """Load every labelled file of a NAB- or SKAB-layout folder, in group and file order."""
    root = Path(root)
    layout = detect_layout(root)
    group_dirs = sorted(p for p in (root / "data").iterdir() if p.is_dir())
    if groups is not None:
        names = {p.name for p in group_dirs}
        unknown = [g for g in groups if g not in names]
        if unknown:
            raise DatasetError(
                f"group(s) {', '.join(unknown)} not found in {root / 'data'}; "
                f"valid groups: {', '.join(sorted(names))}"
            )
        group_dirs = [p for p in group_dirs if p.name in groups]
    windows = _nab_windows(root) if layout == NAB else {}
    dataset = LabelledDataset(root=root, layout=layout, series=[])
    for group_dir in group_dirs:
        for path in sorted(group_dir.glob("*.csv"), key=_file_order):
            name = f"{group_dir.name}/{path.name}"
            device_id = _device_id(layout, group_dir.name, path.stem)
            if layout == NAB:
                item = _load_nab(name, device_id, path, windows)
            else:
                item = _load_skab(name, device_id, path)
            if item is None:
                dataset.unlabelled.append(name)
            else:
                dataset.series.append(item)
    if not dataset.series:
        raise DatasetError(
            f"{root} has no labelled file (unlabelled: {len(dataset.unlabelled)}); "
            "add labels/combined_windows.json (NAB) or an anomaly column (SKAB)"
        )
    logger.info(
        "loaded %d labelled files of %s (%s layout), %d unlabelled",
        len(dataset.series),
        root,
        layout,
        len(dataset.unlabelled),
    )
    return dataset


def _file_order(path: Path) -> tuple[int, int | str]:
    return (0, int(path.stem)) if path.stem.isdigit() else (1, path.stem)


def _nab_windows(root: Path) -> dict[str, list[list[str]]]:
    path = root / NAB_WINDOWS_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"NAB labels file {path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise DatasetError(f"NAB labels file {path} must map file names to window lists")
    return raw


def _load_nab(name: str, device_id: str, path: Path, windows: dict) -> LabelledSeries | None:
    if name not in windows:
        return None
    frame, report = read_nab_series(path)
    try:
        pairs = [
            (pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC"))
            for start, end in windows[name]
        ]
    except (TypeError, ValueError) as exc:
        raise DatasetError(
            f"anomaly windows of {name} are not [start, end] timestamps: {exc}"
        ) from None
    ranges = windows_from_timestamps(frame["timestamp"].dt.tz_localize(None), pairs)
    labels = np.zeros(len(frame), dtype=np.int8)
    for start, end in ranges:
        labels[start : end + 1] = 1
    series = DeviceSeries(device_id, frame, pairs, str(path))
    return LabelledSeries(name, series, labels, ranges, report)


def _load_skab(name: str, device_id: str, path: Path) -> LabelledSeries | None:
    with open(path, encoding="utf-8", errors="replace") as handle:
        header = [column.strip() for column in handle.readline().split(";")]
    if "anomaly" not in header:
        return None
    frame, report = read_skab_file(path)
    labels = frame["anomaly"].to_numpy(dtype=np.int8)
    metrics = [c for c in frame.columns if c not in ("timestamp", "anomaly", "changepoint")]
    series = DeviceSeries(
        device_id,
        frame[["timestamp", *metrics]],
        frame[["timestamp", "anomaly", "changepoint"]],
        str(path),
    )
    return LabelledSeries(name, series, labels, windows_from_labels(labels), report)

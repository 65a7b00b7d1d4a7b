"""The ``deepar_dataset`` gate on the DeepAR JSON Lines that the preprocessing job writes.

Great Expectations validates tables, so :func:`deepar_dataset_frame` turns the manifest
and both channels of every group into one row per series, with the measures that the
suite checks: start alignment, lengths, categories, dynamic features and NaN share.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import orjson
import pandas as pd

from etl import deepar, storage
from expectations.gate import GateResult, gate
from saodf.errors import DatasetError

logger = logging.getLogger(__name__)

SUITE_NAME = "deepar_dataset"
COLUMNS = [
    "group",
    "device_id",
    "freq",
    "start",
    "start_offset_seconds",
    "train_length",
    "target_length",
    "holdout_length",
    "prediction_length",
    "context_length",
    "min_length",
    "train_is_prefix",
    "cat",
    "cat_count",
    "dynamic_feat_count",
    "dynamic_feat_mismatches",
    "nan_share",
]


def read_manifest(prepared_url: str) -> dict[str, Any]:
    """Read ``manifest.json`` of a preprocessing output folder."""
    url = storage.join(prepared_url, "manifest.json")
    if not storage.exists(url):
        raise DatasetError(
            f"manifest {url} not found; run the preprocessing job for this folder first"
        )
    try:
        return orjson.loads(storage.read_bytes(url))
    except orjson.JSONDecodeError as exc:
        raise DatasetError(f"manifest {url} is not JSON ({exc}); re-run the job") from None


def _start_offset_seconds(start: str, freq: str) -> float:
    moment = pd.Timestamp(start)
    return float((moment - moment.floor(pd.tseries.frequencies.to_offset(freq))).total_seconds())


def _mismatches(record: dict[str, Any]) -> int:
    length = len(record["target"])
    return sum(1 for feature in record.get("dynamic_feat", []) if len(feature) != length)


def _same_values(left: list[float], right: list[float]) -> bool:
    return len(left) == len(right) and all(
        (math.isnan(a) and math.isnan(b)) or a == b for a, b in zip(left, right, strict=True)
    )


def _series_row(
    group: dict[str, Any], entry: dict[str, Any], train: dict[str, Any], test: dict[str, Any]
) -> dict[str, Any]:
    train_length = len(train["target"])
    target_length = len(test["target"])
    cat = test.get("cat") or []
    prefix = (
        train["start"] == test["start"]
        and train.get("cat") == test.get("cat")
        and _same_values(train["target"], test["target"][:train_length])
    )
    nans = sum(1 for value in test["target"] if math.isnan(value))
    return {
        "group": group["group"],
        "device_id": entry.get("device_id"),
        "freq": group["freq"],
        "start": test["start"],
        "start_offset_seconds": _start_offset_seconds(test["start"], group["freq"]),
        "train_length": train_length,
        "target_length": target_length,
        "holdout_length": target_length - train_length,
        "prediction_length": int(group["prediction_length"]),
        "context_length": int(group["context_length"]),
        "min_length": int(group["context_length"]) + int(group["prediction_length"]),
        "train_is_prefix": bool(prefix),
        "cat": int(cat[0]) if cat else None,
        "cat_count": len(cat),
        "dynamic_feat_count": len(test.get("dynamic_feat", [])),
        "dynamic_feat_mismatches": _mismatches(train) + _mismatches(test),
        "nan_share": nans / target_length if target_length else 1.0,
    }


def deepar_dataset_frame(prepared_url: str) -> pd.DataFrame:
    """Return one row per series of the output folder, with the columns of :data:`COLUMNS`.

    Raises:
        DatasetError: The manifest is missing, or a channel file has a different number
            of series than the manifest lists.
    """
    manifest = read_manifest(prepared_url)
    rows = []
    for group in manifest.get("groups", []):
        train = deepar.read_jsonl(storage.join(prepared_url, group["train"]))
        test = deepar.read_jsonl(storage.join(prepared_url, group["test"]))
        entries = group.get("series", [])
        if not len(train) == len(test) == len(entries):
            raise DatasetError(
                f"group {group['group']!r} of {prepared_url} lists {len(entries)} series but "
                f"has {len(train)} train and {len(test)} test records; re-run the job"
            )
        for entry, train_record, test_record in zip(entries, train, test, strict=True):
            rows.append(_series_row(group, entry, train_record, test_record))
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.astype({"cat": "Int64"}) if frame.empty else frame


def max_category(prepared_url: str, cat_mapping_url: str | None = None) -> int:
    """Return the highest index of the category mapping that the job used for ``cat``."""
    if cat_mapping_url is None:
        config = read_manifest(prepared_url).get("config", {})
        cat_mapping_url = config.get("cat_mapping_url") or storage.join(
            prepared_url, "cat_mapping.json"
        )
    mapping = deepar.load_category_mapping(cat_mapping_url)
    if not mapping:
        raise DatasetError(
            f"category mapping {cat_mapping_url} not found or empty; run the preprocessing job, "
            "which writes it"
        )
    return max(mapping.values())


def _output_files(prepared_url: str, manifest: dict[str, Any]) -> dict[str, bytes]:
    """Return the manifest and channel files of the output folder, keyed by relative path."""
    names = ["manifest.json"]
    for group in manifest.get("groups", []):
        names.extend([group["train"], group["test"]])
    files = {}
    for name in names:
        url = storage.join(prepared_url, name)
        if storage.exists(url):
            files[f"dataset/{name}"] = storage.read_bytes(url)
    return files


def gate_deepar_dataset(
    prepared_url: str,
    batch_id: str,
    quarantine_url: str,
    docs_url: str | None = None,
    cat_mapping_url: str | None = None,
    build_docs: bool = True,
) -> GateResult:
    """Validate the DeepAR JSON Lines under ``prepared_url`` with the ``deepar_dataset`` suite.

    A failed dataset is quarantined with its per-series table as ``batch.parquet`` and a
    copy of the manifest and channel files under ``dataset/``.

    Raises:
        ValidationFailedError: The dataset failed the suite.
        DatasetError: The output folder or its category mapping is missing or malformed.
    """
    frame = deepar_dataset_frame(prepared_url)
    parameters = {"max_cat": max_category(prepared_url, cat_mapping_url)}
    logger.info("Checking %d DeepAR series of %s as batch %s", len(frame), prepared_url, batch_id)
    return gate(
        frame,
        SUITE_NAME,
        batch_id,
        quarantine_url,
        docs_url=docs_url,
        parameters=parameters,
        build_docs=build_docs,
        extra_files=lambda: _output_files(prepared_url, read_manifest(prepared_url)),
    )

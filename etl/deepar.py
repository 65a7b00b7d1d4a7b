"""DeepAR JSON Lines: records, time features, category mapping, train/test split and I/O.

One series per line, in the input format of SageMaker's built-in DeepAR: ``start`` as
``YYYY-MM-DD HH:MM:SS``, ``target`` with the string ``"NaN"`` for gaps (never 0), an
optional ``cat`` (0-based ints) and an optional ``dynamic_feat`` (lists as long as
``target``).
"""

from __future__ import annotations

import gzip
import logging
import math
from typing import Any, Iterable, Sequence

import orjson
import pandas as pd

from etl import storage
from saodf.errors import ConfigError, DatasetError

logger = logging.getLogger(__name__)

START_FORMAT = "%Y-%m-%d %H:%M:%S"
NAN_TEXT = "NaN"
GZIP_MAGIC = b"\x1f\x8b"

# Time features known in advance, scaled to [-0.5, 0.5] like gluonts.time_feature (0.17).
TIME_FEATURES = {
    "minute_of_hour": lambda index: index.minute / 59.0 - 0.5,
    "hour_of_day": lambda index: index.hour / 23.0 - 0.5,
    "day_of_week": lambda index: index.dayofweek / 6.0 - 0.5,
    "day_of_month": lambda index: (index.day - 1) / 30.0 - 0.5,
}
DEFAULT_TIME_FEATURES = ("hour_of_day", "day_of_week")


def format_start(moment: pd.Timestamp) -> str:
    """Format the first timestamp of a series as ``YYYY-MM-DD HH:MM:SS`` in UTC."""
    moment = pd.Timestamp(moment)
    if moment.tzinfo is not None:
        moment = moment.tz_convert("UTC")
    return moment.strftime(START_FORMAT)


def encode_target(values: Iterable[float]) -> list[float | str]:
    """Return the values as floats with ``"NaN"`` for missing ones (NaN or None)."""
    encoded: list[float | str] = []
    for value in values:
        if value is None or math.isnan(value):
            encoded.append(NAN_TEXT)
        elif math.isinf(value):
            raise DatasetError(f"target value {value!r} is infinite; replace it before writing")
        else:
            encoded.append(float(value))
    return encoded


def decode_target(values: Iterable[float | str]) -> list[float]:
    return [math.nan if value == NAN_TEXT or value is None else float(value) for value in values]


def time_features(
    index: pd.DatetimeIndex, names: Sequence[str] = DEFAULT_TIME_FEATURES
) -> list[list[float]]:
    """Compute one list per feature name for the timestamps of ``index``, each in [-0.5, 0.5]."""
    unknown = [name for name in names if name not in TIME_FEATURES]
    if unknown:
        raise ConfigError(
            f"time feature(s) {', '.join(map(repr, unknown))} are unknown; valid features: "
            f"{', '.join(TIME_FEATURES)}"
        )
    return [[float(x) for x in TIME_FEATURES[name](index)] for name in names]


def make_record(
    start: pd.Timestamp,
    target: Sequence[float],
    cat: Sequence[int] | None = None,
    dynamic_feat: Sequence[Sequence[float]] | None = None,
) -> dict[str, Any]:
    """Build one DeepAR record and check that each ``dynamic_feat`` is as long as ``target``."""
    record: dict[str, Any] = {"start": format_start(start), "target": encode_target(target)}
    if cat is not None:
        if any(not isinstance(c, int) or c < 0 for c in cat):
            raise DatasetError(f"cat {list(cat)!r} is invalid; use 0-based integers")
        record["cat"] = [int(c) for c in cat]
    if dynamic_feat is not None:
        for position, feature in enumerate(dynamic_feat):
            if len(feature) != len(target):
                raise DatasetError(
                    f"dynamic_feat[{position}] has {len(feature)} values but target has "
                    f"{len(target)}; give one feature value per target value"
                )
        record["dynamic_feat"] = [[float(x) for x in feature] for feature in dynamic_feat]
    return record


def split_train_test(
    record: dict[str, Any], prediction_length: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a record by time into a train and a test record.

    The test record is the whole series and the train record the same series without its
    last ``prediction_length`` points, as DeepAR's test channel expects.
    """
    length = len(record["target"])
    if prediction_length < 1 or length <= prediction_length:
        raise DatasetError(
            f"cannot hold out {prediction_length} points of a series of {length}; use a "
            "prediction_length of at least 1 and below the series length"
        )
    train = dict(record)
    train["target"] = record["target"][:-prediction_length]
    if "dynamic_feat" in record:
        train["dynamic_feat"] = [feature[:-prediction_length] for feature in record["dynamic_feat"]]
    return train, dict(record)


def dumps_records(records: Iterable[dict[str, Any]]) -> bytes:
    """Serialise records as JSON Lines (one compact object per line, newline terminated)."""
    return b"".join(orjson.dumps(record) + b"\n" for record in records)


def write_jsonl(records: Iterable[dict[str, Any]], url: str, compress: bool = False) -> None:
    """Write records as JSON Lines to ``url``, gzip-compressed when ``compress`` is true."""
    data = dumps_records(records)
    if compress:
        data = gzip.compress(data, mtime=0)
    storage.write_bytes(url, data)


def read_jsonl(url: str) -> list[dict[str, Any]]:
    """Read DeepAR JSON Lines (plain or gzip) with ``"NaN"`` targets decoded to float NaN."""
    data = storage.read_bytes(url)
    if data.startswith(GZIP_MAGIC):
        data = gzip.decompress(data)
    records = []
    for line_number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise DatasetError(f"{url} line {line_number} is not JSON: {exc}") from None
        record["target"] = decode_target(record.get("target", []))
        records.append(record)
    return records


def load_category_mapping(url: str) -> dict[str, int]:
    """Return the persisted device-to-category mapping at ``url``, or {} when there is none."""
    if not storage.exists(url):
        return {}
    try:
        mapping = orjson.loads(storage.read_bytes(url))
    except orjson.JSONDecodeError as exc:
        raise DatasetError(
            f"category mapping {url} is not JSON ({exc}); fix or remove it"
        ) from None
    if not isinstance(mapping, dict) or any(
        not isinstance(v, int) or v < 0 for v in mapping.values()
    ):
        raise DatasetError(
            f"category mapping {url} must be a JSON object of device id to 0-based int"
        )
    return mapping


def assign_categories(url: str, device_ids: Iterable[str]) -> dict[str, int]:
    """Give each new device the next free category index and persist the grown mapping.

    Existing devices keep their index, so a model trained earlier reads the same ``cat``.
    New devices are numbered in sorted order, which makes the result independent of the
    input order. The mapping is written only when it grew.
    """
    mapping = load_category_mapping(url)
    new_devices = sorted(set(device_ids) - set(mapping))
    if new_devices:
        next_index = max(mapping.values(), default=-1) + 1
        for offset, device_id in enumerate(new_devices):
            mapping[device_id] = next_index + offset
        storage.write_bytes(url, orjson.dumps(mapping, option=orjson.OPT_INDENT_2))
        logger.info("Category mapping %s: added %d devices", url, len(new_devices))
    return mapping

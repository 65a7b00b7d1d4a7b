"""Reader and writer of the SageMaker DeepAR output format (JSON Lines).

Each line is one JSON object for one input series, in input order::

    {"mean": [...], "quantiles": {"0.1": [...], "0.5": [...], "0.9": [...]},
     "samples": [[...], ...]}

``samples`` is optional. Every array has one value per forecast step, and quantile
keys are the levels written as strings.
"""

from __future__ import annotations

import json
import logging
import math
import os
import posixpath
from collections.abc import Iterable, Mapping

import fsspec

from models.errors import ForecastFormatError

logger = logging.getLogger(__name__)


def parse_forecast_line(line: str | bytes) -> dict:
    """Parse one output line and return ``{"mean", "quantiles", "samples"?}`` with float lists.

    Raises:
        ForecastFormatError: the line is not a JSON object of the documented shape.
    """
    try:
        obj = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ForecastFormatError(f"forecast line is not valid JSON: {exc}") from None
    return validate_forecast(obj)


def validate_forecast(obj: object) -> dict:
    """Check one forecast object and return a copy with float lists.

    Raises:
        ForecastFormatError: a field is missing, not numeric, keyed by a non-level string,
            or of a length that differs from ``mean``.
    """
    if not isinstance(obj, Mapping):
        raise ForecastFormatError(
            f"forecast must be a JSON object, got {type(obj).__name__}; "
            'write {"mean": [...], "quantiles": {...}}'
        )
    unknown = set(obj) - {"mean", "quantiles", "samples"}
    if unknown:
        raise ForecastFormatError(
            f"forecast has unknown keys {sorted(unknown)}; allowed are mean, quantiles, samples"
        )
    if "mean" not in obj:
        raise ForecastFormatError("forecast is missing 'mean'; add the mean forecast array")
    mean = _numbers(obj["mean"], "mean")
    if not mean:
        raise ForecastFormatError("forecast 'mean' is empty; it needs one value per step")
    quantiles = obj.get("quantiles")
    if not isinstance(quantiles, Mapping) or not quantiles:
        raise ForecastFormatError(
            "forecast is missing 'quantiles'; add an object such as {\"0.5\": [...]}"
        )
    parsed = {"mean": mean, "quantiles": {}}
    for key, values in quantiles.items():
        _check_level(key)
        field = f"quantiles[{key!r}]"
        parsed["quantiles"][key] = _same_length(_numbers(values, field), mean, field)
    if "samples" in obj:
        samples = obj["samples"]
        if not isinstance(samples, list):
            raise ForecastFormatError("forecast 'samples' must be a list of sample paths")
        parsed["samples"] = [
            _same_length(_numbers(path, f"samples[{i}]"), mean, f"samples[{i}]")
            for i, path in enumerate(samples)
        ]
    return parsed


def format_forecast_line(forecast: Mapping) -> str:
    """Validate ``forecast`` and return it as one JSON line without the newline."""
    checked = validate_forecast(forecast)
    # NaN has no JSON literal; write null, which the parser reads back as NaN.
    return json.dumps(_nan_to_none(checked), allow_nan=False, separators=(",", ":"))


def write_forecast_lines(path_url: str, forecasts: Iterable[Mapping]) -> int:
    """Write ``forecasts`` to ``path_url`` (local path, ``file://`` or ``s3://``), one per line.

    Every forecast is validated before the file is touched, and local files are
    written beside the target and renamed, so readers never see a partial file.
    Returns the number of lines written.
    """
    lines = [format_forecast_line(f) for f in forecasts]
    write_text_atomic(path_url, "".join(line + "\n" for line in lines))
    logger.info("wrote %d forecast lines to %s", len(lines), path_url)
    return len(lines)


def write_text_atomic(path_url: str, text: str) -> None:
    """Write ``text`` as UTF-8 to ``path_url`` so that readers never see a partial file.

    A local file is written beside its target and renamed. An S3 PUT is atomic by itself.
    """
    fs, path = fsspec.core.url_to_fs(path_url)
    parent = posixpath.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    if "file" in _protocols(fs) or "local" in _protocols(fs):
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    else:
        with fs.open(path, "w", encoding="utf-8") as handle:
            handle.write(text)


def read_forecast_lines(path_url: str) -> list[dict]:
    """Read and validate every line of a DeepAR output file, in file order.

    Raises:
        ForecastFormatError: a line is malformed; the message gives its 1-based number.
    """
    forecasts = []
    with fsspec.open(path_url, "r", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                raise ForecastFormatError(
                    f"{path_url} line {number} is empty; write one JSON object per series"
                )
            try:
                forecasts.append(parse_forecast_line(line))
            except ForecastFormatError as exc:
                raise ForecastFormatError(f"{path_url} line {number}: {exc}") from None
    return forecasts


def _numbers(values: object, field: str) -> list[float]:
    if not isinstance(values, list):
        raise ForecastFormatError(f"forecast {field} must be a list of numbers")
    result = []
    for value in values:
        if value is None:
            result.append(math.nan)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isinf(value):
                raise ForecastFormatError(
                    f"forecast {field} contains {value}; values must be finite"
                )
            result.append(float(value))
        elif value == "NaN":
            result.append(math.nan)
        else:
            raise ForecastFormatError(f"forecast {field} contains {value!r}, which is not a number")
    return result


def _check_level(key: object) -> None:
    if not isinstance(key, str):
        raise ForecastFormatError(f"quantile key {key!r} must be a string such as '0.5'")
    try:
        level = float(key)
    except ValueError:
        raise ForecastFormatError(
            f"quantile key {key!r} is not a level; use a string such as '0.1' or '0.9'"
        ) from None
    if not 0.0 < level < 1.0:
        raise ForecastFormatError(f"quantile key {key!r} is outside (0, 1)")


def _same_length(values: list[float], mean: list[float], field: str) -> list[float]:
    if len(values) != len(mean):
        raise ForecastFormatError(
            f"forecast {field} has {len(values)} values but 'mean' has {len(mean)}; "
            "every array needs one value per forecast step"
        )
    return values


def _nan_to_none(obj):
    if isinstance(obj, float):
        return None if math.isnan(obj) else obj
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    return obj


def _protocols(fs) -> tuple[str, ...]:
    protocol = fs.protocol
    return protocol if isinstance(protocol, tuple) else (protocol,)

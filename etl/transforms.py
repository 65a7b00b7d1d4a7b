"""Per-device preprocessing in pure pandas: time zones, ordering, outliers, resampling, gaps.

The preprocessing job applies :func:`prepare_series` to each device, in the order
zone normalisation, sorting and deduplication, outlier removal, resampling, imputation.
Outliers are detected on the raw readings, so an outlier never leaks into a bin mean.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from saodf.errors import ConfigError, DatasetError

logger = logging.getLogger(__name__)

OUTLIER_METHODS = ("zscore", "mad")
AGGREGATIONS = ("mean", "last")
IMPUTATIONS = ("linear", "ffill")
DUPLICATE_POLICIES = ("last", "mean")

# Scales the median absolute deviation to the standard deviation of a normal
# distribution (Iglewicz and Hoaglin's modified z-score).
MAD_SCALE = 0.6745
# When more than half of the values equal the median, the MAD is 0. The score then uses
# the mean absolute deviation from the median times sqrt(pi / 2), because for a normal
# distribution that product equals the standard deviation.
MEAN_AD_SCALE = 1.253314

# Default maximum number of steps of one prepared series: a bound on memory, because one
# timestamp decades away from the others would otherwise make a grid of millions of steps.
DEFAULT_MAX_STEPS = 1_000_000

# Frequencies that infer_frequency rounds to, as pandas offset aliases.
STANDARD_FREQUENCIES = (
    "1s",
    "2s",
    "5s",
    "10s",
    "15s",
    "30s",
    "1min",
    "2min",
    "5min",
    "10min",
    "15min",
    "30min",
    "1h",
    "2h",
    "3h",
    "6h",
    "12h",
    "1D",
)


@dataclass
class SeriesStats:
    """Counts of one device's preprocessing, as written to the job report."""

    rows_in: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    non_finite: int = 0
    future: int = 0
    outliers: int = 0
    imputed: int = 0
    gaps_left: int = 0
    constant: bool = False

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class PreparedSeries:
    """A device's target on a regular grid.

    ``frame`` has ``timestamp`` (UTC, every step of ``freq``), ``target`` (float, NaN for
    gaps left), ``is_outlier`` (a raw reading in the step was removed as an outlier) and
    ``is_imputed`` (the value was filled in).
    """

    frame: pd.DataFrame
    freq: str
    stats: SeriesStats


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} {value!r} is invalid; use one of: {', '.join(choices)}")


def to_utc(timestamps: pd.Series, assume_tz: str = "UTC") -> pd.Series:
    """Convert timestamps to UTC nanoseconds, taking naive ones to be in ``assume_tz``.

    One unit matters because time interpolation computes with the integer timestamps:
    the same instants in microseconds and in nanoseconds can round differently.
    """
    values = pd.to_datetime(timestamps)
    if values.dt.tz is None:
        values = values.dt.tz_localize(assume_tz, ambiguous="NaT", nonexistent="NaT")
    return values.dt.tz_convert("UTC").dt.as_unit("ns")


def order_and_deduplicate(frame: pd.DataFrame, keep: str = "last") -> tuple[pd.DataFrame, int, int]:
    """Sort ``frame`` by ``timestamp`` and merge rows that share a timestamp.

    ``keep="last"`` keeps the row that came last in the input, and ``keep="mean"``
    averages the numeric columns of the duplicates.

    Returns:
        The sorted frame, the number of rows removed as duplicates and the number of
        rows whose timestamp was earlier than the row before them.
    """
    _check_choice("duplicate policy", keep, DUPLICATE_POLICIES)
    out_of_order = int((frame["timestamp"].diff() < pd.Timedelta(0)).sum())
    ordered = frame.sort_values("timestamp", kind="mergesort")
    duplicates = int(ordered["timestamp"].duplicated().sum())
    if duplicates:
        if keep == "last":
            ordered = ordered.drop_duplicates("timestamp", keep="last")
        else:
            ordered = ordered.groupby("timestamp", as_index=False, sort=True).mean(
                numeric_only=True
            )
    return ordered.reset_index(drop=True), duplicates, out_of_order


def detect_outliers(values: pd.Series, threshold: float = 3.0, method: str = "zscore") -> pd.Series:
    """Mark the values whose score exceeds ``threshold`` in absolute value.

    ``zscore`` scores against the mean and the population standard deviation and
    ``mad`` uses the modified z-score ``0.6745 * (x - median) / MAD``. When the MAD is 0
    but the values are not all equal, ``mad`` scores ``(x - median) / (1.253314 * MeanAD)``
    with the mean absolute deviation from the median. A constant series has no outliers.
    NaN is never marked.
    """
    _check_choice("outlier method", method, OUTLIER_METHODS)
    if not threshold > 0:
        raise ConfigError(f"outlier threshold {threshold!r} is invalid; use a number above 0")
    numbers = values.astype("float64")
    if method == "zscore":
        spread = numbers.std(ddof=0)
        if not spread > 0:
            return pd.Series(False, index=values.index)
        scores = (numbers - numbers.mean()) / spread
    else:
        median = numbers.median()
        deviations = (numbers - median).abs()
        mad = deviations.median()
        if mad > 0:
            scores = MAD_SCALE * (numbers - median) / mad
        else:
            mean_ad = deviations.mean()
            if not mean_ad > 0:
                return pd.Series(False, index=values.index)
            scores = (numbers - median) / (MEAN_AD_SCALE * mean_ad)
    return (scores.abs() > threshold).fillna(False).astype(bool)


def remove_outliers(
    values: pd.Series, threshold: float = 3.0, method: str = "zscore"
) -> tuple[pd.Series, pd.Series]:
    """Replace outliers with NaN and return the cleaned values and the outlier mask."""
    mask = detect_outliers(values, threshold, method)
    return values.astype("float64").mask(mask), mask


def resample(values: pd.Series, freq: str, aggregation: str = "mean") -> pd.Series:
    """Aggregate values indexed by timestamp into bins of ``freq`` labelled by their start.

    Empty bins become NaN. Bins start at midnight UTC, so series of the same frequency
    share a grid.
    """
    _check_choice("aggregation", aggregation, AGGREGATIONS)
    bins = values.resample(freq, label="left", closed="left")
    return bins.mean() if aggregation == "mean" else bins.last()


def impute(
    values: pd.Series, method: str = "linear", max_gap: int | None = None
) -> tuple[pd.Series, pd.Series]:
    """Fill NaN values and return the filled values and a mask of the filled positions.

    ``linear`` interpolates in time between the neighbours of a gap and leaves leading
    and trailing NaN values alone. ``ffill`` repeats the last value before a gap. At most
    ``max_gap`` consecutive steps of a gap are filled (None: all), and the rest of a
    longer gap stays NaN.
    """
    _check_choice("imputation", method, IMPUTATIONS)
    if max_gap is not None and max_gap < 0:
        raise ConfigError(f"max_gap {max_gap!r} is invalid; use a number of steps >= 0 or None")
    if max_gap == 0:
        return values.copy(), pd.Series(False, index=values.index)
    if method == "linear":
        filled = values.interpolate(method="time", limit=max_gap, limit_area="inside")
    else:
        filled = values.ffill(limit=max_gap)
    imputed = values.isna() & filled.notna()
    return filled, imputed


def infer_frequency(timestamps: pd.Series | pd.DatetimeIndex) -> str:
    """Return the median spacing of ``timestamps`` rounded to a standard pandas alias.

    The spacing is rounded to the nearest entry of :data:`STANDARD_FREQUENCIES` on a
    log scale, so 31 s gives ``"30s"`` and 4 min 50 s gives ``"5min"``.

    Raises:
        DatasetError: Fewer than two distinct timestamps.
    """
    moments = pd.Series(pd.to_datetime(timestamps)).dropna().drop_duplicates().sort_values()
    if len(moments) < 2:
        raise DatasetError(
            f"cannot infer a frequency from {len(moments)} distinct timestamp(s); "
            "give at least two, or set the frequency explicitly"
        )
    spacing = moments.diff().dropna().median().total_seconds()
    seconds = [
        pd.Timedelta(pd.tseries.frequencies.to_offset(f)).total_seconds()
        for f in STANDARD_FREQUENCIES
    ]
    distances = [abs(math.log(spacing / candidate)) for candidate in seconds]
    return STANDARD_FREQUENCIES[int(np.argmin(distances))]


def _numeric_values(values: pd.Series) -> pd.Series:
    """Return ``values`` as float64, or raise naming the first value that is not a number.

    Strings are rejected even when they spell a number, because a reading that arrives as
    text has broken the message contract upstream and should be fixed there.
    """
    series = pd.Series(values).reset_index(drop=True)
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return series.astype("float64")
    for position, value in enumerate(series):
        is_number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
            value, (bool, np.bool_)
        )
        if not is_number and not (value is None or value is pd.NA or value is pd.NaT):
            raise DatasetError(
                f"reading {value!r} at position {position} is a {type(value).__name__}, not a "
                "number; convert the readings first, e.g. with pandas.to_numeric(values, "
                "errors='coerce')"
            )
    return series.astype("float64")


def prepare_series(
    timestamps: pd.Series,
    values: pd.Series,
    freq: str,
    aggregation: str = "mean",
    imputation: str = "linear",
    max_gap: int | None = None,
    zscore_threshold: float = 3.0,
    outlier_method: str = "zscore",
    assume_tz: str = "UTC",
    duplicates: str = "last",
    not_after: pd.Timestamp | None = None,
    max_steps: int | None = DEFAULT_MAX_STEPS,
    min_freq: str | None = None,
) -> PreparedSeries:
    """Turn one device's raw readings of one metric into a regular, cleaned series.

    Readings that are NaN or infinite, or later than ``not_after``, are removed before
    anything else and counted in ``stats.non_finite`` and ``stats.future``.

    Args:
        timestamps: Reading times, aware or naive (naive ones are in ``assume_tz``).
        values: The readings, aligned with ``timestamps``.
        freq: A pandas alias such as ``"5min"``, or ``"auto"`` for :func:`infer_frequency`.
        aggregation: ``"mean"`` or ``"last"`` of the readings in one step.
        imputation: ``"linear"`` or ``"ffill"``.
        max_gap: The maximum number of consecutive steps to fill (None: no limit).
        zscore_threshold: The absolute score above which a reading is an outlier.
        outlier_method: ``"zscore"`` or ``"mad"``.
        assume_tz: The zone of naive timestamps.
        duplicates: ``"last"`` or ``"mean"`` for readings with the same timestamp.
        not_after: The latest plausible reading time (aware); None keeps every reading.
        max_steps: The maximum length of the regular series (None: no limit).
        min_freq: With ``freq="auto"``, the finest step to use: a finer inferred step is
            replaced by this one (None: no limit).

    Raises:
        DatasetError: A reading is not a number, no usable reading is left, the
            frequency cannot be inferred, or the series would exceed ``max_steps``.
    """
    stats = SeriesStats(rows_in=len(values))
    raw = pd.DataFrame(
        {
            "timestamp": to_utc(pd.Series(timestamps).reset_index(drop=True), assume_tz),
            "value": _numeric_values(values),
        }
    )
    raw = raw[raw["timestamp"].notna()]
    finite = np.isfinite(raw["value"].to_numpy())
    stats.non_finite = int((~finite).sum())
    raw = raw[finite]
    if not_after is not None:
        future = raw["timestamp"] > pd.Timestamp(not_after)
        stats.future = int(future.sum())
        raw = raw[~future]
    raw, stats.duplicates, stats.out_of_order = order_and_deduplicate(raw, keep=duplicates)
    if raw.empty:
        raise DatasetError(
            f"series has no finite reading with a valid timestamp ({stats.rows_in} rows in, "
            f"{stats.non_finite} NaN or infinite, {stats.future} after {not_after}); "
            "check the input"
        )
    if freq == "auto":
        freq = infer_frequency(raw["timestamp"])
        if min_freq is not None and pd.Timedelta(
            pd.tseries.frequencies.to_offset(freq)
        ) < pd.Timedelta(pd.tseries.frequencies.to_offset(min_freq)):
            freq = min_freq
    first, last = raw["timestamp"].iloc[0], raw["timestamp"].iloc[-1]
    step = pd.Timedelta(pd.tseries.frequencies.to_offset(freq))
    steps = int((last.floor(step) - first.floor(step)) // step) + 1
    if max_steps is not None and steps > max_steps:
        raise DatasetError(
            f"readings from {first.isoformat()} to {last.isoformat()} make {steps} steps of "
            f"{freq}, above max_steps={max_steps}; look for timestamps far from the others "
            "(a device clock error) or choose a coarser freq"
        )
    stats.constant = bool(raw["value"].nunique() == 1)

    cleaned, outliers = remove_outliers(raw["value"], zscore_threshold, outlier_method)
    stats.outliers = int(outliers.sum())
    indexed = pd.Series(cleaned.to_numpy(), index=pd.DatetimeIndex(raw["timestamp"]))
    regular = resample(indexed, freq, aggregation)
    outlier_steps = (
        pd.Series(outliers.to_numpy(), index=indexed.index)
        .resample(freq, label="left", closed="left")
        .max()
        .reindex(regular.index)
        .fillna(False)
        .astype(bool)
    )
    target, imputed = impute(regular, imputation, max_gap)
    stats.imputed = int(imputed.sum())
    stats.gaps_left = int(target.isna().sum())
    frame = pd.DataFrame(
        {
            "timestamp": regular.index,
            "target": target.to_numpy(dtype="float64"),
            "is_outlier": outlier_steps.to_numpy(),
            "is_imputed": imputed.to_numpy(),
        }
    )
    return PreparedSeries(frame=frame, freq=freq, stats=stats)

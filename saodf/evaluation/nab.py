"""The Numenta Anomaly Benchmark (NAB) scoring method, implemented from its published description.

Source: Lavin and Ahmad, "Evaluating Real-time Anomaly Detection Algorithms - the Numenta
Anomaly Benchmark", ICMLA 2015 (arXiv:1510.03336), and the scorer description in the
NAB repository (github.com/numenta/NAB, ``nab/sweeper.py`` docstrings and
``config/profiles.json``).

Rules, per data file of ``n`` rows:

- The first ``min(floor(0.15 * n), 0.15 * 5000)`` rows are the probationary period. A
  detection there is neither rewarded nor penalised.
- Each labelled anomaly window rewards only its best detection, which is always the
  earliest one. A detection at relative position ``p`` in the window (``-1`` at its first
  row, close to ``0`` at its last) scores ``tp_weight * S(p) / S(-1)`` with the scaled
  sigmoid ``S(p) = 2 / (1 + exp(5 p)) - 1``.
- A window without a detection costs ``fn_weight``.
- Every detection outside a window is a false positive. After a window of width ``w``
  ending at row ``r``, a detection at row ``i`` scores ``fp_weight * S((i - r) / (w - 1))``,
  so detections just after a window cost little and those 3 window widths or more away
  cost ``fp_weight``. Before the first window a detection always costs ``fp_weight``.

The corpus score is the sum over files, normalised as ``100 * (raw - null) / (perfect -
null)``. The null detector makes no detection and the perfect detector fires once, on
the first row of every window, so they score 0 and 100.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from saodf.errors import SaodfError

PROBATIONARY_FRACTION = 0.15
# NAB caps the probationary period at 15% of 5,000 rows, so at 750 rows.
PROBATIONARY_CAP_ROWS = 5000


class ScoringError(SaodfError):
    """Labels or detections that cannot be scored."""


@dataclass(frozen=True)
class Profile:
    """Weights of one NAB application profile."""

    name: str
    tp_weight: float
    fp_weight: float
    fn_weight: float


# Weights of NAB v1.1 ``config/profiles.json``.
PROFILES: dict[str, Profile] = {
    "standard": Profile("standard", tp_weight=1.0, fp_weight=0.11, fn_weight=1.0),
    "reward_low_FP_rate": Profile(
        "reward_low_FP_rate", tp_weight=1.0, fp_weight=0.22, fn_weight=1.0
    ),
    "reward_low_FN_rate": Profile(
        "reward_low_FN_rate", tp_weight=1.0, fp_weight=0.11, fn_weight=2.0
    ),
}


def scaled_sigmoid(position: float) -> float:
    """Return NAB's scaled sigmoid of a relative position: 0.98661 at -1, 0 at 0, -1 from 3 on."""
    if position >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


MAX_TP = scaled_sigmoid(-1.0)


def _scaled_sigmoid_array(positions: np.ndarray) -> np.ndarray:
    clipped = np.minimum(positions, 3.0)
    return np.where(clipped >= 3.0, -1.0, 2.0 / (1.0 + np.exp(5.0 * clipped)) - 1.0)


def probationary_length(rows: int) -> int:
    """Return the number of leading rows that NAB leaves unscored in a file of ``rows`` rows."""
    return int(
        min(math.floor(PROBATIONARY_FRACTION * rows), PROBATIONARY_FRACTION * PROBATIONARY_CAP_ROWS)
    )


@dataclass
class FileLabels:
    """One data file: its row count and its anomaly windows as inclusive row index ranges."""

    name: str
    rows: int
    windows: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        previous_end = -1
        for start, end in self.windows:
            if not 0 <= start <= end < self.rows:
                raise ScoringError(
                    f"window ({start}, {end}) of {self.name} is outside rows 0-{self.rows - 1}; "
                    "give windows as inclusive row indices inside the file"
                )
            if start <= previous_end:
                raise ScoringError(
                    f"windows of {self.name} overlap or are unsorted at ({start}, {end}); "
                    "sort the windows and merge overlapping ones"
                )
            previous_end = end


def windows_from_timestamps(
    timestamps: Sequence, windows: Iterable[tuple[object, object]]
) -> list[tuple[int, int]]:
    """Map ``(start, end)`` time windows to inclusive row ranges of ``timestamps``.

    A row belongs to a window when ``start <= timestamp <= end``, so repeated or
    out-of-order timestamps are handled by position. Windows that cover no row are left out.
    """
    moments = np.asarray(timestamps, dtype="datetime64[ns]")
    ranges = []
    for start, end in windows:
        start64 = np.datetime64(_naive_utc(start), "ns")
        end64 = np.datetime64(_naive_utc(end), "ns")
        inside = np.flatnonzero((moments >= start64) & (moments <= end64))
        if inside.size:
            ranges.append((int(inside[0]), int(inside[-1])))
    return ranges


def _naive_utc(moment: object):
    import pandas as pd

    stamp = pd.Timestamp(moment)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp.to_datetime64()


def windows_from_labels(labels: Sequence[int] | np.ndarray) -> list[tuple[int, int]]:
    """Turn 0/1 point labels into the inclusive row ranges of their runs of 1."""
    flags = np.asarray(labels, dtype=bool).astype(np.int8)
    edges = np.diff(np.concatenate([[0], flags, [0]]))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1) - 1
    return [(int(s), int(e)) for s, e in zip(starts, ends, strict=True)]


@dataclass
class _Sweep:
    """Per-row NAB weights of one file for one profile."""

    weights: np.ndarray  # score of a detection at each row
    outside: np.ndarray  # True for scorable rows outside every window
    scorable: np.ndarray  # False in the probationary period
    # Inclusive row ranges of the scorable part of each window that has one.
    window_ranges: list[tuple[int, int]]

    @property
    def window_count(self) -> int:
        return len(self.window_ranges)


def _sweep(labels: FileLabels, profile: Profile) -> _Sweep:
    rows = labels.rows
    weights = np.empty(rows, dtype=float)
    in_window = np.zeros(rows, dtype=bool)
    previous_end: int | None = None
    previous_width = 0
    cursor = 0
    for start, end in [*labels.windows, (rows, rows)]:
        # Rows between the previous window (or the file start) and this window are outside.
        outside = np.arange(cursor, min(start, rows))
        if previous_end is None:
            weights[outside] = -profile.fp_weight
        else:
            positions = (outside - previous_end) / max(previous_width - 1, 1)
            weights[outside] = profile.fp_weight * _scaled_sigmoid_array(positions)
        if start >= rows:
            break
        width = end - start + 1
        inside = np.arange(start, end + 1)
        positions = -(end - inside + 1) / width
        weights[inside] = profile.tp_weight * _scaled_sigmoid_array(positions) / MAX_TP
        in_window[inside] = True
        previous_end, previous_width, cursor = end, width, end + 1
    first_scored = probationary_length(rows)
    scorable = np.arange(rows) >= first_scored
    ranges = [
        (max(start, first_scored), end) for start, end in labels.windows if end >= first_scored
    ]
    return _Sweep(weights, scorable & ~in_window, scorable, ranges)


@dataclass
class FileScore:
    """Raw NAB score of one file and its detection counts."""

    name: str
    raw: float
    windows: int
    true_positives: int  # windows with a detection
    false_negatives: int  # windows without one
    false_positives: int  # scorable detections outside every window


def score_file(
    labels: FileLabels, detections: Sequence[bool] | np.ndarray, profile: Profile
) -> FileScore:
    """Return the raw NAB score of one file's boolean detections, one per row."""
    flags = np.asarray(detections, dtype=bool)
    if flags.shape != (labels.rows,):
        raise ScoringError(
            f"{labels.name} has {labels.rows} rows but {flags.size} detections; "
            "pass one detection flag per row"
        )
    sweep = _sweep(labels, profile)
    return _score_sweep(labels.name, sweep, flags, profile)


def _score_sweep(name: str, sweep: _Sweep, flags: np.ndarray, profile: Profile) -> FileScore:
    false_positives = flags & sweep.outside
    raw = float(sweep.weights[false_positives].sum())
    hit = 0
    for start, end in sweep.window_ranges:
        detected = np.flatnonzero(flags[start : end + 1])
        if detected.size:
            # Weights fall from the window's first row to its last: the earliest detection is best.
            hit += 1
            raw += float(sweep.weights[start + detected[0]])
        else:
            raw -= profile.fn_weight
    return FileScore(
        name=name,
        raw=raw,
        windows=sweep.window_count,
        true_positives=hit,
        false_negatives=sweep.window_count - hit,
        false_positives=int(false_positives.sum()),
    )


@dataclass
class CorpusScore:
    """NAB score of a corpus under one profile."""

    profile: str
    score: float  # normalised: perfect detector 100, null detector 0
    raw: float
    null: float
    perfect: float
    threshold: float | None
    files: list[FileScore]

    def totals(self) -> dict[str, int]:
        return {
            "windows": sum(f.windows for f in self.files),
            "true_positives": sum(f.true_positives for f in self.files),
            "false_negatives": sum(f.false_negatives for f in self.files),
            "false_positives": sum(f.false_positives for f in self.files),
        }


def normalise(raw: float, null: float, perfect: float) -> float:
    """Scale a raw score so that the null detector gets 0 and the perfect detector 100."""
    if perfect <= null:
        raise ScoringError(
            "the corpus has no scorable anomaly window, so NAB scores are undefined; "
            "label at least one window after the probationary period"
        )
    return 100.0 * (raw - null) / (perfect - null)


def _reference_scores(files: Sequence[FileLabels], sweeps: Sequence[_Sweep], profile: Profile):
    null = 0.0
    perfect = 0.0
    for labels, sweep in zip(files, sweeps, strict=True):
        empty = np.zeros(labels.rows, dtype=bool)
        null += _score_sweep(labels.name, sweep, empty, profile).raw
        ideal = np.zeros(labels.rows, dtype=bool)
        for start, _ in sweep.window_ranges:
            ideal[start] = True
        perfect += _score_sweep(labels.name, sweep, ideal, profile).raw
    return null, perfect


def score_corpus(
    files: Sequence[FileLabels],
    detections: Sequence[Sequence[bool] | np.ndarray],
    profile: Profile | str = "standard",
) -> CorpusScore:
    """Return the normalised NAB score of boolean detections, one array per file."""
    profile = _profile(profile)
    if len(files) != len(detections):
        raise ScoringError(f"got {len(detections)} detection arrays for {len(files)} files")
    sweeps = [_sweep(labels, profile) for labels in files]
    null, perfect = _reference_scores(files, sweeps, profile)
    return _score_with_sweeps(files, sweeps, detections, profile, null, perfect)


def _score_with_sweeps(files, sweeps, detections, profile, null, perfect) -> CorpusScore:
    scores = []
    for labels, sweep, flags in zip(files, sweeps, detections, strict=True):
        flags = np.asarray(flags, dtype=bool)
        if flags.shape != (labels.rows,):
            raise ScoringError(
                f"{labels.name} has {labels.rows} rows but {flags.size} detections; "
                "pass one detection flag per row"
            )
        scores.append(_score_sweep(labels.name, sweep, flags, profile))
    raw = sum(s.raw for s in scores)
    return CorpusScore(
        profile.name, normalise(raw, null, perfect), raw, null, perfect, None, scores
    )


def optimise_threshold(
    files: Sequence[FileLabels],
    anomaly_scores: Sequence[Sequence[float] | np.ndarray],
    profile: Profile | str = "standard",
    max_candidates: int = 400,
) -> CorpusScore:
    """Return the best corpus score over thresholds on continuous anomaly scores.

    As in NAB, one threshold serves the whole corpus and a row is a detection when its
    score is at or above it. The candidates are the distinct scores (thinned to
    ``max_candidates`` quantiles when there are more) plus infinity, the null detector.
    Ties go to the higher threshold. NaN scores never detect.
    """
    profile = _profile(profile)
    arrays = [np.nan_to_num(np.asarray(s, dtype=float), nan=-np.inf) for s in anomaly_scores]
    finite = np.concatenate([a[np.isfinite(a)] for a in arrays]) if arrays else np.array([])
    candidates = np.unique(finite)
    if candidates.size > max_candidates:
        positions = np.linspace(0, 1, max_candidates)
        candidates = np.unique(np.quantile(finite, positions, method="lower"))
    if len(files) != len(arrays):
        raise ScoringError(f"got {len(arrays)} score arrays for {len(files)} files")
    sweeps = [_sweep(labels, profile) for labels in files]
    null, perfect = _reference_scores(files, sweeps, profile)
    best: CorpusScore | None = None
    # From the highest threshold down, so that ties go to the threshold with fewer detections.
    for threshold in [math.inf, *candidates[::-1]]:
        flags = [a >= threshold for a in arrays]
        result = _score_with_sweeps(files, sweeps, flags, profile, null, perfect)
        if best is None or result.score > best.score:
            best = result
            best.threshold = float(threshold)
    assert best is not None
    return best


def _profile(profile: Profile | str) -> Profile:
    if isinstance(profile, Profile):
        return profile
    try:
        return PROFILES[profile]
    except KeyError:
        raise ScoringError(
            f"NAB profile {profile!r} is unknown; use one of {', '.join(PROFILES)}"
        ) from None

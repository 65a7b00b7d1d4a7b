"""Run an anomaly detector over a labelled dataset and score it with NAB and SKAB's protocol.

The platform detector is ``actions.detect_anomaly.detect``, called in-process against a
real Redis server (the one the caller's settings point at, or one started on a free port
by :func:`evaluate_anomalies`). Each file is one device, replayed in file order in
batches of at most ``MAX_READINGS`` readings, under a device id unique to the run so
that no state of an earlier run is reused. The run deletes its state keys at the end.

Scores:

- NAB (all three profiles) of the detector's own flags, and of the best single
  threshold on its continuous score (max ``|z|`` over metrics), which is how NAB scores
  every detector on its scoreboard;
- SKAB's outlier metrics (F1, FAR, MAR) of the flags against the point labels: the
  ``anomaly`` column in the SKAB layout, or membership of a window in the NAB layout.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from saodf.evaluation import nab, skab
from saodf.evaluation.datasets import LabelledDataset, LabelledSeries
from saodf.telemetry import SCHEMA_VERSION, format_timestamp

logger = logging.getLogger(__name__)

# Published anchors, stated beside the measured scores.
ANCHORS = {
    "skab_f1": {
        "value": 0.78,
        "source": "SKAB outlier detection leaderboard, best F1 (Conv-AE and MSET), SKAB v0.9 "
        "(github.com/waico/SKAB)",
    },
    "nab_standard": {
        "value": 70.1,
        "source": "NAB scoreboard, standard profile, Numenta HTM, NAB v1.1 "
        "(github.com/numenta/NAB)",
    },
}
GOALS = {"skab_f1": 0.80, "nab_standard": 70.0}


@dataclass
class Detection:
    """Per-row output of a detector over one file."""

    flags: np.ndarray  # bool, True where the detector raised an alarm
    scores: np.ndarray  # float anomaly score, higher is more anomalous, NaN when unscored


Detector = Callable[[LabelledSeries], Detection]


@dataclass
class AnomalyEvaluation:
    """Scores of one detector on one dataset, and the inputs needed to reproduce them."""

    dataset: str
    layout: str
    detector: str
    parameters: dict[str, Any]
    files: int
    rows: int
    unlabelled: list[str]
    nab: dict[str, dict[str, Any]]
    nab_optimised: dict[str, dict[str, Any]]
    skab: dict[str, Any]
    seconds: float
    per_file: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "layout": self.layout,
            "detector": self.detector,
            "parameters": self.parameters,
            "files": self.files,
            "rows": self.rows,
            "unlabelled": self.unlabelled,
            "nab": self.nab,
            "nab_optimised_threshold": self.nab_optimised,
            "skab_outlier": self.skab,
            "seconds": self.seconds,
            "anchors": ANCHORS,
            "goals": GOALS,
            "per_file": self.per_file,
        }


def _messages(series: LabelledSeries, device_id: str) -> tuple[list[dict], np.ndarray]:
    """Build one telemetry message per row with at least one metric, and those rows' indices."""
    frame = series.series.frame
    metrics = series.series.metrics
    values = frame[metrics].to_numpy(dtype="float64")
    moments = frame["timestamp"]
    messages, rows = [], []
    for index in range(len(frame)):
        message: dict[str, Any] = {
            "device_id": device_id,
            "timestamp": format_timestamp(moments.iloc[index].to_pydatetime()),
            "schema_version": SCHEMA_VERSION,
        }
        for name, value in zip(metrics, values[index], strict=True):
            if not math.isnan(value):
                message[name] = float(value)
        if len(message) > 3:
            messages.append(message)
            rows.append(index)
    return messages, np.asarray(rows, dtype=np.int64)


def platform_detector(cache, params: dict[str, float] | None = None, run_id: str | None = None):
    """Build a :data:`Detector` that scores rows with ``actions.detect_anomaly.detect``.

    Returns:
        The detector, a function that deletes the run's state keys and returns their
        count, and the detector parameters in effect.
    """
    from actions.detect_anomaly import DEFAULTS, MAX_READINGS, STATE_KEY_PREFIX, detect

    params = {**DEFAULTS, **(params or {})}
    run_id = run_id or uuid.uuid4().hex[:8]

    def run(series: LabelledSeries) -> Detection:
        device_id = f"eval-{run_id}-{series.series.device_id}"[:128]
        messages, rows = _messages(series, device_id)
        flags = np.zeros(series.rows, dtype=bool)
        scores = np.full(series.rows, np.nan)
        for start in range(0, len(messages), MAX_READINGS):
            batch = messages[start : start + MAX_READINGS]
            results = detect(batch, cache, params)
            for offset, result in enumerate(results):
                row = rows[start + offset]
                if not result["valid"]:
                    logger.warning(
                        "row %d of %s is invalid telemetry: %s", row, series.name, result["reason"]
                    )
                    continue
                flags[row] = result["anomalous"]
                if result["score"] is not None:
                    scores[row] = result["score"]
        return Detection(flags, scores)

    def cleanup() -> int:
        pattern = f"{STATE_KEY_PREFIX}eval-{run_id}-*"
        keys = list(cache.client.scan_iter(match=pattern, count=1000))
        for start in range(0, len(keys), 1000):
            cache.client.delete(*keys[start : start + 1000])
        return len(keys)

    return run, cleanup, params


def _nab_summary(result: nab.CorpusScore) -> dict[str, Any]:
    return {
        "score": round(result.score, 3),
        "raw": round(result.raw, 4),
        "null": round(result.null, 4),
        "perfect": round(result.perfect, 4),
        "threshold": result.threshold,
        **result.totals(),
    }


def score_detections(
    dataset: LabelledDataset, detections: Sequence[Detection]
) -> tuple[dict, dict, dict, list[dict]]:
    """Score detections with every NAB profile (flags and best threshold) and SKAB's metrics."""
    files = [nab.FileLabels(s.name, s.rows, s.windows) for s in dataset.series]
    flags = [d.flags for d in detections]
    scores = [d.scores for d in detections]
    fixed, optimised = {}, {}
    for profile in nab.PROFILES:
        fixed[profile] = _nab_summary(nab.score_corpus(files, flags, profile))
        optimised[profile] = _nab_summary(nab.optimise_threshold(files, scores, profile))
    outlier = skab.outlier_metrics([s.labels for s in dataset.series], flags).to_dict()
    per_file = []
    standard = nab.PROFILES["standard"]
    for item, labels, detection in zip(dataset.series, files, detections, strict=True):
        file_score = nab.score_file(labels, detection.flags, standard)
        metrics = skab.outlier_metrics([item.labels], [detection.flags])
        per_file.append(
            {
                "file": item.name,
                "rows": item.rows,
                "windows": len(item.windows),
                "alarms": int(detection.flags.sum()),
                "nab_standard_raw": round(file_score.raw, 4),
                "windows_detected": file_score.true_positives,
                "f1": round(metrics.f1, 4),
            }
        )
    return fixed, optimised, outlier, per_file


def evaluate_dataset(
    dataset: LabelledDataset,
    detector: Detector,
    detector_name: str,
    parameters: dict[str, Any],
) -> AnomalyEvaluation:
    """Run ``detector`` over every labelled file of ``dataset`` and score the result."""
    started = time.monotonic()
    detections = []
    for item in dataset.series:
        detections.append(detector(item))
        logger.debug("scored %s: %d alarms", item.name, int(detections[-1].flags.sum()))
    fixed, optimised, outlier, per_file = score_detections(dataset, detections)
    seconds = time.monotonic() - started
    logger.info(
        "evaluated %s on %s in %.1f s: NAB standard %.2f, F1 %.3f",
        detector_name,
        dataset.root,
        seconds,
        fixed["standard"]["score"],
        outlier["f1"],
    )
    return AnomalyEvaluation(
        dataset=str(dataset.root),
        layout=dataset.layout,
        detector=detector_name,
        parameters=parameters,
        files=len(dataset.series),
        rows=sum(s.rows for s in dataset.series),
        unlabelled=dataset.unlabelled,
        nab=fixed,
        nab_optimised=optimised,
        skab=outlier,
        seconds=round(seconds, 2),
        per_file=per_file,
    )


def summary_lines(evaluation: AnomalyEvaluation) -> list[str]:
    """Return the lines that ``saodf evaluate anomalies`` prints."""
    outlier = evaluation.skab
    lines = [
        f"dataset {evaluation.dataset} ({evaluation.layout} layout): {evaluation.files} labelled "
        f"files, {evaluation.rows} rows, {len(evaluation.unlabelled)} unlabelled files skipped",
        f"detector {evaluation.detector}: {evaluation.seconds:.1f} s",
        "NAB score (perfect 100, null 0)   flags   best threshold",
    ]
    for profile in nab.PROFILES:
        fixed = evaluation.nab[profile]["score"]
        best = evaluation.nab_optimised[profile]
        lines.append(
            f"  {profile:<20}           {fixed:7.2f}   {best['score']:7.2f} "
            f"(score >= {best['threshold']:.4g})"
        )
    lines.append(
        f"SKAB outlier protocol: F1 {outlier['f1']:.3f}, FAR {100 * outlier['false_alarm_rate']:.2f}%, "
        f"MAR {100 * outlier['missing_alarm_rate']:.2f}% (precision {outlier['precision']:.3f}, "
        f"recall {outlier['recall']:.3f})"
    )
    lines.append(
        f"anchors: SKAB best F1 {ANCHORS['skab_f1']['value']} (Conv-AE, MSET); NAB standard "
        f"{ANCHORS['nab_standard']['value']} (Numenta HTM). Goals: F1 >= {GOALS['skab_f1']}, "
        f"NAB standard >= {GOALS['nab_standard']}."
    )
    return lines


def write_report(evaluation: AnomalyEvaluation, out_dir: Path) -> tuple[Path, Path]:
    """Write ``anomalies.json`` and ``anomalies.md`` under ``out_dir``; return both paths."""
    import json

    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "anomalies.json"
    json_path.write_text(json.dumps(evaluation.to_dict(), indent=2, default=str) + "\n")
    lines = [
        f"# Anomaly evaluation: {evaluation.detector} on {evaluation.dataset}",
        "",
        f"{evaluation.files} labelled files ({evaluation.layout} layout), {evaluation.rows} rows, "
        f"{evaluation.seconds:.1f} s. Detector parameters: `{evaluation.parameters}`.",
        "",
        "## NAB",
        "",
        "Normalised so that the perfect detector scores 100 and the null detector 0. "
        "`flags` scores the detector's own alarms; `best threshold` scores the best single "
        "threshold on its continuous score, as NAB's scoreboard does.",
        "",
        "| profile | flags | best threshold | threshold | windows | detected | false positives |",
        "|---|---|---|---|---|---|---|",
    ]
    for profile in nab.PROFILES:
        fixed = evaluation.nab[profile]
        best = evaluation.nab_optimised[profile]
        lines.append(
            f"| {profile} | {fixed['score']:.2f} | {best['score']:.2f} | {best['threshold']:.4g} | "
            f"{fixed['windows']} | {fixed['true_positives']} | {fixed['false_positives']} |"
        )
    outlier = evaluation.skab
    lines += [
        "",
        "## SKAB outlier protocol",
        "",
        "Every row is one decision, pooled over files.",
        "",
        "| F1 | FAR, % | MAR, % | precision | recall |",
        "|---|---|---|---|---|",
        f"| {outlier['f1']:.3f} | {100 * outlier['false_alarm_rate']:.2f} | "
        f"{100 * outlier['missing_alarm_rate']:.2f} | {outlier['precision']:.3f} | "
        f"{outlier['recall']:.3f} |",
        "",
        "## Published anchors",
        "",
    ]
    for name, anchor in ANCHORS.items():
        lines.append(f"- {name}: {anchor['value']}, {anchor['source']}; goal {GOALS[name]}")
    lines += ["", "## Per file", "", "| file | rows | windows | alarms | detected | NAB raw | F1 |"]
    lines.append("|---|---|---|---|---|---|---|")
    for row in evaluation.per_file:
        lines.append(
            f"| {row['file']} | {row['rows']} | {row['windows']} | {row['alarms']} | "
            f"{row['windows_detected']} | {row['nab_standard_raw']} | {row['f1']} |"
        )
    if evaluation.unlabelled:
        lines += ["", "Unlabelled files, not scored: " + ", ".join(evaluation.unlabelled)]
    md_path = out_dir / "anomalies.md"
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return json_path, md_path


def evaluate_anomalies(
    dataset_path: Path | str,
    settings,
    detector: str = "platform",
    params: dict[str, float] | None = None,
    groups: list[str] | None = None,
    own_redis: bool = True,
) -> AnomalyEvaluation:
    """Load a labelled dataset, run a detector over it and score it.

    Args:
        dataset_path: root of a NAB- or SKAB-layout folder.
        settings: SAODF settings; their Redis is used when ``own_redis`` is False.
        detector: ``platform`` (the ``detect_anomaly`` action) or a name from
            :data:`saodf.evaluation.detectors.DETECTORS`.
        params: detector parameters that replace its defaults.
        groups: dataset groups to score (default: all).
        own_redis: start a redis-server on a free 127.0.0.1 port for the run and stop it after.
    """
    from saodf.evaluation import detectors
    from saodf.evaluation.datasets import load_dataset

    dataset = load_dataset(dataset_path, groups)
    if detector != "platform":
        run, parameters = detectors.build(detector, params)
        return evaluate_dataset(dataset, run, detector, parameters)

    from actions.cache import ForecastCache, redis_client
    from actions.redis_acl import EVALUATION
    from saodf.bench import local_services

    def evaluate(redis_settings) -> AnomalyEvaluation:
        cache = ForecastCache(redis_client(redis_settings, timeout=30.0, role=EVALUATION))
        run, cleanup, parameters = platform_detector(cache, params)
        try:
            return evaluate_dataset(dataset, run, "platform detect_anomaly", parameters)
        finally:
            deleted = cleanup()
            logger.info("deleted %d detector state keys of the evaluation run", deleted)

    if not own_redis:
        return evaluate(settings)
    with local_services(["redis"], settings) as redis_settings:
        return evaluate(redis_settings)

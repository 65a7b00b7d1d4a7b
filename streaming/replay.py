"""Replay producer: send the readings of a shared dataset to the raw topic as telemetry.

Each NAB series and each SKAB experiment file becomes one device, keyed by its
``device_id`` so that one device's readings stay in order on one partition. Series are
sent one after another. With ``speed > 0`` the gaps between a series' own timestamps
are replayed ``speed`` times faster, each gap capped at ``max_sleep`` seconds.

Run it with ``python -m streaming.replay skab --group valve1 --limit 1000``.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from etl.readers import DATASETS, iter_dataset, to_messages
from saodf.config import Settings, get_settings
from saodf.errors import ConfigError, DatasetError, SaodfError
from saodf.log import configure_logging
from saodf.telemetry import encode_message, parse_timestamp
from streaming.kafka import (
    DeliveryTracker,
    StreamingError,
    ensure_topics,
    flush_or_raise,
    produce_polling,
    producer_config,
    require_broker,
)

logger = logging.getLogger(__name__)

DEFAULT_MAX_SLEEP_S = 5.0
FLUSH_TIMEOUT_S = 60.0


@dataclass
class ReplayStats:
    """Counts of one replay, with ``skipped`` counting the rows the readers skipped per reason."""

    dataset: str
    topic: str
    series: int = 0
    produced: int = 0
    delivered: int = 0
    rows_read: int = 0
    rows_kept: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)
    reports: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    limited: bool = False

    @property
    def rows_skipped(self) -> int:
        return sum(self.skipped.values())

    def add_report(self, report_dict: dict[str, Any]) -> None:
        self.reports.append(report_dict)
        self.rows_read += report_dict["rows_read"]
        self.rows_kept += report_dict["rows_kept"]
        for reason, count in report_dict["skipped"].items():
            self.skipped[reason] = self.skipped.get(reason, 0) + count
        for name, count in report_dict["notes"].items():
            self.notes[name] = self.notes.get(name, 0) + count

    def summary_lines(self) -> list[str]:
        """Describe the replay in a few lines for a terminal, skipped rows included."""
        rate = self.delivered / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"Replayed {self.dataset}: {self.delivered} message(s) from {self.series} series "
            f"to {self.topic} in {self.seconds:.1f} s ({rate:,.0f} msg/s)",
            f"Rows read {self.rows_read}, kept {self.rows_kept}, skipped {self.rows_skipped}",
        ]
        if self.limited:
            lines.append("Stopped at the message limit; later rows and series were not sent")
        for reason, count in sorted(self.skipped.items()):
            lines.append(f"  skipped {count} row(s): {reason}")
        for name, count in sorted(self.notes.items()):
            lines.append(f"  note: {count} {name}")
        return lines


class _Pacer:
    """Sleep so that a series' readings go out ``speed`` times faster than they were taken."""

    def __init__(self, producer: Producer, speed: float, max_sleep: float):
        self.producer = producer
        self.speed = speed
        self.max_sleep = max_sleep
        self.previous = None
        self.due = time.monotonic()

    def start_series(self) -> None:
        self.previous = None
        self.due = time.monotonic()

    def wait(self, timestamp: str) -> None:
        if self.speed <= 0:
            return
        moment = parse_timestamp(timestamp)
        if self.previous is not None:
            gap = (moment - self.previous).total_seconds() / self.speed
            self.due += min(max(gap, 0.0), self.max_sleep)
        self.previous = moment
        # poll() both sleeps and serves delivery reports. Each gap adds at most max_sleep.
        while (remaining := self.due - time.monotonic()) > 0:
            self.producer.poll(min(remaining, 0.5))


def _check_arguments(dataset: str, speed: float, limit: int | None, max_sleep: float) -> None:
    if dataset not in DATASETS:
        raise DatasetError(f"dataset {dataset!r} is unknown; valid datasets: {', '.join(DATASETS)}")
    if speed < 0:
        raise ConfigError(f"speed={speed} is invalid; use 0 (as fast as possible) or a factor > 0")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit={limit} is invalid; use a positive message count or no limit")
    if max_sleep <= 0:
        raise ConfigError(f"max_sleep={max_sleep} is invalid; use a number of seconds > 0")


def replay(
    dataset: str,
    data_dir: Path | str | None = None,
    groups: list[str] | None = None,
    speed: float = 0.0,
    settings: Settings | None = None,
    progress: bool = True,
    limit: int | None = None,
    max_sleep: float = DEFAULT_MAX_SLEEP_S,
) -> ReplayStats:
    """Produce the readings of ``dataset`` to ``settings.topic_raw`` and wait for delivery.

    Args:
        dataset: ``"nab"`` or ``"skab"``.
        data_dir: The folder that contains the dataset folders; ``settings.data_dir`` when None.
        groups: Dataset groups (e.g. ``["valve1"]``); all groups when None.
        speed: 0 sends as fast as possible; N replays the readings' own gaps N times faster.
        settings: The broker and topic settings; :func:`get_settings` when None.
        progress: Show a progress bar on the terminal.
        limit: The maximum number of messages to send in total.
        max_sleep: The cap in seconds on one paced wait, so long gaps in a series do not stall.

    Raises:
        DatasetError: the dataset, its folder or a group is unknown or missing.
        StreamingError: a message was not delivered.
    """
    _check_arguments(dataset, speed, limit, max_sleep)
    settings = settings or get_settings()
    data_dir = Path(data_dir) if data_dir is not None else settings.data_dir
    series_iter = iter_dataset(dataset, data_dir, groups)
    # Pulling the first series surfaces a missing folder or unknown group before any connection.
    first = next(series_iter, None)
    stats = ReplayStats(dataset=dataset, topic=settings.topic_raw)
    if first is None:
        raise DatasetError(f"{dataset} in {data_dir} has no data files for groups {groups}")
    ensure_topics(settings, [settings.topic_raw])
    tracker = DeliveryTracker()
    require_broker(settings)
    producer = Producer(producer_config(settings, role="replay"))
    pacer = _Pacer(producer, speed, max_sleep)
    started = time.monotonic()
    logger.info(
        "replaying %s from %s (groups %s) to %s at speed %s",
        dataset,
        data_dir,
        groups or "all",
        settings.topic_raw,
        speed,
    )
    with _progress_bar(progress) as bar:
        task = bar.add_task("replay", total=limit, device="")
        for series, report in itertools.chain([first], series_iter):
            stats.series += 1
            pacer.start_series()
            bar.update(task, device=series.device_id)
            for message in to_messages(series, report):
                if limit is not None and stats.produced >= limit:
                    stats.limited = True
                    break
                pacer.wait(message["timestamp"])
                produce_polling(
                    producer,
                    settings.topic_raw,
                    encode_message(message),
                    key=series.device_id,
                    on_delivery=tracker,
                )
                stats.produced += 1
                bar.advance(task)
            # The report is complete only after to_messages has run over the series.
            report.log()
            stats.add_report(report.to_dict())
            if stats.limited:
                break
        try:
            flush_or_raise(producer, tracker, timeout=FLUSH_TIMEOUT_S)
        finally:
            stats.delivered = tracker.delivered
            stats.seconds = time.monotonic() - started
    if stats.delivered != stats.produced:
        raise StreamingError(
            f"{stats.produced - stats.delivered} of {stats.produced} message(s) to "
            f"{settings.topic_raw} have no delivery report; replay them again"
        )
    logger.info(
        "replayed %d message(s) of %s from %d series; %d row(s) skipped by the readers: %s",
        stats.delivered,
        dataset,
        stats.series,
        stats.rows_skipped,
        stats.skipped,
    )
    return stats


def _progress_bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}[/] {task.fields[device]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not enabled,
        transient=False,
    )


def main(argv: list[str] | None = None) -> int:
    """Replay a dataset from the command line and print the counts, skipped rows included."""
    parser = argparse.ArgumentParser(
        prog="python -m streaming.replay", description="Replay a dataset to the raw topic."
    )
    parser.add_argument("dataset", help=f"dataset name: {', '.join(DATASETS)}")
    parser.add_argument("--data-dir", default=None, help="folder with the dataset folders")
    parser.add_argument(
        "--group", action="append", dest="groups", help="dataset group; repeat for several"
    )
    parser.add_argument(
        "--speed", type=float, default=0.0, help="replay factor; 0 sends as fast as possible"
    )
    parser.add_argument("--limit", type=int, default=None, help="maximum messages to send")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)

    configure_logging()
    console = Console()
    try:
        stats = replay(
            args.dataset,
            args.data_dir,
            args.groups,
            speed=args.speed,
            progress=not args.no_progress,
            limit=args.limit,
        )
    except SaodfError as exc:
        console.print(f"[red]error:[/] {exc}")
        return 1

    for line in stats.summary_lines():
        console.print(line, markup=False, highlight=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

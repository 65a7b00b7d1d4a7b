"""Reader of the prepared dataset that the preprocessing job writes.

Layout under the prepared URL (``file://`` or ``s3://``)::

    manifest.json                      run key, config, one entry per frequency group
    groups/{group}/train/data.jsonl    DeepAR JSON Lines, one series per line
    groups/{group}/test/data.jsonl     each train line plus the last prediction_length points

Lines are in the order of the group's ``series`` list in the manifest.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import fsspec
import numpy as np

from models.errors import ModelInputError


@dataclass(frozen=True)
class GroupSpec:
    """One frequency group of the manifest."""

    group: str
    freq: str
    prediction_length: int
    context_length: int
    train: str
    test: str
    series: list[dict] = field(default_factory=list)
    dynamic_feat_names: list[str] = field(default_factory=list)


def join_url(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts if p]])


def read_manifest(prepared_url: str) -> dict:
    """Read ``manifest.json`` under ``prepared_url``.

    Raises:
        ModelInputError: the manifest is missing or is not a JSON object with ``groups``.
    """
    url = join_url(prepared_url, "manifest.json")
    try:
        with fsspec.open(url, "r", encoding="utf-8") as handle:
            manifest = json.load(handle)
    except FileNotFoundError:
        raise ModelInputError(
            f"prepared manifest {url} not found; run the preprocessing job first"
        ) from None
    except json.JSONDecodeError as exc:
        raise ModelInputError(f"prepared manifest {url} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("groups"), list):
        raise ModelInputError(f"prepared manifest {url} has no 'groups' list")
    return manifest


def group_specs(manifest: Mapping) -> list[GroupSpec]:
    """Return the groups of ``manifest``, checking the fields that training needs."""
    specs = []
    for entry in manifest["groups"]:
        try:
            specs.append(
                GroupSpec(
                    group=str(entry["group"]),
                    freq=str(entry["freq"]),
                    prediction_length=int(entry["prediction_length"]),
                    context_length=int(entry["context_length"]),
                    train=str(entry["train"]),
                    test=str(entry["test"]),
                    series=list(entry.get("series", [])),
                    dynamic_feat_names=list(entry.get("dynamic_feat_names", [])),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelInputError(
                f"manifest group {entry.get('group', '?')!r} is invalid ({exc!r}); it needs "
                "group, freq, prediction_length, context_length, train and test"
            ) from None
    return specs


def read_records(prepared_url: str, relative_path: str) -> list[dict]:
    """Read one DeepAR JSON Lines channel and return its records with float targets.

    ``"NaN"`` strings and nulls in ``target`` become ``float('nan')``.

    Raises:
        ModelInputError: the file is missing, or a line lacks ``start`` or ``target``.
    """
    url = join_url(prepared_url, relative_path)
    records = []
    try:
        with fsspec.open(url, "r", encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                records.append(parse_record(line, f"{url} line {number}"))
    except FileNotFoundError:
        raise ModelInputError(f"prepared channel {url} not found") from None
    return records


def parse_record(line: str, where: str) -> dict:
    """Parse one DeepAR JSON line; ``where`` names the line in error messages."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ModelInputError(f"{where} is not valid JSON: {exc}") from None
    return normalize_record(record, where)


def normalize_record(record: object, where: str) -> dict:
    """Return a DeepAR record with ``target`` as a float array and ``cat`` as a list of ints.

    Raises:
        ModelInputError: ``start`` or ``target`` is missing or ``target`` is not numeric.
    """
    if not isinstance(record, Mapping) or "start" not in record or "target" not in record:
        raise ModelInputError(f"{where} needs 'start' and 'target'")
    try:
        target = np.asarray(
            [math.nan if v is None else float(v) for v in record["target"]], dtype=float
        )
    except (TypeError, ValueError):
        raise ModelInputError(
            f'{where} has a non-numeric target value; use numbers and "NaN" for gaps'
        ) from None
    if target.size == 0:
        raise ModelInputError(f"{where} has an empty target")
    result = {"start": str(record["start"]), "target": target}
    cat = record.get("cat")
    if cat is not None:
        cat_list = list(cat) if isinstance(cat, (list, tuple, np.ndarray)) else [cat]
        try:
            result["cat"] = [int(c) for c in cat_list]
        except (TypeError, ValueError):
            raise ModelInputError(f"{where} has a non-integer cat {cat!r}") from None
    if record.get("dynamic_feat") is not None:
        result["dynamic_feat"] = np.asarray(record["dynamic_feat"], dtype=float)
    return result

"""``saodf data fetch``: download public datasets from their canonical locations on request.

Nothing else in SAODF touches the network: tests and the demo read local copies.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import urllib.request
from pathlib import Path

from saodf.errors import DatasetError

logger = logging.getLogger(__name__)

NAB_COMMIT = "ea702d75cc2258d9d7dd35ca8e5e2539d71f3140"
SKAB_COMMIT = "b2c0d46c2971dcbfe71e26087b6d231998bb91c2"
NAB_BASE = f"https://raw.githubusercontent.com/numenta/NAB/{NAB_COMMIT}"
SKAB_BASE = f"https://raw.githubusercontent.com/waico/SKAB/{SKAB_COMMIT}"
INTEL_LAB_URL = "http://db.csail.mit.edu/labdata/data.txt.gz"

NAB_FILES = {
    "artificialNoAnomaly": [
        "art_daily_no_noise",
        "art_daily_perfect_square_wave",
        "art_daily_small_noise",
        "art_flatline",
        "art_noisy",
    ],
    "artificialWithAnomaly": [
        "art_daily_flatmiddle",
        "art_daily_jumpsdown",
        "art_daily_jumpsup",
        "art_daily_nojump",
        "art_increase_spike_density",
        "art_load_balancer_spikes",
    ],
    "realAWSCloudwatch": [
        "ec2_cpu_utilization_24ae8d",
        "ec2_cpu_utilization_53ea38",
        "ec2_cpu_utilization_5f5533",
        "ec2_cpu_utilization_77c1ca",
        "ec2_cpu_utilization_825cc2",
        "ec2_cpu_utilization_ac20cd",
        "ec2_cpu_utilization_c6585a",
        "ec2_cpu_utilization_fe7f93",
        "ec2_disk_write_bytes_1ef3de",
        "ec2_disk_write_bytes_c0d644",
        "ec2_network_in_257a54",
        "ec2_network_in_5abac7",
        "elb_request_count_8c0756",
        "grok_asg_anomaly",
        "iio_us-east-1_i-a2eb1cd9_NetworkIn",
        "rds_cpu_utilization_cc0c53",
        "rds_cpu_utilization_e47b3b",
    ],
    "realKnownCause": [
        "ambient_temperature_system_failure",
        "cpu_utilization_asg_misconfiguration",
        "ec2_request_latency_system_failure",
        "machine_temperature_system_failure",
        "nyc_taxi",
        "rogue_agent_key_hold",
        "rogue_agent_key_updown",
    ],
}
SKAB_FILES = {
    "valve1": [str(i) for i in range(16)],
    "anomaly-free": ["anomaly-free"],
}


def plan(dataset: str) -> list[tuple[str, str]]:
    """Return (url, relative destination) pairs for ``dataset``."""
    if dataset == "nab":
        items = [
            (f"{NAB_BASE}/data/{group}/{name}.csv", f"nab/data/{group}/{name}.csv")
            for group, names in NAB_FILES.items()
            for name in names
        ]
        items += [
            (f"{NAB_BASE}/labels/{name}", f"nab/labels/{name}")
            for name in ("combined_windows.json", "combined_labels.json")
        ]
        items.append((f"{NAB_BASE}/LICENSE.txt", "nab/LICENSE.txt"))
        return items
    if dataset == "skab":
        items = [
            (f"{SKAB_BASE}/data/{group}/{name}.csv", f"skab/data/{group}/{name}.csv")
            for group, names in SKAB_FILES.items()
            for name in names
        ]
        items.append((f"{SKAB_BASE}/LICENSE", "skab/LICENSE"))
        return items
    if dataset == "intel":
        return [(INTEL_LAB_URL, "intel/data.txt.gz")]
    raise DatasetError(f"unknown dataset {dataset!r}; choose one of nab, skab, intel")


def fetch(dataset: str, dest: Path, overwrite: bool = False, echo=print) -> list[Path]:
    """Download ``dataset`` into ``dest`` in the layout the readers expect."""
    written = []
    for url, relative in plan(dataset):
        target = dest / relative
        if target.exists() and not overwrite:
            echo(f"  exists   {target}")
            written.append(target)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(target.suffix + ".part")
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:  # noqa: S310
                shutil.copyfileobj(response, out)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise DatasetError(
                f"download of {url} failed: {exc}; check the network and retry"
            ) from exc
        partial.replace(target)
        digest = hashlib.sha256(target.read_bytes()).hexdigest()[:12]
        logger.info("fetched %s -> %s (sha256 %s)", url, target, digest)
        echo(f"  fetched  {target}")
        written.append(target)
    return written

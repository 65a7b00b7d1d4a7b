"""Benchmark harness behind ``saodf bench``: discovery, time-bounded runs, JSON and records.

A benchmark is a module ``bench/<name>.py`` with a function::

    def run(settings: Settings, quick: bool) -> dict

``settings`` are the caller's settings (home, data folder). A benchmark that needs
services starts them itself on free 127.0.0.1 ports, for example with
:func:`local_services`, and stops them before it returns. ``quick=True`` selects a
small input that finishes in about a minute. The returned dict has exactly these keys:

``figures``
    ``{name: number}``, the measured values. Put the unit in the name
    (``produce_msgs_per_s``, ``train_seconds``, ``p99_ms``).
``reference``
    ``{name: number}``, values of a reference measured in the same run on the same
    machine (a plain pandas read of the same data, a raw client round trip), so that
    readers can judge the figures without knowing the machine. May be empty.
``ratios``
    ``{name: number}``, figures divided by references (state the direction in the name,
    e.g. ``pipeline_over_raw_read``). May be empty.
``goals``
    ``{name: {"target": number, "measured": number, "met": bool, "direction": "min"|"max"}}``,
    the targets the benchmark checks; ``direction`` ``max`` means higher is better. May be empty.
``notes``
    A list of strings: inputs, what was measured and what limits the figures.

Numbers are ints or floats (NaN is written as null). :func:`validate_result` checks the
schema. Each run writes ``bench/out/<name>-<UTC timestamp>.json`` with the result plus
``inputs`` (name, quick, timeout), ``machine`` (CPU count and model, memory, OS) and
``versions`` (Python, key packages, git commit), and appends a dated record to
``bench/RESULTS.md``.

Each benchmark runs in a child process in its own session. When it exceeds its time
limit the harness kills that session, which also ends any service the benchmark started
in it. NOTE: services started through :mod:`saodf.stack.process` get sessions of their
own, so a benchmark killed on timeout can leave them running (their pid files stay in
the benchmark's home).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import json
import logging
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from saodf.config import PROJECT_ROOT, Settings
from saodf.errors import SaodfError

logger = logging.getLogger(__name__)

BENCH_DIR = PROJECT_ROOT / "bench"
OUT_DIR = BENCH_DIR / "out"
RESULTS_FILE = BENCH_DIR / "RESULTS.md"
RESULT_KEYS = ("figures", "reference", "ratios", "goals", "notes")
DEFAULT_TIMEOUT_SECONDS = 1800.0
QUICK_TIMEOUT_SECONDS = 600.0
KEY_PACKAGES = (
    "apache-airflow",
    "mlflow",
    "gluonts",
    "torch",
    "statsforecast",
    "pandas",
    "numpy",
    "great-expectations",
    "confluent-kafka",
    "redis",
    "pyspark",
)
RESULTS_HEADER = """# Benchmark records

One record per `saodf bench` run, newest last. Each record names the machine and the
commit, and its full figures are in the JSON file it links under `bench/out/` (kept
out of version control). Rerun a benchmark with `saodf bench NAME` (add `--quick` for
the small input).
"""


class BenchmarkError(SaodfError):
    """A benchmark that is missing, failed, timed out or returned an invalid result."""


def discover(names: Sequence[str] | None = None, bench_dir: Path = BENCH_DIR) -> list[str]:
    """Return the benchmark names in ``bench_dir`` (all, or ``names`` after checking them)."""
    available = sorted(
        path.stem
        for path in bench_dir.glob("*.py")
        if not path.name.startswith("_") and path.is_file()
    )
    if not names:
        return available
    unknown = [name for name in names if name not in available]
    if unknown:
        raise BenchmarkError(
            f"benchmark(s) {', '.join(unknown)} not found in {bench_dir}; "
            f"available: {', '.join(available) or 'none'}"
        )
    return list(names)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_result(name: str, result: Any) -> dict[str, Any]:
    """Check a benchmark's return value against the schema and return it.

    Raises:
        BenchmarkError: a key is missing or extra, or a value has the wrong type.
    """
    if not isinstance(result, dict):
        raise BenchmarkError(f"benchmark {name} returned a {type(result).__name__}; return a dict")
    missing = [key for key in RESULT_KEYS if key not in result]
    extra = [key for key in result if key not in RESULT_KEYS]
    if missing or extra:
        raise BenchmarkError(
            f"benchmark {name} result has missing keys {missing} and extra keys {extra}; "
            f"return exactly {list(RESULT_KEYS)}"
        )
    for key in ("figures", "reference", "ratios"):
        section = result[key]
        if not isinstance(section, dict):
            raise BenchmarkError(f"benchmark {name}: {key} is not a dict of numbers")
        bad = {k: v for k, v in section.items() if not _is_number(v) and v is not None}
        if bad:
            raise BenchmarkError(f"benchmark {name}: {key} has values that are not numbers: {bad}")
    if not isinstance(result["goals"], dict):
        raise BenchmarkError(f"benchmark {name}: goals is not a dict")
    for goal, spec in result["goals"].items():
        if not isinstance(spec, dict) or not {"target", "measured", "met", "direction"} <= set(
            spec
        ):
            raise BenchmarkError(
                f"benchmark {name}: goal {goal!r} needs target, measured, met and direction"
            )
        if spec["direction"] not in ("min", "max"):
            raise BenchmarkError(
                f"benchmark {name}: goal {goal!r} direction {spec['direction']!r} is invalid; "
                "use 'min' or 'max'"
            )
    notes = result["notes"]
    if not isinstance(notes, list) or not all(isinstance(note, str) for note in notes):
        raise BenchmarkError(f"benchmark {name}: notes is not a list of strings")
    return result


def goal(target: float, measured: float | None, direction: str = "max") -> dict[str, Any]:
    """Build one ``goals`` entry; ``met`` is False when ``measured`` is None or NaN."""
    known = measured is not None and not (isinstance(measured, float) and math.isnan(measured))
    if direction == "max":
        met = known and measured >= target
    else:
        met = known and measured <= target
    return {"target": target, "measured": measured, "met": bool(met), "direction": direction}


def machine_info() -> dict[str, Any]:
    """Describe the machine: CPU count and model, memory, OS and Python implementation."""
    model = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory_bytes = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                memory_bytes = int(line.split()[1]) * 1024
                break
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "memory_bytes": memory_bytes,
        "memory_gib": round(memory_bytes / 2**30, 1) if memory_bytes else None,
        "os": platform.platform(),
    }


def git_commit(root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """Return the checked-out commit and whether tracked files have uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": bool(status.strip())}


def versions() -> dict[str, Any]:
    """Return the Python version, the versions of :data:`KEY_PACKAGES` and the git commit."""
    packages = {}
    for package in KEY_PACKAGES:
        try:
            packages[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            packages[package] = None
    return {"python": platform.python_version(), "packages": packages, "git": git_commit()}


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def run_in_process(name: str, settings: Settings, quick: bool) -> dict[str, Any]:
    """Import ``bench.<name>`` and call its ``run`` in this process, then validate the result."""
    if str(PROJECT_ROOT) not in sys.path:
        sys.path.insert(0, str(PROJECT_ROOT))
    module = importlib.import_module(f"bench.{name}")
    runner = getattr(module, "run", None)
    if not callable(runner):
        raise BenchmarkError(f"bench/{name}.py has no run(settings, quick) function")
    return validate_result(name, runner(settings, quick))


def run_benchmark(
    name: str, settings: Settings, quick: bool, timeout: float | None = None
) -> dict[str, Any]:
    """Run one benchmark in a child process, bounded by ``timeout`` seconds.

    Returns the validated result with ``seconds`` (wall-clock time of the child).

    Raises:
        BenchmarkError: the benchmark failed, timed out or returned an invalid result.
    """
    from saodf.stack.services import saodf_env

    limit = timeout or (QUICK_TIMEOUT_SECONDS if quick else DEFAULT_TIMEOUT_SECONDS)
    with tempfile.TemporaryDirectory(prefix=f"saodf-bench-{name}-") as scratch:
        result_path = Path(scratch) / "result.json"
        argv = [sys.executable, "-m", "saodf.bench", name, str(result_path)]
        if quick:
            argv.append("--quick")
        env = {**os.environ, **saodf_env(settings)}
        started = time.monotonic()
        child = subprocess.Popen(argv, cwd=PROJECT_ROOT, env=env, start_new_session=True)  # noqa: S603
        try:
            code = child.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            logger.error(
                "benchmark %s exceeded %.0f s: killing its session (pid %d)", name, limit, child.pid
            )
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
            raise BenchmarkError(
                f"benchmark {name} timed out after {limit:.0f} s; rerun with --quick or a "
                "larger --timeout"
            ) from None
        seconds = time.monotonic() - started
        if code != 0 or not result_path.is_file():
            raise BenchmarkError(
                f"benchmark {name} failed with exit code {code}; its traceback is on stderr above"
            )
        result = json.loads(result_path.read_text(encoding="utf-8"))
    return {**validate_result(name, result), "seconds": round(seconds, 2)}


def write_outputs(
    name: str,
    result: dict[str, Any],
    quick: bool,
    timeout: float | None,
    out_dir: Path = OUT_DIR,
    results_file: Path = RESULTS_FILE,
    now: datetime | None = None,
) -> Path:
    """Write the run's JSON file and append its record to the results page; return the JSON path."""
    now = now or datetime.now(timezone.utc)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}-{stamp}.json"
    document = {
        "benchmark": name,
        "started_at": now.isoformat().replace("+00:00", "Z"),
        "inputs": {"name": name, "quick": quick, "timeout_seconds": timeout},
        "machine": machine_info(),
        "versions": versions(),
        "seconds": result.get("seconds"),
        **{key: result[key] for key in RESULT_KEYS},
    }
    path.write_text(json.dumps(_json_safe(document), indent=2) + "\n", encoding="utf-8")
    append_record(results_file, document, path)
    return path


def _format_number(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_record(document: dict[str, Any], json_path: Path) -> str:
    """Render one short markdown record of a benchmark run."""
    machine = document["machine"]
    git = document["versions"]["git"]
    commit = (git.get("commit") or "unknown")[:10] + (
        " (uncommitted changes)" if git.get("dirty") else ""
    )
    mode = "quick" if document["inputs"]["quick"] else "full"
    lines = [
        f"## {document['benchmark']} - {document['started_at']} ({mode})",
        "",
        f"Machine: {machine['cpu_count']} CPUs ({machine['cpu_model'] or 'unknown model'}), "
        f"{machine['memory_gib']} GiB; Python {document['versions']['python']}; commit {commit}; "
        f"{_format_number(document.get('seconds'))} s wall clock.",
        "",
    ]

    for key in ("figures", "reference", "ratios"):
        if document[key]:
            values = ", ".join(f"{k} {_format_number(v)}" for k, v in document[key].items())
            lines.append(f"- {key}: {values}")
    for goal_name, spec in document["goals"].items():
        sign = ">=" if spec["direction"] == "max" else "<="
        state = "met" if spec["met"] else "not met"
        lines.append(
            f"- goal {goal_name}: {_format_number(spec['measured'])} (target {sign} "
            f"{_format_number(spec['target'])}, {state})"
        )
    for note in document["notes"]:
        lines.append(f"- note: {note}")

    try:
        shown = json_path.relative_to(PROJECT_ROOT)
    except ValueError:
        shown = json_path
    lines += [f"- full output: `{shown}`", ""]
    return "\n".join(lines)


def append_record(results_file: Path, document: dict[str, Any], json_path: Path) -> None:
    """Append a run's record to the results page, creating the page with its header."""
    results_file.parent.mkdir(parents=True, exist_ok=True)
    if not results_file.exists() or not results_file.read_text(encoding="utf-8").strip():
        results_file.write_text(RESULTS_HEADER + "\n", encoding="utf-8")
    with open(results_file, "a", encoding="utf-8") as handle:
        handle.write(format_record(document, json_path) + "\n")


@contextlib.contextmanager
def local_services(
    names: Sequence[str], base: Settings, home: Path | None = None
) -> Iterator[Settings]:
    """Start services (``redis``, ``mlflow``, ``broker``, ``moto``, ``gateway``) on free ports.

    The services get a fresh home (``home`` or a temporary folder) and a lake under it;
    the yielded settings point at them. Every service is stopped by pid on exit.
    """
    from saodf.stack import process, services

    spec_of = {
        "redis": services.redis_spec,
        "mlflow": services.mlflow_spec,
        "broker": services.broker_spec,
        "moto": services.moto_spec,
        "gateway": services.gateway_spec,
    }
    unknown = [name for name in names if name not in spec_of]
    if unknown:
        raise BenchmarkError(f"service(s) {unknown} are unknown; use some of {list(spec_of)}")
    with contextlib.ExitStack() as stack:
        if home is None:
            home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="saodf-bench-")))
        home = Path(home)
        host = base.host
        ports = {name: process.free_port(host) for name in base.ports}
        settings = base.with_overrides(
            home=home,
            ports=ports,
            kafka_bootstrap=f"{host}:{ports['kafka']}",
            redis_host=host,
            redis_port=ports["redis"],
            mlflow_tracking_uri=f"http://{host}:{ports['mlflow']}",
            aws_endpoint_url=f"http://{host}:{ports['moto']}",
            gateway_url=f"http://{host}:{ports['gateway']}",
            lake_url=(home / "lake").as_uri(),
        )
        started = []
        try:
            for name in names:
                spec = spec_of[name](settings)
                process.start(spec)
                started.append(spec)
            yield settings
        finally:
            for spec in reversed(started):
                try:
                    process.stop(spec)
                except SaodfError as exc:
                    logger.error("service %s did not stop: %s", spec.name, exc)


def _child_main(argv: list[str]) -> int:
    """Run one benchmark in this process and write its result as JSON (``saodf bench`` child)."""
    from saodf.config import get_settings
    from saodf.log import configure_logging

    configure_logging(os.environ.get("SAODF_LOG_LEVEL", "WARNING"))
    name, result_path = argv[0], Path(argv[1])
    quick = "--quick" in argv[2:]
    result = run_in_process(name, get_settings(), quick)
    result_path.write_text(json.dumps(_json_safe(result)), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))

"""Supervision of one local service process: pid file, log file, health check, stop by pid."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from saodf.errors import ServiceError

logger = logging.getLogger(__name__)

HealthCheck = Callable[[], bool]


@dataclass
class ServiceSpec:
    """How to run and check one service."""

    name: str
    argv: Sequence[str]
    run_dir: Path
    log_dir: Path
    port: int | None = None
    host: str = "127.0.0.1"
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    health: HealthCheck | None = None
    start_timeout: float = 60.0
    # A service without a health check or port counts as started once it stays up this long.
    min_uptime: float = 2.0
    stop_timeout: float = 20.0
    port_env_var: str | None = None

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"{self.name}.log"


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def tcp_accepts(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_ok(url: str, timeout: float = 2.0) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback URL
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


class PidFileError(ServiceError):
    """A pid file that exists but does not contain the record that :func:`start` wrote."""


def port_hint(host: str, port: int | None) -> str:
    """Return how to find the process on ``port``: whether it is bound, and the command."""
    if port is None:
        return "find the process with `ps -ef` and stop it by its pid"
    if port_is_free(host, port):
        return f"port {host}:{port} is free, so the service is probably not running"
    return (
        f"port {host}:{port} is still bound: find its pid with `ss -ltnp 'sport = :{port}'` "
        "and stop it by that pid"
    )


def _read_pid_file(spec: ServiceSpec) -> dict | None:
    """Return the record in the pid file of ``spec``, or None when there is no pid file.

    Raises:
        PidFileError: when the file cannot be read or is not a record that :func:`start` wrote.
    """
    path = spec.pid_file
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        problem = f"cannot be read ({exc.strerror})"
    else:
        try:
            record = json.loads(text)
        except ValueError:
            record = None
        if isinstance(record, dict) and isinstance(record.get("pid"), int):
            return record
        problem = f"does not contain a pid record (it starts with {text[:40]!r})"
    raise PidFileError(
        f"pid file {path} of {spec.name} {problem}; {port_hint(spec.host, spec.port)}, "
        f"then delete {path}"
    )


def running_process(spec: ServiceSpec) -> psutil.Process | None:
    """Return the process recorded in the pid file if it is alive and is the one we started.

    The pid file stores the process creation time, so a pid reused by an unrelated
    process after a reboot or crash is never mistaken for ours.

    Raises:
        PidFileError: when the pid file exists but is not readable as the record we wrote.
    """
    record = _read_pid_file(spec)
    if record is None:
        return None
    try:
        process = psutil.Process(int(record["pid"]))
        if abs(process.create_time() - float(record["create_time"])) > 1.0:
            return None
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process
    except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError, ValueError):
        return None


def is_healthy(spec: ServiceSpec) -> bool:
    if running_process(spec) is None:
        return False
    if spec.health is not None:
        return spec.health()
    if spec.port is not None:
        return tcp_accepts(spec.host, spec.port)
    return True


def log_tail(spec: ServiceSpec, lines: int = 20) -> str:
    try:
        text = spec.log_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def start(spec: ServiceSpec) -> str:
    """Start ``spec`` unless a healthy instance of ours runs; return "started" or "running"."""
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    spec.log_dir.mkdir(parents=True, exist_ok=True)
    if running_process(spec) is not None:
        if is_healthy(spec):
            logger.info(
                "service %s already running and healthy (pid file %s)", spec.name, spec.pid_file
            )
            return "running"
        logger.warning("service %s runs but fails its health check: restarting it", spec.name)
        stop(spec)
    if spec.port is not None and not port_is_free(spec.host, spec.port):
        hint = f"set {spec.port_env_var} to a free port" if spec.port_env_var else "free the port"
        raise ServiceError(
            f"cannot start {spec.name}: port {spec.host}:{spec.port} is already in use by another "
            f"process; stop that process or {hint}"
        )
    env = {**os.environ, **spec.env}
    with open(spec.log_file, "ab") as log:
        log.write(
            f"\n--- start {time.strftime('%Y-%m-%dT%H:%M:%S%z')} {' '.join(spec.argv)}\n".encode()
        )
        log.flush()
        try:
            process = subprocess.Popen(  # noqa: S603 - argv built from our own config
                list(spec.argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=str(spec.cwd) if spec.cwd else None,
                env=env,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise ServiceError(f"cannot start {spec.name}: {exc.filename} not found") from exc
    record = {
        "pid": process.pid,
        "create_time": psutil.Process(process.pid).create_time(),
        "argv": list(spec.argv),
        "port": spec.port,
    }
    spec.pid_file.write_text(json.dumps(record), encoding="utf-8")
    logger.info("service %s starting: pid %d, log %s", spec.name, process.pid, spec.log_file)
    deadline = time.monotonic() + spec.start_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            spec.pid_file.unlink(missing_ok=True)
            raise ServiceError(
                f"{spec.name} exited with code {process.returncode} while starting; "
                f"last lines of {spec.log_file}:\n{log_tail(spec)}"
            )
        has_probe = spec.health is not None or spec.port is not None
        started_for = time.monotonic() - (deadline - spec.start_timeout)
        if (has_probe or started_for >= spec.min_uptime) and is_healthy(spec):
            logger.info("service %s healthy: pid %d", spec.name, process.pid)
            return "started"
        time.sleep(0.25)
    stop(spec)
    raise ServiceError(
        f"{spec.name} did not become healthy within {spec.start_timeout:.0f} s; "
        f"last lines of {spec.log_file}:\n{log_tail(spec)}"
    )


def stop(spec: ServiceSpec) -> str:
    """Stop the process group that :func:`start` recorded; return "stopped" or "not running"."""
    process = running_process(spec)
    if process is None:
        spec.pid_file.unlink(missing_ok=True)
        if spec.port is not None and not port_is_free(spec.host, spec.port):
            return f"not running; {port_hint(spec.host, spec.port)} if it is ours"
        return "not running"
    pid = process.pid
    logger.info("service %s stopping: pid %d", spec.name, pid)
    _signal_group(pid, signal.SIGTERM)
    try:
        process.wait(timeout=spec.stop_timeout)
    except psutil.TimeoutExpired:
        logger.warning(
            "service %s (pid %d) ignored SIGTERM for %.0f s: sending SIGKILL",
            spec.name,
            pid,
            spec.stop_timeout,
        )
        _signal_group(pid, signal.SIGKILL)
        try:
            process.wait(timeout=10)
        except psutil.TimeoutExpired as exc:
            raise ServiceError(f"{spec.name} (pid {pid}) survived SIGKILL") from exc
    # Children that left the group (or outlived the leader) are ours too: reap them by pid.
    _signal_group(pid, signal.SIGKILL)
    spec.pid_file.unlink(missing_ok=True)
    logger.info("service %s stopped: pid %d", spec.name, pid)
    return "stopped"


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def status(spec: ServiceSpec) -> dict:
    """Return pid, port, health and log of ``spec``; ``error`` explains why a pid file is unusable."""
    try:
        process = running_process(spec)
    except PidFileError as exc:
        logger.error("service %s: %s", spec.name, exc)
        return {
            "name": spec.name,
            "pid": None,
            "port": spec.port,
            "healthy": False,
            "log": str(spec.log_file),
            "error": str(exc),
        }
    return {
        "name": spec.name,
        "pid": process.pid if process else None,
        "port": spec.port,
        "healthy": bool(process) and is_healthy(spec),
        "log": str(spec.log_file),
    }

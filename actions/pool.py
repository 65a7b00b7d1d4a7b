"""Runtime processes of the gateway's actions: start, ``/init``, ``/run`` with a timeout, restart.

Each action gets ``pool_size`` processes of :mod:`actions.runtime`. A process serves one
activation at a time, as an OpenWhisk container does. A process that times out or dies is
killed by its process group and replaced before its next activation.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from saodf.config import PROJECT_ROOT, Settings
from saodf.errors import SaodfError

logger = logging.getLogger(__name__)

START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 5.0
MAX_LOG_BYTES = 64 * 1024


class RuntimeProcessError(SaodfError):
    """A runtime process that failed to start, initialize or answer."""


class ActivationTimeout(SaodfError):
    """An activation that exceeded its action's time limit."""


class PoolBusy(SaodfError):
    """Every runtime process of an action stayed busy for the whole wait."""


@dataclass(frozen=True)
class ActionSpec:
    """One deployable action: its code (module path or Python source) and its limits."""

    name: str
    module: str | None = None
    code: str | None = None
    main: str = "main"
    timeout_seconds: float = 60.0
    pool_size: int = 1

    def init_value(self) -> dict[str, Any]:
        value: dict[str, Any] = {"name": self.name, "main": self.main, "binary": False}
        if self.module:
            value["module"] = self.module
        else:
            value["code"] = self.code or ""
        return value


@dataclass
class RunReply:
    """The HTTP status and JSON body of one ``/run``, with the output the activation logged."""

    status: int
    body: Any
    logs: list[str]


class RuntimeProcess:
    """One :mod:`actions.runtime` process running one action."""

    def __init__(
        self,
        spec: ActionSpec,
        settings: Settings,
        index: int,
        env: dict[str, str],
        namespace: str = "",
    ):
        self.spec = spec
        self.settings = settings
        self.index = index
        self.env = env
        self.namespace = namespace
        self.process: subprocess.Popen | None = None
        self.port: int | None = None
        self.label = f"{namespace}-{spec.name}-{index}" if namespace else f"{spec.name}-{index}"
        self.log_path = settings.log_dir / f"runtime-{self.label}.log"
        self._log_offset = 0

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the process, wait for its port and POST ``/init``."""
        self.settings.log_dir.mkdir(parents=True, exist_ok=True)
        self.settings.run_dir.mkdir(parents=True, exist_ok=True)
        port_file = self.settings.run_dir / f"runtime-{self.label}.port"
        port_file.unlink(missing_ok=True)
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "actions.runtime",
                    "--port",
                    "0",
                    "--port-file",
                    str(port_file),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=PROJECT_ROOT,
                env=self.env,
                start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not port_file.exists():
            if self.process.poll() is not None:
                raise RuntimeProcessError(
                    f"runtime of action {self.spec.name} exited with code "
                    f"{self.process.returncode} before listening; see {self.log_path}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeProcessError(
                    f"runtime of action {self.spec.name} did not listen within "
                    f"{START_TIMEOUT_SECONDS:.0f} s; see {self.log_path}"
                )
            time.sleep(0.05)
        self.port = int(port_file.read_text(encoding="utf-8"))
        status, body = self._post("/init", {"value": self.spec.init_value()}, START_TIMEOUT_SECONDS)
        if status != 200:
            self.stop()
            raise RuntimeProcessError(f"init of action {self.spec.name} failed: {body}")
        self._log_offset = self.log_path.stat().st_size
        logger.info(
            "runtime %s started (pid %d, port %d)",
            self.label,
            self.process.pid,
            self.port,
        )

    def stop(self) -> None:
        """Stop the process group with SIGTERM, then SIGKILL after a timeout."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        pid = process.pid
        try:
            os.killpg(pid, signal.SIGTERM)
            process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(pid, signal.SIGKILL)
            process.wait(STOP_TIMEOUT_SECONDS)
        except ProcessLookupError:
            pass
        logger.info("runtime %s stopped (pid %d)", self.label, pid)

    def _post(self, path: str, body: dict[str, Any], timeout: float) -> tuple[int, Any]:
        # NOTE: a new connection per activation costs a TCP handshake and a server thread,
        # about 1-5 ms of the gateway's latency on a loaded 2-core machine. A kept-alive
        # connection would need a rule for retrying a /run that may have reached the action.
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = json.dumps(body).encode("utf-8")
            connection.request("POST", path, data, {"Content-Type": "application/json"})
            response = connection.getresponse()
            raw = response.read()
        finally:
            connection.close()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, {"error": f"runtime returned non-JSON: {raw[:200]!r}"}

    def run(self, body: dict[str, Any], timeout: float) -> RunReply:
        """POST ``/run`` and return its reply; kill the process when it exceeds ``timeout``."""
        if not self.alive:
            logger.warning("runtime %s is not running; restarting it", self.label)
            self.start()
        try:
            status, reply = self._post("/run", body, timeout)
        except (TimeoutError, socket.timeout):
            logger.error(
                "activation %s of action %s timed out after %.1f s; killing runtime pid %d",
                body.get("activation_id"),
                self.spec.name,
                timeout,
                self.process.pid if self.process else -1,
            )
            self.stop()
            raise ActivationTimeout(
                f"The action exceeded its time limit of {int(timeout * 1000)} milliseconds."
            ) from None
        except (ConnectionError, http.client.HTTPException, OSError) as exc:
            self.stop()
            raise RuntimeProcessError(
                f"runtime of action {self.spec.name} failed during activation "
                f"{body.get('activation_id')}: {exc}"
            ) from None
        return RunReply(status, reply, self._read_logs())

    def _read_logs(self) -> list[str]:
        from actions.runtime import END_MARKER

        try:
            size = self.log_path.stat().st_size
        except FileNotFoundError:
            return []
        start = max(self._log_offset, size - MAX_LOG_BYTES)
        with self.log_path.open("rb") as handle:
            handle.seek(start)
            text = handle.read(size - start).decode("utf-8", errors="replace")
        self._log_offset = size
        return [line for line in text.splitlines() if line and line != END_MARKER]


class ActionPool:
    """The runtime processes of one action, handed out one activation at a time."""

    def __init__(
        self, spec: ActionSpec, settings: Settings, env: dict[str, str], namespace: str = ""
    ):
        if spec.pool_size < 1:
            raise RuntimeProcessError(
                f"pool_size={spec.pool_size} of action {spec.name} must be >= 1"
            )
        self.spec = spec
        self.namespace = namespace
        self.processes = [
            RuntimeProcess(spec, settings, i, env, namespace) for i in range(spec.pool_size)
        ]
        self._idle: queue.Queue[RuntimeProcess] = queue.Queue()

    def start(self) -> None:
        for process in self.processes:
            process.start()
            self._idle.put(process)

    def stop(self) -> None:
        for process in self.processes:
            process.stop()

    def run(self, body: dict[str, Any], wait_seconds: float) -> RunReply:
        """Run one activation on an idle process, waiting up to ``wait_seconds`` for one."""
        try:
            process = self._idle.get(timeout=wait_seconds)
        except queue.Empty:
            raise PoolBusy(
                f"all {self.spec.pool_size} runtimes of action {self.spec.name} stayed busy for "
                f"{wait_seconds:.0f} s; retry later or raise its pool_size"
            ) from None
        try:
            return process.run(body, self.spec.timeout_seconds)
        finally:
            self._idle.put(process)


def start_pools(
    specs: list[ActionSpec], settings: Settings, env: dict[str, str], namespace: str = ""
) -> dict[str, ActionPool]:
    """Start one namespace's pools of all actions in parallel; stop them all when one fails."""
    pools = {spec.name: ActionPool(spec, settings, env, namespace) for spec in specs}
    errors: list[BaseException] = []

    def start(pool: ActionPool) -> None:
        try:
            pool.start()
        except BaseException as exc:  # noqa: BLE001 - re-raised below in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(pool,), daemon=True) for pool in pools.values()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        for pool in pools.values():
            pool.stop()
        raise errors[0]
    return pools


def runtime_env(settings: Settings) -> dict[str, str]:
    """Return the environment of runtime processes: this one's plus the stack's SAODF_* values."""
    from saodf.stack.services import saodf_env

    env = dict(os.environ)
    env.update(saodf_env(settings))
    env["__OW_API_HOST"] = settings.gateway_url
    # saodf_env leaves out the TLS settings; the actions' Redis client needs them.
    env["SAODF_REDIS_TLS"] = "true" if settings.redis_tls else "false"
    for name, value in (
        ("SAODF_REDIS_TLS_CA_FILE", settings.redis_tls_ca_file),
        ("SAODF_REDIS_TLS_CERT_FILE", settings.redis_tls_cert_file),
        ("SAODF_REDIS_TLS_KEY_FILE", settings.redis_tls_key_file),
    ):
        if value:
            env[name] = value
        else:
            env.pop(name, None)
    return env

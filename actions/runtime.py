"""Action runtime implementing the OpenWhisk action proxy protocol for Python actions.

One process runs one action, as an OpenWhisk container does:

- ``POST /init`` with ``{"value": {"name", "main", "code", "binary"}}`` loads the action once.
  ``code`` is Python source, or a base64 zip holding ``__main__.py`` when ``binary`` is
  true. As an extension, ``"module": "actions.forecast"`` imports an installed module
  instead. A second ``/init`` is rejected with 403.
- ``POST /run`` with ``{"value": {...params}, "activation_id", "namespace", "action_name",
  "api_host", "api_key", "deadline"}`` sets each field except ``value`` as an ``__OW_*``
  environment variable, calls ``main(value)`` and returns its result, which must be a JSON
  object. Runs never overlap, because the ``__OW_*`` variables belong to the whole process.
- After each run the markers ``XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX`` end the activation's
  output on stdout and stderr, flushed before the response is sent.

``/init`` only imports the action module. Actions load models and open connections on
their first run and keep them for later runs of the same process.

Usage: ``python -m actions.runtime --port 0 --port-file PATH`` binds 127.0.0.1 and writes
the bound port to PATH.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import importlib
import importlib.util
import io
import json
import logging
import os
import sys
import tempfile
import threading
import traceback
import types
import zipfile
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

END_MARKER = "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX"
MAX_BODY_BYTES = 64 * 1024 * 1024
ActionFunction = Callable[[dict[str, Any]], Any]


class ActionRuntime:
    """The state of one runtime process: the loaded action and the run lock."""

    def __init__(self) -> None:
        self.name: str | None = None
        self.function: ActionFunction | None = None
        self._init_lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._workdir: Path | None = None

    def initialize(self, value: Any) -> tuple[int, dict[str, Any]]:
        """Load the action described by an ``/init`` value; return HTTP status and body."""
        with self._init_lock:
            if self.function is not None:
                logger.warning("second /init for action %s rejected", self.name)
                return HTTPStatus.FORBIDDEN, {
                    "error": "Cannot initialize the action more than once."
                }
            if not isinstance(value, dict):
                return HTTPStatus.BAD_REQUEST, {
                    "error": f"/init value is a {type(value).__name__}; send a JSON object"
                }
            name = str(value.get("name") or "action")
            entry = value.get("main") or "main"
            try:
                namespace = self._load(value, name)
            except Exception as exc:  # noqa: BLE001 - any failure of user code is an init error
                logger.exception("init of action %s failed: %s", name, exc)
                return HTTPStatus.BAD_GATEWAY, {"error": f"Initialization of {name} failed: {exc}"}
            function = getattr(namespace, entry, None)
            if not callable(function):
                return HTTPStatus.BAD_GATEWAY, {
                    "error": f"action {name} has no function {entry!r}; set 'main' to its name"
                }
            self.name = name
            self.function = function
            logger.info("action %s initialized with entry point %s", name, entry)
            return HTTPStatus.OK, {"ok": True}

    def _load(self, value: dict[str, Any], name: str) -> types.ModuleType:
        module_path = value.get("module")
        code = value.get("code")
        if module_path:
            return importlib.import_module(str(module_path))
        if not code:
            raise ValueError("the /init value has neither 'code' nor 'module'")
        if value.get("binary"):
            return self._load_zip(str(code), name)
        module = types.ModuleType(f"__ow_action_{name}")
        exec(compile(str(code), f"<action {name}>", "exec"), module.__dict__)  # noqa: S102
        return module

    def _load_zip(self, code: str, name: str) -> types.ModuleType:
        try:
            archive = base64.b64decode(code, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"binary code is not base64 ({exc})") from None
        self._workdir = Path(tempfile.mkdtemp(prefix=f"saodf-action-{name}-"))
        with zipfile.ZipFile(io.BytesIO(archive)) as bundle:
            for member in bundle.namelist():
                target = (self._workdir / member).resolve()
                if not target.is_relative_to(self._workdir.resolve()):
                    raise ValueError(f"zip member {member!r} points outside the action folder")
            bundle.extractall(self._workdir)
        main_file = self._workdir / "__main__.py"
        if not main_file.exists():
            raise ValueError("the zip has no __main__.py at its root")
        sys.path.insert(0, str(self._workdir))
        spec = importlib.util.spec_from_file_location(f"__ow_action_{name}", main_file)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    def run(self, body: Any) -> tuple[int, dict[str, Any]]:
        """Run the action on a ``/run`` body; return HTTP status and the result object."""
        if self.function is None:
            return HTTPStatus.FORBIDDEN, {
                "error": "The action is not initialized; POST /init first."
            }
        if not isinstance(body, dict):
            return HTTPStatus.BAD_REQUEST, {"error": "/run body must be a JSON object"}
        params = body.get("value", {})
        if not isinstance(params, dict):
            return HTTPStatus.BAD_REQUEST, {
                "error": f"/run value is a {type(params).__name__}; send a JSON object"
            }
        with self._run_lock:
            for key, field_value in body.items():
                if key != "value":
                    os.environ[f"__OW_{key.upper()}"] = (
                        "" if field_value is None else str(field_value)
                    )
            try:
                status, result = self._call(params)
            finally:
                _write_end_markers()
        return status, result

    def _call(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        activation_id = os.environ.get("__OW_ACTIVATION_ID", "")
        try:
            result = self.function(params)  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - an action error is reported, not raised
            traceback.print_exc()
            logger.error("action %s activation %s raised: %s", self.name, activation_id, exc)
            return HTTPStatus.BAD_GATEWAY, {"error": f"An exception was raised: {exc}"}
        if not isinstance(result, dict):
            return HTTPStatus.BAD_GATEWAY, {
                "error": f"The action did not return a dictionary but a {type(result).__name__}."
            }
        try:
            json.dumps(result)
        except (TypeError, ValueError) as exc:
            return HTTPStatus.BAD_GATEWAY, {"error": f"The action result is not JSON: {exc}"}
        return HTTPStatus.OK, result


def _write_end_markers() -> None:
    for stream in (sys.stdout, sys.stderr):
        stream.write(END_MARKER + "\n")
        stream.flush()


def _handler(runtime: ActionRuntime) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # TCP_NODELAY: headers and body go out in separate writes, and Nagle's algorithm
        # with the client's delayed ACK would hold the body for about 40 ms on keep-alive.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            logger.debug("%s %s", self.address_string(), format % args)

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # noqa: N802 - http.server naming
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self._reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "body too large"})
                return
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError as exc:
                self._reply(HTTPStatus.BAD_REQUEST, {"error": f"body is not JSON: {exc}"})
                return
            if self.path == "/init":
                value = body.get("value") if isinstance(body, dict) else None
                self._reply(*runtime.initialize(value))
            elif self.path == "/run":
                self._reply(*runtime.run(body))
            else:
                self._reply(
                    HTTPStatus.NOT_FOUND, {"error": f"no route {self.path}; use /init or /run"}
                )

    return Handler


def make_server(host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """Return a runtime HTTP server bound to ``host:port`` (0 picks a free port), not yet serving."""
    server = ThreadingHTTPServer((host, port), _handler(ActionRuntime()))
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    from saodf.log import configure_logging

    parser = argparse.ArgumentParser(description="OpenWhisk-compatible runtime of one action")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one")
    parser.add_argument("--port-file", type=Path, help="file to write the bound port to")
    options = parser.parse_args(argv)
    configure_logging()
    server = make_server(options.host, options.port)
    port = server.server_address[1]
    if options.port_file is not None:
        partial = options.port_file.with_suffix(".tmp")
        partial.write_text(str(port), encoding="utf-8")
        partial.replace(options.port_file)
    logger.info("action runtime listening on %s:%d (pid %d)", options.host, port, os.getpid())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        logger.info("action runtime on port %d stopped", port)
    return 0


if __name__ == "__main__":
    sys.exit(main())

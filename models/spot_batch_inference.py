"""Entry point of Spot batch inference: DeepAR forecasts inside a managed Spot training job.

SageMaker runs this file with ``python3`` in the built-in DeepAR image (see
``models.sagemaker.spot_inference_config``). It unpacks the ``model`` channel into
``/opt/ml/model``, starts the image's model server, sends every line of the ``input``
channel as one request with the ``DEEPAR_INFERENCE_CONFIG`` configuration, and writes
one forecast line per input line to ``/opt/ml/output/data/<input file>.out``, the same
shape that batch transform writes. It uses only the standard library, because the
image has no SAODF packages.

Paths and the server command come from environment variables so that the script
runs outside SageMaker too: ``SM_CHANNEL_MODEL``, ``SM_CHANNEL_INPUT``,
``SAODF_MODEL_DIR``, ``SAODF_OUTPUT_DIR``, ``SAODF_SERVE_COMMAND`` and
``SAODF_SERVE_PORT``.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

logger = logging.getLogger("spot_batch_inference")

DEFAULT_INFERENCE_CONFIG = {
    "num_samples": 100,
    "output_types": ["mean", "quantiles"],
    "quantiles": ["0.1", "0.5", "0.9"],
}
SERVER_START_TIMEOUT_SECONDS = 300.0
REQUEST_TIMEOUT_SECONDS = 120.0


def unpack_model(channel: Path, model_dir: Path) -> None:
    """Extract every ``*.tar.gz`` of the model channel into ``model_dir``."""
    archives = sorted(channel.glob("*.tar.gz"))
    if not archives:
        raise FileNotFoundError(f"model channel {channel} has no .tar.gz archive")
    model_dir.mkdir(parents=True, exist_ok=True)
    for archive in archives:
        with tarfile.open(archive) as handle:
            handle.extractall(model_dir, filter="data")


def wait_for_server(base_url: str, timeout: float, process: subprocess.Popen) -> None:
    """Poll ``GET /ping`` until it returns 200, the server exits, or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"model server exited with code {process.returncode} at start")
        try:
            with urllib.request.urlopen(f"{base_url}/ping", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1.0)
    raise TimeoutError(
        f"model server at {base_url} did not respond to /ping within {timeout:.0f} s"
    )


def forecast_line(base_url: str, record: dict, configuration: dict) -> dict:
    """Send one series to ``POST /invocations`` and return its single prediction."""
    body = json.dumps({"instances": [record], "configuration": configuration}).encode()
    request = urllib.request.Request(
        f"{base_url}/invocations",
        data=body,
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_SECONDS) as response:
        predictions = json.loads(response.read())["predictions"]
    if len(predictions) != 1:
        raise ValueError(f"model server returned {len(predictions)} predictions for 1 series")
    return predictions[0]


def run(
    model_channel: Path,
    input_channel: Path,
    model_dir: Path,
    output_dir: Path,
    serve_command: list[str],
    port: int,
    configuration: dict,
) -> dict[str, int]:
    """Serve the model, forecast every input line and return the line count per output file."""
    unpack_model(model_channel, model_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    base_url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        serve_command, env={**os.environ, "SAGEMAKER_BIND_TO_PORT": str(port)}
    )
    counts: dict[str, int] = {}
    try:
        wait_for_server(base_url, SERVER_START_TIMEOUT_SECONDS, server)
        for source in sorted(p for p in input_channel.rglob("*") if p.is_file()):
            target = output_dir / f"{source.name}.out"
            lines = 0
            with source.open(encoding="utf-8") as reader, target.open("w", encoding="utf-8") as out:
                for number, line in enumerate(reader, start=1):
                    if not line.strip():
                        continue
                    try:
                        prediction = forecast_line(base_url, json.loads(line), configuration)
                    except (ValueError, urllib.error.URLError) as exc:
                        raise RuntimeError(f"{source} line {number}: {exc}") from exc
                    out.write(json.dumps(prediction, separators=(",", ":")) + "\n")
                    lines += 1
            counts[target.name] = lines
            logger.info("wrote %d forecasts for %s to %s", lines, source, target)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)
    # SageMaker uploads /opt/ml/model as the job's model artifact: keep it empty.
    shutil.rmtree(model_dir, ignore_errors=True)
    model_dir.mkdir(parents=True, exist_ok=True)
    return counts


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    configuration = json.loads(
        os.environ.get("DEEPAR_INFERENCE_CONFIG") or json.dumps(DEFAULT_INFERENCE_CONFIG)
    )
    counts = run(
        model_channel=Path(os.environ.get("SM_CHANNEL_MODEL", "/opt/ml/input/data/model")),
        input_channel=Path(os.environ.get("SM_CHANNEL_INPUT", "/opt/ml/input/data/input")),
        model_dir=Path(os.environ.get("SAODF_MODEL_DIR", "/opt/ml/model")),
        output_dir=Path(os.environ.get("SAODF_OUTPUT_DIR", "/opt/ml/output/data")),
        serve_command=shlex.split(os.environ.get("SAODF_SERVE_COMMAND", "serve")),
        port=int(os.environ.get("SAODF_SERVE_PORT", "8080")),
        configuration=configuration,
    )
    logger.info("Spot batch inference finished: %s", counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())

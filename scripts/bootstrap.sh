#!/usr/bin/env bash
# Create or reuse .venv and install what SAODF needs; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
VENV="${VENV:-.venv}"
TORCH_PIN="torch==2.13.0"

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "error: $PYTHON not found; install Python 3.11 or set PYTHON=/path/to/python3.11" >&2
  exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip wheel setuptools
fi

# torch first: the CPU build on this machine's disk. Anything that pulls torch later is
# then satisfied, so pip never downloads multi-GB CUDA builds.
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null; then
  echo "installing $TORCH_PIN"
  "$VENV/bin/pip" install --quiet "$TORCH_PIN"
fi

stamp="$VENV/.saodf-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "installing saodf and its dependencies into $VENV (a few minutes on a cold cache)"
  "$VENV/bin/pip" install --quiet -e '.[dev,spark]'
  touch "$stamp"
fi

# System services: redis-server (cache) and mosquitto (MQTT ingest) come from Debian packages.
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${missing[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "error: ${missing[*]} not installed; install with: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi
# checkov and check-jsonschema live in their own venvs (checkov pins an old boto3 and
# replaces python-hcl2); the infra tests skip their checks when the tools are missing.
if [ ! -x .saodf/tools/checkov/bin/checkov ] || [ ! -x .saodf/tools/check-jsonschema/bin/check-jsonschema ]; then
  if ! PYTHON="$PYTHON" infra/tools/install-tools.sh; then
    echo "warning: infra static-check tools could not be installed; their tests will be skipped" >&2
  fi
fi
echo "environment ready: $VENV"

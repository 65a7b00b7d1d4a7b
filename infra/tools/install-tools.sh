#!/usr/bin/env bash
# Install the static-check tools of infra/ and docker-compose.yaml into their own virtual
# environments under ${SAODF_TOOLS_DIR:-.saodf/tools}. checkov pins an old boto3 and ships
# a module named hcl2 that replaces python-hcl2, so it must not share the project's venv.
# The tests skip the checks whose tool is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
tools_dir="${SAODF_TOOLS_DIR:-.saodf/tools}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3

install_tool() {
  local name="$1"; shift
  if [ -x "$tools_dir/$name/bin/$name" ]; then
    echo "$name already installed in $tools_dir/$name"
    return
  fi
  "$python" -m venv "$tools_dir/$name"
  "$tools_dir/$name/bin/pip" install --quiet --disable-pip-version-check "$@"
  echo "installed $name into $tools_dir/$name"
}

install_tool checkov "checkov>=3.2,<4"
install_tool check-jsonschema "check-jsonschema>=0.29"

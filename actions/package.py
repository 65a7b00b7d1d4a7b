"""Build zip packages of the actions for ``wsk action create NAME ZIP --kind python:3.11``.

Each zip contains ``__main__.py``, whose ``main(args)`` calls the action, the project modules
the action imports, and copies of the pure-Python and binary dependencies installed in
this environment (redis, fsspec, orjson). OpenWhisk's Python runtime puts the unzipped
folder on ``sys.path``.

The actions read their settings from ``SAODF_*`` environment variables, which a stock
OpenWhisk runtime does not set. Deploy with a runtime image that sets them, or bind them
as action parameters and export them in ``__main__.py``.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import zipfile
from pathlib import Path

from saodf.config import PROJECT_ROOT
from saodf.errors import SaodfError

logger = logging.getLogger(__name__)

COMMON_MODULES = [
    "actions/__init__.py",
    "actions/cache.py",
    "actions/redis_acl.py",
    "saodf/__init__.py",
    "saodf/config.py",
    "saodf/errors.py",
    "saodf/secrets.py",
    "saodf/telemetry.py",
]
ACTION_MODULES = {
    "detect_anomaly": ["actions/detect_anomaly.py"],
    # NOTE: the cache-miss path also needs mlflow and gluonts with torch, which are too large
    # for an action zip (OpenWhisk limits code to 48 MB by default). A forecast action
    # deployed from this zip serves only cache hits, unless its runtime image carries them.
    "forecast": [
        "actions/forecast.py",
        "models/__init__.py",
        "models/errors.py",
        "models/prepared.py",
        "models/registry.py",
        "models/serving.py",
    ],
}
VENDORED_PACKAGES = ["redis", "fsspec", "orjson"]

MAIN_TEMPLATE = '''"""Entry point of the {name} action for OpenWhisk's Python runtime."""

from actions.{name} import main as _action_main


def main(args):
    return _action_main(args)
'''


class PackageError(SaodfError):
    """An action package that cannot be built."""


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise PackageError(f"package {name!r} is not installed; install it to vendor it")
    return Path(spec.origin).parent


def _add_tree(bundle: zipfile.ZipFile, root: Path, prefix: str) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            bundle.write(path, f"{prefix}/{path.relative_to(root).as_posix()}")


def build_package(name: str, out_dir: Path) -> Path:
    """Build the zip of one action and return its path."""
    if name not in ACTION_MODULES:
        raise PackageError(f"action {name!r} is unknown; known actions: {sorted(ACTION_MODULES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}.zip"
    partial = target.with_suffix(".zip.tmp")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("__main__.py", MAIN_TEMPLATE.format(name=name))
        for relative in COMMON_MODULES + ACTION_MODULES[name]:
            source = PROJECT_ROOT / relative
            if not source.exists():
                raise PackageError(f"module {source} of action {name} is missing")
            bundle.write(source, relative)
        for package in VENDORED_PACKAGES:
            _add_tree(bundle, _package_dir(package), package)
    partial.replace(target)
    logger.info(
        "built %s (%d bytes, Python %d.%d dependencies)",
        target,
        target.stat().st_size,
        *sys.version_info[:2],
    )
    return target


def build_packages(out_dir: Path) -> list[Path]:
    """Build the zips of every action under ``out_dir`` and return their paths."""
    return [build_package(name, Path(out_dir)) for name in sorted(ACTION_MODULES)]


if __name__ == "__main__":
    from saodf.log import configure_logging

    configure_logging()
    for path in build_packages(Path(sys.argv[1] if len(sys.argv) > 1 else "dist/actions")):
        sys.stdout.write(f"{path}\n")

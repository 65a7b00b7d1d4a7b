"""The repository passes ruff with the project's rule set (G, LOG, T20, AIR3 among them)."""

import subprocess
import sys

from saodf.config import PROJECT_ROOT


def test_ruff_check_clean():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "."],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:]

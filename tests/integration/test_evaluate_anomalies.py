"""The platform detector scored end to end against a real redis-server."""

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from saodf.config import PROJECT_ROOT
from saodf.evaluation.anomalies import evaluate_anomalies

SKAB_ROOT = PROJECT_ROOT.parent / "shared" / "data" / "skab"
pytestmark = pytest.mark.integration


def _cli():
    from saodf.cli_eval import evaluate_app

    app = typer.Typer()
    app.add_typer(evaluate_app, name="evaluate")
    app.command("noop")(lambda: None)
    return app


def _small_skab(root: Path, rows: int = 600) -> Path:
    folder = root / "data" / "valve1"
    folder.mkdir(parents=True)
    header = (
        "datetime;Accelerometer1RMS;Accelerometer2RMS;Current;Pressure;Temperature;"
        "Thermocouple;Voltage;Volume Flow RateRMS;anomaly;changepoint"
    )
    lines = [header]
    for i in range(rows):
        anomalous = 500 <= i < 520
        value = 10.0 + (i % 5) * 0.1 + (40.0 if anomalous else 0.0)
        stamp = f"2020-03-09 10:{i // 60:02d}:{i % 60:02d}"
        lines.append(";".join([stamp] + [f"{value:.2f}"] * 8 + [str(int(anomalous)), "0"]))
    (folder / "0.csv").write_text("\n".join(lines) + "\n")
    return root


def test_platform_detector_session_redis(saodf_env, redis_server, tmp_path):
    evaluation = evaluate_anomalies(_small_skab(tmp_path), saodf_env, own_redis=False)
    assert evaluation.rows == 600
    assert evaluation.skab["true_positives"] > 0
    assert evaluation.nab["standard"]["true_positives"] == 1
    keys = list(redis_server.client().scan_iter(match="saodf:anomaly:eval-*"))
    assert keys == []


def test_platform_detector_own_redis(saodf_env, tmp_path):
    evaluation = evaluate_anomalies(_small_skab(tmp_path), saodf_env, own_redis=True)
    assert evaluation.detector == "platform detect_anomaly"
    assert evaluation.skab["f1"] > 0


@pytest.mark.skipif(not SKAB_ROOT.is_dir(), reason="shared SKAB data not present")
def test_cli_scores_shared_skab(saodf_env, tmp_path):
    result = CliRunner().invoke(
        _cli(),
        ["evaluate", "anomalies", "--dataset", str(SKAB_ROOT), "--out", str(tmp_path / "r")],
    )
    assert result.exit_code == 0, result.output
    assert "SKAB outlier protocol: F1" in result.output
    assert "16 labelled files" in result.output
    assert (tmp_path / "r" / "anomalies.md").is_file()

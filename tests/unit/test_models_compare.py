import math

from models.compare import summarize, to_html, to_markdown, write_comparison


def _rows():
    base = {
        "run_key": "r1",
        "group": "5min",
        "champion_kind": "deepar",
        "champion_version": "3",
        "promoted": "true",
        "windows": "3",
        "data_hash": "abc",
        "wql_0.1": 0.1,
        "wql_0.5": 0.2,
        "wql_0.9": 0.1,
        "mase": 0.9,
        "coverage_80": 0.8,
        "training_seconds": 1.0,
    }
    return [
        {**base, "run_id": "a", "kind": "deepar", "candidate": True, "mean_wql": 0.1},
        {**base, "run_id": "b", "kind": "seasonal_naive", "candidate": False, "mean_wql": 0.3},
        {**base, "run_id": "c", "kind": "deepar", "candidate": False, "mean_wql": math.nan},
    ]


def test_summary_skips_nan():
    summary = {(s["group"], s["kind"]): s for s in summarize(_rows())}
    assert summary[("5min", "deepar")]["runs"] == 2
    assert summary[("5min", "deepar")]["mean_of_mean_wql"] == 0.1
    assert summary[("5min", "deepar")]["best_in_run"] == 1


def test_markdown_has_tables():
    text = to_markdown(_rows(), "exp")
    assert text.startswith("# Model comparison: experiment exp")
    assert "| r1 | 5min | deepar | True |" in text
    assert "nan" in text


def test_html_escapes(tmp_path):
    rows = _rows()
    rows[0]["run_key"] = "<script>"
    page = to_html(rows, "exp")
    assert "&lt;script&gt;" in page
    assert "<script>" not in page


def test_write_both_files(tmp_path):
    paths = write_comparison(_rows(), "exp", tmp_path)
    assert paths["markdown"].read_text().startswith("# Model comparison")
    assert paths["html"].read_text().startswith("<!doctype html>")

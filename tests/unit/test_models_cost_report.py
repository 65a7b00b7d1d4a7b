import json
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
import typer
from typer.testing import CliRunner

from models.cost import (
    billable_seconds,
    cost_per_1000_forecasts,
    load_prices,
    price,
    training_job_cost_from_description,
)
from models.cost_report import (
    DESIGNS,
    Workload,
    build_report,
    check_claims,
    cost_chart,
    design_costs,
    payload_sweep,
)
from models.errors import ModelInputError


def test_prices_have_source_and_date():
    for price_id, entry in load_prices().items():
        assert entry["source_url"].startswith("https://"), price_id
        assert len(entry["as_of"]) == 10, price_id


def test_prices_cover_issue_services():
    ids = set(load_prices())
    for needed in (
        "sagemaker.training.ml.m5.xlarge",
        "sagemaker.spot_savings",
        "sagemaker.transform.ml.m5.large",
        "glue.dpu_hour",
        "elasticache.cache.t3.small",
        "msk.kafka.m5.large",
    ):
        assert needed in ids


def test_prices_reject_missing_source(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"prices": [{"id": "x", "usd": 1, "unit": "h", "as_of": "d"}]}))
    with pytest.raises(ModelInputError, match=r"entry 0 lacks \['source_url'\]"):
        load_prices(path)


def test_price_unknown_id():
    with pytest.raises(ModelInputError, match=r"price 'nope' is not in the prices file"):
        price("nope")


def test_cost_per_1000_forecasts():
    assert cost_per_1000_forecasts(0.5, 2000) == pytest.approx(0.25)


def test_cost_per_1000_rejects_zero():
    with pytest.raises(ModelInputError, match=r"forecasts=0 is invalid"):
        cost_per_1000_forecasts(0.5, 0)


def test_billable_prefers_sagemaker_field():
    seconds, source = billable_seconds({"BillableTimeInSeconds": 120, "TrainingTimeInSeconds": 400})
    assert seconds == 120.0
    assert source == "BillableTimeInSeconds"


def test_billable_from_times():
    start = datetime(2024, 1, 1, 0, 0, 0)
    description = {
        "TrainingStartTime": start,
        "TrainingEndTime": start + timedelta(seconds=90),
        "ResourceConfig": {"InstanceCount": 2},
    }
    assert billable_seconds(description) == (180.0, "start_end_times")


def test_billable_missing_raises():
    with pytest.raises(ModelInputError, match=r"training job 'j' has no billable time yet"):
        billable_seconds({"TrainingJobName": "j"})


def test_spot_job_cost_measured_saving():
    description = {
        "TrainingJobName": "j",
        "BillableTimeInSeconds": 1080,
        "TrainingTimeInSeconds": 3600,
        "EnableManagedSpotTraining": True,
        "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1},
    }
    cost = training_job_cost_from_description(description)
    # 1,080 billed seconds at 0.23 USD per hour on demand; SageMaker already applied Spot.
    assert cost["estimated_cost_usd"] == pytest.approx(0.069)
    assert cost["spot_savings_measured"] == pytest.approx(0.7)
    assert cost["spot"] is True


def test_designs_all_priced():
    costs = design_costs(Workload())
    for design in DESIGNS:
        assert costs[design]["monthly_usd"] > 0
        assert costs[design]["per_1000_requests"] > 0


def test_spot_cheaper_than_on_demand_batch():
    costs = design_costs(Workload())
    assert costs["batch_spot"]["per_batch_job_usd"] < costs["batch"]["per_batch_job_usd"]


def test_endpoint_scales_with_payload():
    small = design_costs(replace(Workload(), payload_kb=1))
    large = design_costs(replace(Workload(), payload_kb=1024))
    assert large["always_on"]["endpoint_instances"] > small["always_on"]["endpoint_instances"]


def test_no_spot_discount_no_saving():
    prices = load_prices()
    prices["sagemaker.spot_savings"] = {**prices["sagemaker.spot_savings"], "usd": 0.0}
    workload = replace(Workload(), interruption_rate=0.0)
    costs = design_costs(workload, prices)
    claims = check_claims(costs, payload_sweep(workload, prices=prices))
    assert claims["spot_job_saving"] == pytest.approx(0.0)
    assert claims["spot_verdict"] == "contradicts"


def test_claims_verdict_wording():
    report = build_report(Workload())
    claims = report["claims"]
    assert claims["endpoint_verdict"] in (
        "supports",
        "contradicts",
        "does not match (the saving here is larger than claimed)",
    )
    assert "about 42% cheaper" in claims["statements"][0]
    assert "up to 51% cheaper" in claims["statements"][2]
    assert list(claims["spot_saving_by_discount"]) == ["0.50", "0.60", "0.70", "0.80", "0.90"]


def _costs(always_on, batch, batch_spot, hybrid, batch_job=1.0, spot_job=0.5, spot_inference=True):
    """Return a design_costs-shaped dict with the given monthly and per-job USD."""
    monthly = {
        "always_on": always_on,
        "batch": batch,
        "batch_spot": batch_spot,
        "hybrid_cache": hybrid,
    }
    costs = {
        design: {"monthly_usd": usd, "per_batch_job_usd": None} for design, usd in monthly.items()
    }
    costs["batch"]["per_batch_job_usd"] = batch_job
    costs["batch_spot"]["per_batch_job_usd"] = spot_job
    costs["batch_spot"]["spot_inference_chosen"] = spot_inference
    return costs


def _sweep(always_on, hybrid):
    return {"always_on": [always_on, always_on], "hybrid_cache": [hybrid, hybrid / 2]}


def test_claims_hybrid_dearer_than_batch():
    claims = check_claims(_costs(100.0, 10.0, 5.0, 30.0), _sweep(100.0, 30.0))
    statement = claims["statements"][1]
    assert "Hybrid + cache costs 200% more than batch alone" in statement
    assert "the cache pays for latency, not for cost" in statement
    assert "batch costs 90% less and batch + Spot 95% less" in statement


def test_claims_hybrid_cheaper_than_batch():
    claims = check_claims(_costs(100.0, 40.0, 35.0, 30.0), _sweep(100.0, 30.0))
    statement = claims["statements"][1]
    assert "Hybrid + cache costs 25% less than batch alone" in statement
    assert "the cache pays for itself" in statement
    assert "dearer" not in statement
    assert "pays for latency" not in statement


def test_claims_hybrid_equal_to_batch():
    claims = check_claims(_costs(100.0, 30.0, 25.0, 30.0), _sweep(100.0, 30.0))
    assert "Hybrid + cache costs about the same as batch alone." in claims["statements"][1]


def test_claims_hybrid_dearer_than_endpoint():
    claims = check_claims(_costs(20.0, 10.0, 5.0, 30.0), _sweep(20.0, 30.0))
    statement = claims["statements"][0]
    assert "hybrid + cache costs 50% more than an always-on endpoint" in statement
    assert "ranges from 50% more to 25% less" in statement
    assert claims["endpoint_verdict"] == "contradicts"


def test_claims_spot_dearer_than_on_demand():
    claims = check_claims(
        _costs(100.0, 10.0, 11.0, 30.0, batch_job=1.0, spot_job=1.1), _sweep(100.0, 30.0)
    )
    statement = claims["statements"][2]
    assert "costs 10% more on Spot than on demand" in statement
    assert "Spot saves nothing here" in statement
    assert "the saving comes from" not in statement


def test_claims_spot_training_only():
    claims = check_claims(_costs(100.0, 10.0, 5.0, 30.0, spot_inference=False), _sweep(100.0, 30.0))
    statement = claims["statements"][2]
    assert "costs 50% less on Spot than on demand" in statement
    assert "the saving comes from Spot training." in statement


def test_claims_from_workload_hybrid_cheaper():
    workload = replace(Workload(), requests_per_day=50_000_000, cache_hit_rate=1.0)
    report = build_report(workload)
    costs = report["costs"]
    assert costs["hybrid_cache"]["monthly_usd"] < costs["batch"]["monthly_usd"]
    assert "less than batch alone" in report["claims"]["statements"][1]


def test_cost_chart_png(tmp_path):
    path = cost_chart(tmp_path / "c.png", payload_sweep(Workload()))
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_cli_cost_report_writes_files(tmp_path):
    from saodf.cli_models import cost_app

    app = typer.Typer()
    app.add_typer(cost_app, name="cost")
    result = CliRunner().invoke(app, ["cost", "report", "--out", str(tmp_path), "--devices", "50"])
    assert result.exit_code == 0, result.output
    assert "| hybrid_cache |" in result.output
    assert (tmp_path / "cost_per_1000_requests.png").exists()
    assert json.loads((tmp_path / "cost_report.json").read_text())["workload"]["devices"] == 50


def test_cli_cost_rejects_hit_rate(tmp_path):
    from saodf.cli_models import cost_app

    app = typer.Typer()
    app.add_typer(cost_app, name="cost")
    result = CliRunner().invoke(app, ["cost", "report", "--cache-hit-rate", "2"])
    assert result.exit_code == 1
    assert "cache_hit_rate=2.0 is outside [0, 1]" in result.output


@pytest.mark.parametrize(
    ("field", "value"),
    [("devices", -5), ("requests_per_day", -100), ("payload_kb", -1.0), ("training_seconds", -1)],
)
def test_workload_negative_rejected(field, value):
    with pytest.raises(ModelInputError, match=f"{field}={value} is negative"):
        Workload(**{field: value})


def test_workload_share_above_one_rejected():
    with pytest.raises(ModelInputError, match=r"cache_hit_rate=2 is outside \[0, 1\]"):
        Workload(cache_hit_rate=2)


def test_workload_nan_rejected():
    with pytest.raises(ModelInputError, match="payload_kb=nan"):
        Workload(payload_kb=float("nan"))


def test_cli_negative_requests_rejected(tmp_path):
    from saodf.cli_models import cost_app

    app = typer.Typer()
    app.add_typer(cost_app, name="cost")
    result = CliRunner().invoke(
        app, ["cost", "report", "--requests-per-day", "-100", "--out", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert "requests_per_day=-100 is negative" in result.output
    assert not (tmp_path / "cost_report.md").exists()

import pytest

from models.cost import estimate_batch_inference_cost, estimate_training_cost
from models.errors import ModelInputError


def test_cost_on_demand_hour():
    estimate = estimate_training_cost(3600, "ml.m5.xlarge")
    assert estimate["estimated_cost_usd"] == pytest.approx(0.23)


def test_cost_spot_applies_savings():
    estimate = estimate_training_cost(3600, "ml.m5.xlarge", spot=True, spot_savings=0.6)
    assert estimate["estimated_cost_usd"] == pytest.approx(0.23 * 0.4)
    assert estimate["on_demand_usd"] == pytest.approx(0.23)


def test_cost_scales_with_instances():
    estimate = estimate_training_cost(1800, "ml.c5.xlarge", instance_count=2)
    assert estimate["estimated_cost_usd"] == pytest.approx(0.204)


def test_cost_custom_prices():
    estimate = estimate_training_cost(7200, "ml.x.large", prices={"ml.x.large": 1.0})
    assert estimate["estimated_cost_usd"] == pytest.approx(2.0)


def test_cost_batch_never_spot():
    estimate = estimate_batch_inference_cost(3600)
    assert estimate["spot"] is False
    assert estimate["estimated_cost_usd"] == pytest.approx(0.23)


def test_cost_rejects_unknown_instance():
    with pytest.raises(ModelInputError, match=r"instance type 'ml.z9.huge' has no price"):
        estimate_training_cost(10, "ml.z9.huge")


def test_cost_rejects_negative_seconds():
    with pytest.raises(ModelInputError, match=r"seconds=-1 is negative"):
        estimate_training_cost(-1)


def test_cost_rejects_full_savings():
    with pytest.raises(ModelInputError, match=r"spot_savings=1.0 is outside \[0, 1\)"):
        estimate_training_cost(10, spot=True, spot_savings=1.0)

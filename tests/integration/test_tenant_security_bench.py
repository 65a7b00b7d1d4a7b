"""The attack replay benchmark against its own gateway, in quick mode."""

from __future__ import annotations

import pytest

from bench import security
from saodf.bench import validate_result
from saodf.config import Settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    settings = Settings.from_env().with_overrides(home=tmp_path_factory.mktemp("bench-home"))
    return security.run(settings, quick=True)


def test_result_schema(result):
    assert validate_result("security", result) is result


def test_every_attack_rejected(result):
    assert result["figures"]["attacks_rejected_share"] == 1.0


def test_legal_never_rejected(result):
    assert result["figures"]["legal_rejected_share"] == 0.0


def test_legal_not_flagged(result):
    assert result["figures"]["legal_flagged_share"] == 0.0


@pytest.mark.parametrize("kind", security.SINGLE_CALL_CLASSES)
def test_single_call_detected(result, kind):
    """Lone calls: the replay from the legal address is given away only by its key digest."""
    assert result["figures"][f"{kind}_detected_share"] == 1.0


def test_detection_goal_met(result):
    assert result["goals"]["attacks_detected_share"]["met"] is True


@pytest.mark.parametrize(
    "kind", [k for k in security.ATTACK_CLASSES if k not in security.SINGLE_CALL_CLASSES]
)
def test_bursts_detected(result, kind):
    assert result["figures"][f"{kind}_detected_share"] == 1.0

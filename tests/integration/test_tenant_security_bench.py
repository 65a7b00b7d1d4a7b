"""The attack replay benchmark against its own action and ingest gateways, in quick mode."""

from __future__ import annotations

import pytest

from bench import security
from saodf.bench import validate_result
from saodf.config import Settings

pytestmark = pytest.mark.integration

GATEWAY_CLASSES = [
    (gateway, kind) for gateway in security.GATEWAYS for kind in security.ATTACK_CLASSES[gateway]
]
BURST_CLASSES = [
    (gateway, kind) for gateway, kind in GATEWAY_CLASSES if kind not in security.SINGLE_CALL_CLASSES
]


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    settings = Settings.from_env().with_overrides(home=tmp_path_factory.mktemp("bench-home"))
    return security.run(settings, quick=True)


def test_result_schema(result):
    assert validate_result("security", result) is result


def test_every_attack_rejected(result):
    assert result["figures"]["attacks_rejected_share"] == 1.0


@pytest.mark.parametrize("gateway", security.GATEWAYS)
def test_gateway_attacks_rejected(result, gateway):
    assert result["figures"][f"{gateway}_attacks_rejected_share"] == 1.0


@pytest.mark.parametrize(("gateway", "kind"), GATEWAY_CLASSES)
def test_class_rejected(result, gateway, kind):
    assert result["figures"][f"{gateway}_{kind}_rejected_share"] == 1.0


@pytest.mark.parametrize("gateway", security.GATEWAYS)
def test_legal_never_rejected(result, gateway):
    assert result["figures"][f"{gateway}_legal_rejected_share"] == 0.0


@pytest.mark.parametrize("scope", ["action_", "ingest_", ""])
def test_legal_not_flagged(result, scope):
    assert result["figures"][f"{scope}legal_flagged_share"] == 0.0


@pytest.mark.parametrize("gateway", security.GATEWAYS)
def test_legal_calls_counted(result, gateway):
    assert result["figures"][f"{gateway}_legal_calls"] == 200


@pytest.mark.parametrize(
    ("gateway", "kind", "calls"),
    [
        ("action", "replayed_key_legal_source", 2),
        ("ingest", "replayed_key_legal_source", 1),
        ("ingest", "revoked_token_legal_source", 1),
    ],
)
def test_legal_source_calls_below_threshold(result, gateway, kind, calls):
    """Two failed logins per gateway from 127.0.0.1 stay below the threshold of three."""
    assert result["figures"][f"{gateway}_{kind}_calls"] == calls


@pytest.mark.parametrize(
    ("gateway", "kind"),
    [(gateway, kind) for gateway, kind in GATEWAY_CLASSES if kind in security.SINGLE_CALL_CLASSES],
)
def test_single_call_detected(result, gateway, kind):
    """Lone calls: a replay from the legal address is given away only by its key digest."""
    assert result["figures"][f"{gateway}_{kind}_detected_share"] == 1.0


@pytest.mark.parametrize(("gateway", "kind"), BURST_CLASSES)
def test_bursts_detected(result, gateway, kind):
    assert result["figures"][f"{gateway}_{kind}_detected_share"] == 1.0


@pytest.mark.parametrize("gateway", security.GATEWAYS)
def test_gateway_attacks_detected(result, gateway):
    assert result["figures"][f"{gateway}_attacks_detected_share"] == 1.0


def test_detection_goal_met(result):
    assert result["goals"]["attacks_detected_share"]["met"] is True


def test_overall_class_sums_gateways(result):
    figures = result["figures"]
    assert figures["cross_tenant_calls"] == (
        figures["action_cross_tenant_calls"] + figures["ingest_cross_tenant_calls"]
    )

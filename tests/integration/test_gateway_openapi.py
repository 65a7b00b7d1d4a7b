"""Schemathesis fuzzing of the action gateway process against its own OpenAPI description.

The gateway runs as ``python -m actions.gateway`` on a free port with the default actions,
the session's Redis and MLflow, the session's keys and an audit log of its own. Every
operation of ``actions/openapi.json``, which the gateway serves at ``/api/v1/openapi.json``,
gets generated requests with a valid namespace key and with no credentials. Every response
must match the description and carry no server error other than the two that the
description defines for activations (502, 503).
"""

from __future__ import annotations

import base64
import json

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis.auths import apply_basic_auth
from schemathesis.checks import negative_data_rejection, not_a_server_error
from schemathesis.core.parameters import ParameterLocation

from actions.gateway import DEFAULT_ACTIONS, OPENAPI_FILE
from saodf.secrets import gateway_keys
from saodf.stack import process, services

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# The gateway returns 502 for a blocking activation that failed and 503 for one that no
# runtime could run. Any other 5xx, or one of these from another route, is a gateway fault.
ACTIVATION_ERRORS = frozenset({502, 503})
DEPLOYED_ACTIONS = tuple(spec.name for spec in DEFAULT_ACTIONS)
INVOKE_OPERATION = "POST /api/v1/namespaces/{namespace}/actions/{actionName}"
FUZZ = hypothesis_settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def gateway_process(session_settings, redis_server, mlflow_uri, tmp_path_factory):
    """Start the gateway process in a home of its own that shares the session's secrets."""
    home = tmp_path_factory.mktemp("gateway-openapi")
    gateway_keys(session_settings)
    (home / "secrets").symlink_to(session_settings.home / "secrets", target_is_directory=True)
    port = process.free_port(session_settings.host)
    settings = session_settings.with_overrides(
        home=home,
        ports={**session_settings.ports, "gateway": port},
        gateway_url=f"http://{session_settings.host}:{port}",
    )
    spec = services.gateway_spec(settings)
    process.start(spec)
    try:
        yield settings
    finally:
        process.stop(spec)


# NOTE: the schemas are loaded from the file at collection time, because
# schemathesis.pytest.from_fixture fails on pytest 9.2: schemathesis 4.32.5 reads the
# removed Function._nodeid. test_served_schema_is_file checks that the gateway serves it.
keyed_schema = schemathesis.openapi.from_path(OPENAPI_FILE)
open_schema = schemathesis.openapi.from_path(OPENAPI_FILE)
# Schemathesis builds some cases at collection time, before the gateway has keys, so the
# auth provider sets this placeholder and the test puts the namespace key in its place.
PLACEHOLDER = "placeholder-user:placeholder-key"


@keyed_schema.auth()
class NamespaceKey:
    """Basic credentials of the gateway's own namespace.

    Schemathesis applies them to generated cases except those that test a missing or
    invalid Authorization header.
    """

    def get(self, case, context) -> str:
        return PLACEHOLDER

    def set(self, case, data: str, context) -> None:
        user, key = data.split(":", 1)
        apply_basic_auth(case, user, key)


@pytest.fixture(scope="module")
def namespace_key(gateway_process) -> str:
    return gateway_keys(gateway_process)[gateway_process.gateway_namespace]


def _basic(key: str) -> str:
    return "Basic " + base64.b64encode(key.encode("utf-8")).decode("ascii")


def _check(case, response) -> None:
    """Fail on a 5xx unless it is a failed or unavailable activation, then run every check."""
    status = response.status_code
    if status in ACTIVATION_ERRORS and case.operation.label == INVOKE_OPERATION:
        body = response.json()
        record = body.get("response") if isinstance(body.get("response"), dict) else None
        error = record["result"].get("error") if record else body.get("error")
        assert isinstance(error, str), f"{status} without an error message: {body}"
        case.validate_response(response, excluded_checks=[not_a_server_error])
        return
    if status == 202 and case.operation.label == INVOKE_OPERATION:
        # As in OpenWhisk, a non-blocking invocation is accepted before the action reads its
        # parameters, so an invalid body fails in the activation record, not with a 4xx.
        case.validate_response(response, excluded_checks=[negative_data_rejection])
        return
    case.validate_response(response)


def test_served_schema_is_file(gateway_process):
    reply = requests.get(f"{gateway_process.gateway_url}/api/v1/openapi.json", timeout=10)
    assert reply.status_code == 200
    assert reply.json() == json.loads(OPENAPI_FILE.read_text(encoding="utf-8"))


@keyed_schema.parametrize()
@keyed_schema.given(action=st.sampled_from([None, *DEPLOYED_ACTIONS]))
@FUZZ
def test_api_with_key(case, action, gateway_process, namespace_key):
    if case.headers and case.headers.get("Authorization") == _basic(PLACEHOLDER):
        case.headers["Authorization"] = _basic(namespace_key)
    # Random action names almost never exist, so a share of the valid cases goes to a
    # deployed action, whose runtime then gets the generated body.
    routable = case.meta is None or not case.meta.is_negative_at(ParameterLocation.PATH)
    if action and routable and case.operation.label == INVOKE_OPERATION:
        case.path_parameters = {"namespace": "_", "actionName": action}
    _check(case, case.call(base_url=gateway_process.gateway_url, timeout=90))


@open_schema.parametrize()
@FUZZ
def test_api_without_credentials(case, gateway_process):
    _check(case, case.call(base_url=gateway_process.gateway_url, timeout=30))

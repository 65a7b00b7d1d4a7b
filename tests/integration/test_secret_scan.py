"""No secret created in a real flow shows up in logs, audit records, error messages or git.

The flow: ``saodf tenant create`` and ``rotate-keys`` through the CLI against a redis-server
of the test's home, tenant logins to Redis with good and bad passwords, action gateway
calls with current, rotated-out, wrong and cross-tenant keys, ingest calls with good,
rotated-out and wrong device tokens, and readings whose device_id is a device token. Then every secret of the run (gateway keys, their
secret halves and basic-auth forms, Redis passwords, device tokens) is searched for in
the home's files outside the two secret stores (audit logs included), the captured log
records, the CLI's stderr, every HTTP and Redis error message, the dead-letter reasons, the
tracked files and the last commits.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest
import redis
import requests

from actions.gateway import serve
from actions.pool import ActionSpec
from saodf.audit_tools import run_detection, secret_digest, verify
from saodf.config import PROJECT_ROOT, Settings
from saodf.stack import process, services
from saodf.tenants import tenant_settings
from streaming.dlq import read_dlq
from streaming.ingest_config import IngestConfig
from streaming.ingest_gateway import IngestGateway

pytestmark = pytest.mark.integration

ECHO = "def main(args):\n    return {'device_id': args.get('device_id')}\n"
# Files that store secrets by design, relative to the home; both must be mode 0600.
SECRET_STORES = ("redis/redis.conf",)
SECRET_DIR = "secrets"
GIT_LOG_COMMITS = 30
MAX_FILE_BYTES = 2_000_000
SECRET_LINE = re.compile(r"^\s+(gateway key|redis password|device token)\s+(.*)$")


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(  # noqa: S603 - fixed argv
        [sys.executable, "-m", "saodf.cli", *args],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _printed_secrets(stdout: str) -> dict[str, list[str]]:
    """Return the secrets that ``tenant create`` or ``rotate-keys`` printed, by kind."""
    found: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        match = SECRET_LINE.match(line)
        if match:
            value = match.group(2).split()[-1]
            found.setdefault(match.group(1), []).append(value)
    return found


def _basic(key: str) -> str:
    return "Basic " + base64.b64encode(key.encode()).decode()


def _secret_forms(kind: str, value: str) -> list[str]:
    """Return the strings that would reveal a secret: itself and, for keys, its parts."""
    forms = [value]
    if kind == "gateway key":
        forms.append(value.split(":", 1)[1])
        forms.append(base64.b64encode(value.encode()).decode())
    return forms


class _Collector(logging.Handler):
    """Keep every log record of the flow, at every level."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def flow(session_settings, kafka_bootstrap, moto_endpoint, tmp_path_factory):
    """Run the whole flow and return ``(home, secrets, texts)``: what to scan and for what."""
    root = logging.getLogger()
    collector = _Collector()
    collector.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    previous_level = root.level
    root.addHandler(collector)
    root.setLevel(logging.DEBUG)
    try:
        yield _run_flow(session_settings, tmp_path_factory.mktemp("secret-scan"), collector)
    finally:
        root.removeHandler(collector)
        root.setLevel(previous_level)


def _run_flow(session_settings: Settings, tmp_path: Path, collector: _Collector):
    home = tmp_path / "home"
    suffix = uuid.uuid4().hex[:10]
    settings = session_settings.with_overrides(
        home=home,
        lake_url=(tmp_path / "lake").as_uri(),
        redis_port=process.free_port(),
        topic_raw=f"raw-{suffix}",
        topic_dlq=f"dlq-{suffix}",
        sqs_queue=f"raw-{suffix}",
        sqs_dlq=f"raw-dlq-{suffix}",
    )
    env = {
        **os.environ,
        "SAODF_HOME": str(home),
        "SAODF_LAKE_URL": settings.lake_url,
        "SAODF_REDIS_HOST": settings.redis_host,
        "SAODF_REDIS_PORT": str(settings.redis_port),
    }
    texts: dict[str, str] = {}
    issued: list[tuple[str, str]] = []
    redis_spec = services.redis_spec(settings)
    process.start(redis_spec)
    try:
        printed = {}
        for step, args in (
            ("create acme", ("tenant", "create", "acme", "--device", "pump-1")),
            ("create beta", ("tenant", "create", "beta", "--device", "pump-1")),
            ("rotate acme", ("tenant", "rotate-keys", "acme")),
        ):
            result = _cli(env, *args)
            assert result.returncode == 0, result.stderr
            texts[f"cli stderr: {step}"] = result.stderr
            printed[step] = _printed_secrets(result.stdout)
            issued += [(kind, value) for kind, values in printed[step].items() for value in values]
        listing = _cli(env, "tenant", "list", "--json")
        texts["cli: tenant list"] = listing.stdout + listing.stderr

        old_acme, new_acme = printed["create acme"], printed["rotate acme"]
        beta = printed["create beta"]
        texts.update(_redis_calls(settings, old_acme, new_acme))
        texts.update(_gateway_calls(settings, old_acme, new_acme, beta))
        texts.update(_ingest_calls(settings, old_acme, new_acme))
    finally:
        process.stop(redis_spec)
    verify(sorted((home / "logs").glob("*audit.jsonl")))
    run_detection(settings)
    texts["log records"] = "\n".join(collector.lines)
    return home, issued, texts


def _redis_calls(settings: Settings, old: dict, new: dict) -> dict[str, str]:
    texts = {}
    for label, password in (
        ("current", new["redis password"][0]),
        ("old", old["redis password"][0]),
    ):
        client = redis.Redis(
            host=settings.redis_host,
            port=settings.redis_port,
            username="saodf-t-acme",
            password=password,
            socket_timeout=10,
        )
        try:
            texts[f"redis {label}"] = str(client.ping())
        except redis.RedisError as exc:
            texts[f"redis {label}"] = f"{type(exc).__name__}: {exc}"
        finally:
            client.close()
    assert texts["redis current"] == "True"
    assert texts["redis old"].startswith("AuthenticationError")
    return texts


def _gateway_calls(settings: Settings, old: dict, new: dict, beta: dict) -> dict[str, str]:
    server = serve(settings, actions=[ActionSpec(name="echo", code=ECHO)], port=0)
    texts = {}
    calls = {
        "current key": ("acme", new["gateway key"][0]),
        "rotated-out key": ("acme", old["gateway key"][0]),
        "wrong key": ("acme", f"{uuid.uuid4()}:not-a-key"),
        "cross-tenant key": ("beta", new["gateway key"][0]),
        "beta key": ("beta", beta["gateway key"][0]),
    }
    try:
        for label, (namespace, key) in calls.items():
            url = f"{server.url}/api/v1/namespaces/{namespace}/actions/echo?blocking=true"
            response = requests.post(
                url,
                json={"device_id": f"{namespace}.pump-1"},
                headers={"Authorization": _basic(key)},
                timeout=60,
            )
            texts[f"gateway {label}"] = f"{response.status_code} {response.headers} {response.text}"
        # A key sent as the body and in a malformed header must not be echoed back either.
        response = requests.post(
            f"{server.url}/api/v1/namespaces/acme/actions/echo?blocking=true",
            data=old["gateway key"][0].encode(),
            headers={"Authorization": "Basic " + old["gateway key"][0]},
            timeout=60,
        )
        texts["gateway malformed"] = f"{response.status_code} {response.headers} {response.text}"
    finally:
        server.close()
    assert texts["gateway current key"].startswith("200")
    assert texts["gateway rotated-out key"].startswith("401")
    return texts


def _ingest_calls(settings: Settings, old: dict, new: dict) -> dict[str, str]:
    server = IngestGateway(settings, IngestConfig(http_port=process.free_port()))
    server.start()
    texts = {}
    reading = {"device_id": "acme.pump-1", "timestamp": "2025-04-20T12:00:00Z", "temperature": 1.0}
    tokens = {
        "current token": new["device token"][0],
        "rotated-out token": old["device token"][0],
        "wrong token": "not-a-token",
    }
    try:
        for label, token in tokens.items():
            response = requests.post(
                f"{server.url}/v1/telemetry",
                data=orjson.dumps(reading),
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
            texts[f"ingest {label}"] = f"{response.status_code} {response.headers} {response.text}"
        # A device that sends a token as the device_id: the reading is rejected and audited,
        # and only the token's digest may appear in the reply, audit record, logs and DLQ.
        for label, claimed in (
            ("current", new["device token"][0]),
            ("old", old["device token"][0]),
        ):
            response = requests.post(
                f"{server.url}/v1/telemetry",
                data=orjson.dumps({**reading, "device_id": claimed}),
                headers={"Authorization": f"Bearer {new['device token'][0]}"},
                timeout=30,
            )
            texts[f"ingest {label} token as device_id"] = (
                f"{response.status_code} {response.headers} {response.text}"
            )
    finally:
        server.stop()
    dlq = read_dlq(tenant_settings("acme", settings), limit=10, timeout=15)
    texts["ingest dlq reasons"] = "\n".join(record["reason"] for record in dlq)
    assert texts["ingest current token"].startswith("202")
    assert texts["ingest rotated-out token"].startswith("401")
    assert texts["ingest current token as device_id"].startswith("400")
    assert len(dlq) == 2
    return texts


def _home_files(home: Path) -> dict[str, str]:
    """Return the text of every home file outside the secret stores."""
    texts = {}
    for path in sorted(home.rglob("*")):
        relative = path.relative_to(home).as_posix()
        if not path.is_file() or path.is_symlink():
            continue
        if relative in SECRET_STORES or relative.startswith(f"{SECRET_DIR}/"):
            continue
        if path.stat().st_size <= MAX_FILE_BYTES:
            texts[f"home {relative}"] = path.read_bytes().decode("utf-8", "replace")
    return texts


def _git_texts() -> dict[str, str]:
    """Return the tracked files' text and the patches of the last commits."""
    texts = {}
    listed = subprocess.run(  # noqa: S603 - fixed argv
        ["git", "ls-files", "-z"], cwd=PROJECT_ROOT, capture_output=True, check=True, timeout=60
    )
    for name in listed.stdout.decode().split("\0"):
        path = PROJECT_ROOT / name
        if name and path.is_file() and path.stat().st_size <= MAX_FILE_BYTES:
            texts[f"git {name}"] = path.read_bytes().decode("utf-8", "replace")
    log = subprocess.run(  # noqa: S603 - fixed argv
        ["git", "log", "-p", f"-{GIT_LOG_COMMITS}", "--no-color"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        check=True,
        timeout=120,
    )
    texts["git log -p"] = log.stdout.decode("utf-8", "replace")
    return texts


def _findings(secrets: list[tuple[str, str]], texts: dict[str, str]) -> list[str]:
    return [
        f"{kind} found in {place}"
        for kind, value in secrets
        for form in _secret_forms(kind, value)
        for place, text in texts.items()
        if form in text
    ]


def test_secrets_issued(flow):
    _, secrets, _ = flow
    kinds = sorted({kind for kind, _ in secrets})
    assert kinds == ["device token", "gateway key", "redis password"]
    # Two tenants created, then acme rotated: three of each kind.
    assert len(secrets) == 9


def test_no_secret_in_home_files(flow):
    home, secrets, _ = flow
    texts = _home_files(home)
    assert any(name.endswith("audit.jsonl") for name in texts)
    assert _findings(secrets, texts) == []


def test_token_claim_audited_by_digest(flow):
    home, secrets, _ = flow
    tokens = [value for kind, value in secrets if kind == "device token"]
    records = [orjson.loads(line) for line in (home / "logs" / "ingest_audit.jsonl").open("rb")]
    claims = [r for r in records if r.get("claimed_device_digest")]
    digests = {record["claimed_device_digest"] for record in claims}
    assert {secret_digest(token) for token in tokens} & digests
    assert {record["resource"] for record in claims} == {f"/devices/sha256:{d}" for d in digests}


def test_no_secret_in_logs_or_errors(flow):
    _, secrets, texts = flow
    assert "401" in texts["gateway rotated-out key"]
    assert _findings(secrets, texts) == []


def test_no_secret_in_git(flow):
    _, secrets, _ = flow
    texts = _git_texts()
    assert _findings(secrets, texts) == []
    store_names = {"gateway_keys.json", "tenants.json", "device_tokens.json", "redis.conf"}
    tracked_stores = [
        place for place in texts if place.startswith("git ") and Path(place).name in store_names
    ]
    assert tracked_stores == []
    assert [place for place in texts if place.startswith("git .saodf/")] == []


def test_secret_stores_private(flow):
    home, _, _ = flow
    stores = [home / name for name in SECRET_STORES] + sorted((home / SECRET_DIR).glob("*.json"))
    assert len(stores) >= 4
    for path in stores:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_scan_finds_planted_secret(flow, tmp_path):
    """The scan itself must catch a secret, or its empty findings prove nothing."""
    home, secrets, texts = flow
    kind, value = next(item for item in secrets if item[0] == "gateway key")
    planted = {**texts, "planted": f"debug header {_basic(value)}"}
    assert _findings(secrets, planted) == [f"{kind} found in planted"]

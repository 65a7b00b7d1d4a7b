"""The forecast cache over TLS: a redis-server with a TLS-only listener and a test CA."""

from __future__ import annotations

import datetime
import ipaddress
import uuid

import pytest
import redis

from actions.cache import CacheError, DevicePointer, ForecastCache, redis_client
from actions.redis_acl import FORECAST, HEALTH, WRITER, role_login
from actions.services import RedisServerTLS, cache_redis_spec
from saodf.config import get_settings, reset_settings
from saodf.stack import process

pytestmark = pytest.mark.integration


def _write_test_pki(folder) -> tuple[str, str, str]:
    """Write a CA and a server certificate for 127.0.0.1; return CA, cert and key paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "saodf test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = (folder / "ca.pem", folder / "server.pem", folder / "server.key")
    paths[0].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths[2].chmod(0o600)
    return tuple(str(path) for path in paths)


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory):
    home = tmp_path_factory.mktemp("tls-redis")
    ca_file, cert_file, key_file = _write_test_pki(home)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SAODF_HOME", str(home))
        patch.setenv("SAODF_REDIS_PORT", str(process.free_port()))
        patch.setenv("SAODF_REDIS_TLS", "true")
        patch.setenv("SAODF_REDIS_TLS_CA_FILE", ca_file)
        patch.delenv("SAODF_REDIS_HOST", raising=False)
        reset_settings()
        settings = get_settings()
        tls = RedisServerTLS(cert_file=cert_file, key_file=key_file, ca_file=ca_file)
        spec = cache_redis_spec(settings, name="tls-redis", tls=tls)
        process.start(spec)
        try:
            yield settings
        finally:
            process.stop(spec)
            reset_settings()


def test_cache_round_trip_over_tls(tls_redis):
    writer = ForecastCache(redis_client(tls_redis, role=WRITER))
    action = ForecastCache(redis_client(tls_redis, role=FORECAST))
    device_id = f"tls-{uuid.uuid4().hex[:8]}"
    pointer = DevicePointer(
        device_id=device_id,
        model_name="m",
        model_version="1",
        forecast_start="2025-04-20T12:00:00+00:00",
        freq="5min",
        horizon=1,
        group="5min",
        context_url="file:///unused.jsonl",
        context_line=0,
        volatility="stable",
    )
    writer.put(pointer, {"mean": [1.0], "quantiles": {"0.5": [1.0]}})
    assert action.lookup(device_id)[1] == {"mean": [1.0], "quantiles": {"0.5": [1.0]}}


def test_plain_client_rejected(tls_redis):
    username, password = role_login(tls_redis, HEALTH)
    plain = redis.Redis(
        host=tls_redis.redis_host,
        port=tls_redis.redis_port,
        username=username,
        password=password,
        socket_timeout=2,
        socket_connect_timeout=2,
        retry=None,
    )
    with pytest.raises(redis.ConnectionError):
        plain.ping()


def test_untrusted_server_rejected(tls_redis):
    settings = tls_redis.with_overrides(redis_tls_ca_file=None)
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        redis_client(settings, retries=0, role=HEALTH).ping()


def test_missing_ca_file_rejected(tls_redis, tmp_path):
    settings = tls_redis.with_overrides(redis_tls_ca_file=str(tmp_path / "none.pem"))
    with pytest.raises(CacheError, match="SAODF_REDIS_TLS_CA_FILE=.* does not exist"):
        redis_client(settings, role=HEALTH)


def test_cert_without_key_rejected(tls_redis):
    settings = tls_redis.with_overrides(redis_tls_cert_file=tls_redis.redis_tls_ca_file)
    with pytest.raises(CacheError, match="set both SAODF_REDIS_TLS_CERT_FILE"):
        redis_client(settings, role=HEALTH)

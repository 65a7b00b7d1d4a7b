import pytest

pytestmark = pytest.mark.integration


def test_broker_topic_roundtrip(kafka_bootstrap):
    from confluent_kafka import Consumer, Producer

    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce("fixture.check", b"hello")
    assert producer.flush(10) == 0
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": "fixture-check",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe(["fixture.check"])
    message = None
    for _ in range(40):
        message = consumer.poll(0.5)
        if message is not None and not message.error():
            break
    consumer.close()
    assert message is not None
    assert message.value() == b"hello"


def test_redis_role_user(redis_server, session_settings):
    import redis

    from actions.cache import redis_client
    from actions.redis_acl import WRITER

    client = redis_client(session_settings, role=WRITER)
    assert client.set("saodf:fc:check", "1")
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.set("other:key", "1")
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.flushall()
    info = redis_server.client().info("memory")
    assert info["maxmemory_policy"] == "allkeys-lru"


def test_redis_default_user_disabled(redis_server):
    import redis

    client = redis.Redis(host=redis_server.host, port=redis_server.port)
    with pytest.raises(redis.exceptions.AuthenticationError):
        client.ping()


def test_mlflow_server_health(mlflow_uri):
    from saodf.stack.process import http_ok

    assert http_ok(f"{mlflow_uri}/health")

"""Redis ACL roles: the commands and key patterns of each service's Redis user.

Every service of the default deployment connects to Redis as the user of its role, and
each role allows only what that service's code sends. :data:`ROLES` is the table.
:func:`acl_user_lines` turns it into the ``user ...`` lines of redis.conf, and
:func:`role_login` returns the user name and password that a client of a role sends.

Redis 7 checks the commands that a Lua script calls, and the keys they touch, against the
ACL of the user that ran EVALSHA. A role that runs a script therefore lists EVALSHA,
SCRIPT LOAD (redis-py loads the script after a NOSCRIPT reply) and every command in it.

Logins:

- By default each role ``<role>`` logs in as ``saodf-<role>``, with a generated password
  in ``SAODF_HOME/secrets/redis_password_<role>``. The local stack writes these users.
- ``SAODF_REDIS_USER`` (``settings.redis_user``) makes every role log in as that one
  user, with the password in ``SAODF_HOME/secrets/redis_password``. Use it for an
  external Redis or ElastiCache that has a single application user.
- ``SAODF_REDIS_USER_<ROLE>`` (``settings.redis_role_users``), such as
  ``SAODF_REDIS_USER_FORECAST``, makes one role log in as that user, with the password
  in ``SAODF_HOME/secrets/redis_password_<role>``. It takes precedence over
  ``SAODF_REDIS_USER``.

Settings scoped to a tenant ignore the role, because the tenant's own ACL user (see
:mod:`saodf.tenants`) serves both of its actions.
"""

from __future__ import annotations

from dataclasses import dataclass

from saodf.config import Settings
from saodf.errors import ConfigError

# Prefix of the per-role user names of the local stack, ``saodf-forecast`` and so on.
ROLE_USER_PREFIX = "saodf-"

GATEWAY = "gateway"
FORECAST = "forecast"
DETECTOR = "detector"
CONSUMER = "consumer"
MONITOR = "monitor"
WRITER = "writer"
READER = "reader"
EVALUATION = "evaluation"
HEALTH = "health"

# Key patterns of the default deployment, as built in actions.cache, actions.monitor and
# actions.detect_anomaly. Tenants' keys start with ``saodf:t:<name>:``, which none of
# these patterns matches.
FORECASTS = "saodf:fc:*"
POINTERS = "saodf:device:*"
LEFT_OUT = "saodf:leftout:*"
HITS = "saodf:cache:hits"
MISSES = "saodf:cache:misses"
MISS_BUCKETS = "saodf:cache:missed:*"
TTL_POLICY = "saodf:cache:ttl"
MONITOR_STATE = "saodf:cache:monitor"
PREFETCH = "saodf:cache:prefetch"
# Detector state without a namespace, and per namespace (``saodf:anomaly@<ns>:...``).
DETECTOR_STATE = ("saodf:anomaly:*", "saodf:anomaly@*")
# Detector state of ``saodf evaluate anomalies`` runs, which it deletes afterwards.
EVALUATION_STATE = "saodf:anomaly:eval-*"
# The same cache keys under any tenant's prefix, which the writer fills for the tenants.
TENANT_FORECASTS = "saodf:t:*:fc:*"
TENANT_POINTERS = "saodf:t:*:device:*"
TENANT_LEFT_OUT = "saodf:t:*:leftout:*"
TENANT_TTL_POLICY = "saodf:t:*:cache:ttl"

# Every role may PING, which checks a login.
# NOTE: redis-py also sends CLIENT SETINFO on every new connection and ignores the error
# reply. Redis 7.0 does not know the command, so no role can list it. Redis 7.2 and later
# reject it with NOPERM and record one ACL LOG entry per connection.
CONNECTION_COMMANDS = ("ping",)
# ForecastCache.lookup: HGETALL of the device pointer, then the lookup script, whose GET,
# INCR, ZINCRBY and EXPIRE count the hit or the miss. A device without a pointer gets
# INCRBY (redis-py's incr), ZINCRBY and EXPIRE without the script. left_out reads a hash
# with HGETALL.
LOOKUP_COMMANDS = (
    "hgetall",
    "evalsha",
    "script|load",
    "get",
    "incr",
    "incrby",
    "zincrby",
    "expire",
)
# ForecastCache.put: HGETALL of the TTL policy, then SET, DEL and HSET in MULTI/EXEC.
PUT_COMMANDS = ("hgetall", "multi", "exec", "set", "del", "hset")
# ForecastCache.mark_left_out: DEL, HSET and EXPIRE in MULTI/EXEC.
LEFT_OUT_COMMANDS = ("multi", "exec", "del", "hset", "expire")
# detect_anomaly's scoring script (HMGET, HSET, EXPIRE on the state hashes), then the
# forecast band: HGETALL of the device pointer and GET of its forecast.
DETECT_COMMANDS = ("evalsha", "script|load", "hmget", "hset", "expire", "hgetall", "get")
# ForecastCache.stats: MGET of the counters, INFO stats and memory, HGETALL of the
# monitor's last check.
STATS_COMMANDS = ("mget", "info", "hgetall")
# HitMonitor: MGET of the counters, HGETALL and HSET of the TTL policy, SCAN and OBJECT
# IDLETIME of the device pointers, EXPIRE ... GT and PTTL of forecasts, ZRANGE of the
# miss buckets, ZADD, ZREMRANGEBYSCORE and ZCARD of the prefetch set, HSET of its last
# check, and SET or ForecastCache.put of recomputed forecasts.
MONITOR_COMMANDS = (
    "mget",
    "scan",
    "object|idletime",
    "expire",
    "pttl",
    "zrange",
    "zadd",
    "zremrangebyscore",
    "zcard",
    "set",
    *PUT_COMMANDS,
)


@dataclass(frozen=True)
class RedisRole:
    """Commands and key patterns of one Redis ACL user, and the code that connects as it."""

    name: str
    # Processes or commands that connect as this role.
    used_by: str
    commands: tuple[str, ...]
    # Glob patterns of the keys that the role reads and writes.
    keys: tuple[str, ...] = ()
    # Glob patterns of the keys that the role only reads.
    read_keys: tuple[str, ...] = ()


def _role(
    name: str,
    used_by: str,
    commands: tuple[str, ...],
    keys: tuple[str, ...] = (),
    read_keys: tuple[str, ...] = (),
) -> RedisRole:
    # dict.fromkeys drops repeated commands and keeps their order.
    unique = tuple(dict.fromkeys((*CONNECTION_COMMANDS, *commands)))
    return RedisRole(name, used_by, unique, keys, read_keys)


ROLES: dict[str, RedisRole] = {
    role.name: role
    for role in (
        _role(
            GATEWAY,
            "the action gateway, for the cache statistics of /metrics",
            STATS_COMMANDS,
            read_keys=(HITS, MISSES, MONITOR_STATE),
        ),
        _role(
            FORECAST,
            "the forecast action's runtimes (hits, misses, recomputed forecasts)",
            (*LOOKUP_COMMANDS, *PUT_COMMANDS),
            keys=(POINTERS, FORECASTS, LEFT_OUT, HITS, MISSES, MISS_BUCKETS),
            read_keys=(TTL_POLICY,),
        ),
        _role(
            DETECTOR,
            "the detect_anomaly action's runtimes",
            DETECT_COMMANDS,
            keys=DETECTOR_STATE,
            read_keys=(POINTERS, FORECASTS),
        ),
        _role(
            CONSUMER,
            "the stream anomaly consumer, which runs detect_anomaly's code in process",
            DETECT_COMMANDS,
            keys=DETECTOR_STATE,
            read_keys=(POINTERS, FORECASTS),
        ),
        _role(
            MONITOR,
            "the cache hit monitor (python -m actions.monitor)",
            MONITOR_COMMANDS,
            keys=(FORECASTS, POINTERS, LEFT_OUT, TTL_POLICY, MONITOR_STATE, PREFETCH),
            read_keys=(HITS, MISSES, MISS_BUCKETS),
        ),
        _role(
            WRITER,
            "the pipeline's populate_cache task, `saodf cache populate`, and the demo, "
            "which deletes one forecast to show a miss",
            (*PUT_COMMANDS, *LEFT_OUT_COMMANDS),
            keys=(
                FORECASTS,
                POINTERS,
                LEFT_OUT,
                TENANT_FORECASTS,
                TENANT_POINTERS,
                TENANT_LEFT_OUT,
            ),
            read_keys=(TTL_POLICY, TENANT_TTL_POLICY),
        ),
        _role(
            READER,
            "the demo's summary and other read-only command-line reads",
            (*STATS_COMMANDS, "get"),
            read_keys=(HITS, MISSES, MONITOR_STATE, FORECASTS, POINTERS, LEFT_OUT),
        ),
        _role(
            EVALUATION,
            "`saodf evaluate anomalies` with the platform detector; it deletes its state "
            "keys after the run",
            (*DETECT_COMMANDS, "scan", "del"),
            keys=(EVALUATION_STATE,),
            read_keys=(POINTERS, FORECASTS),
        ),
        _role(HEALTH, "the stack's health checks of Redis", ()),
    )
}

# Commands of a tenant's ACL user, which serves both actions in the tenant's namespace.
TENANT_COMMANDS = tuple(dict.fromkeys((*ROLES[FORECAST].commands, *ROLES[DETECTOR].commands)))


def get_role(name: str) -> RedisRole:
    """Return the role called ``name``.

    Raises:
        ConfigError: no role has that name.
    """
    role = ROLES.get(name)
    if role is None:
        raise ConfigError(f"Redis role {name!r} is unknown; use one of {sorted(ROLES)}")
    return role


def _check_role_users(settings: Settings) -> None:
    unknown = sorted(set(settings.redis_role_users) - set(ROLES))
    if unknown:
        names = ", ".join(f"SAODF_REDIS_USER_{name.upper()}" for name in unknown)
        known = ", ".join(f"SAODF_REDIS_USER_{name.upper()}" for name in ROLES)
        raise ConfigError(f"{names} names no Redis role; use one of {known}")


def role_user(settings: Settings, role: str) -> str:
    """Return the Redis user that clients of ``role`` log in as.

    Raises:
        ConfigError: the role is unknown, or a ``SAODF_REDIS_USER_<ROLE>`` variable names
            no role.
    """
    get_role(role)
    _check_role_users(settings)
    return settings.redis_role_users.get(role) or settings.redis_user or ROLE_USER_PREFIX + role


def role_password_secret(settings: Settings, role: str) -> str:
    """Return the name of the secret under ``SAODF_HOME/secrets`` with the role's password."""
    if settings.redis_user and not settings.redis_role_users.get(role):
        return "redis_password"
    return f"redis_password_{role}"


def role_login(settings: Settings, role: str) -> tuple[str, str]:
    """Return the user name and password of ``role``, generating the password on first use.

    Raises:
        ConfigError: the role is unknown, or a ``SAODF_REDIS_USER_<ROLE>`` variable names
            no role.
    """
    from saodf.secrets import get_or_create_secret

    user = role_user(settings, role)
    return user, get_or_create_secret(role_password_secret(settings, role), settings)


def acl_rules(roles: list[RedisRole], passwords: list[str]) -> list[str]:
    """Return the ACL rules of one user that serves ``roles``: the union of their grants.

    A key pattern that one role writes and another only reads is granted read and write.
    """
    commands = dict.fromkeys(command for role in roles for command in role.commands)
    keys = dict.fromkeys(pattern for role in roles for pattern in role.keys)
    read_keys = dict.fromkeys(
        pattern for role in roles for pattern in role.read_keys if pattern not in keys
    )
    rules = ["on", *(f">{password}" for password in dict.fromkeys(passwords))]
    rules += [f"~{pattern}" for pattern in keys]
    rules += [f"%R~{pattern}" for pattern in read_keys]
    if not keys and not read_keys:
        rules.append("resetkeys")
    rules += ["resetchannels", "-@all", *(f"+{command}" for command in commands)]
    return rules


def acl_user_lines(settings: Settings) -> list[str]:
    """Return the redis.conf ``user ...`` lines of every role's user, with their passwords.

    Roles that log in as the same user (``SAODF_REDIS_USER``) share one line with the
    union of their grants, and every password that those roles use.
    """
    users: dict[str, tuple[list[RedisRole], list[str]]] = {}
    for role in ROLES.values():
        user, password = role_login(settings, role.name)
        roles, passwords = users.setdefault(user, ([], []))
        roles.append(role)
        passwords.append(password)
    return [
        " ".join(["user", user, *acl_rules(roles, passwords)])
        for user, (roles, passwords) in users.items()
    ]

"""Redis protocol client (redis-py): Valkey locally, Redis in production."""

from __future__ import annotations

import redis

from flowforge_pipeline.settings import Settings, mask_url


class RedisUnavailable(RuntimeError):
    """Redis did not answer; the message names the URL with the password masked."""


def client(settings: Settings) -> redis.Redis:
    """A connected client (pinged, so a wrong URL fails at start)."""
    conn = redis.Redis.from_url(
        settings.redis, socket_connect_timeout=5, socket_timeout=10, decode_responses=True
    )
    try:
        conn.ping()
    except redis.RedisError as exc:
        conn.close()
        raise RedisUnavailable(f"redis at {mask_url(settings.redis)} unreachable: {exc}") from None
    return conn

"""Every setting of the pipeline, read once from the environment (and an optional `.env`).

One frozen object: a component receives it and never reads `os.environ` itself, so the
README, `.env.example` and this file are the whole list. A role whose URL is set uses that
external service; a role whose URL is empty is served by the local stand-in that `up` starts,
on the port its `LOCAL_*_PORT` setting names.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LOCALHOST = "127.0.0.1"


class SettingsError(ValueError):
    """A setting has a value the pipeline cannot use; the message names the setting."""


class Settings(BaseSettings):
    """The pipeline's configuration; see `.env.example` for every variable."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        case_sensitive=False,
    )

    # --- where state, logs and pid files of the local stack live
    state_dir: Path = Field(default=Path(".flowforge"), alias="FLOWFORGE_STATE_DIR")

    # --- broker
    kafka_bootstrap_servers: str = Field(default="", alias="KAFKA_BOOTSTRAP_SERVERS")
    kafka_topic_partitions: int = Field(default=3, ge=1, le=1024, alias="KAFKA_TOPIC_PARTITIONS")
    local_kafka_port: int = Field(default=19092, ge=1, le=65535, alias="LOCAL_KAFKA_PORT")

    # --- OLAP store
    clickhouse_url: SecretStr = Field(default=SecretStr(""), alias="CLICKHOUSE_URL")
    clickhouse_user: str = Field(default="default", alias="CLICKHOUSE_USER")
    clickhouse_password: SecretStr = Field(default=SecretStr(""), alias="CLICKHOUSE_PASSWORD")
    clickhouse_database: str = Field(default="flowforge", alias="CLICKHOUSE_DATABASE")
    # a cluster of the server's remote_servers: DDL goes ON CLUSTER, tables replicated + sharded
    clickhouse_cluster: str = Field(default="", alias="CLICKHOUSE_CLUSTER")
    local_clickhouse_port: int = Field(default=18123, ge=1, le=65535, alias="LOCAL_CLICKHOUSE_PORT")

    # --- live views (Postgres wire protocol: Materialize in production)
    live_views_url: SecretStr = Field(default=SecretStr(""), alias="LIVE_VIEWS_URL")
    local_postgres_port: int = Field(default=15432, ge=1, le=65535, alias="LOCAL_POSTGRES_PORT")

    # --- cache + pub/sub
    redis_url: SecretStr = Field(default=SecretStr(""), alias="REDIS_URL")
    local_redis_port: int = Field(default=16379, ge=1, le=65535, alias="LOCAL_REDIS_PORT")

    # --- orchestration
    local_airflow_port: int = Field(default=18080, ge=1, le=65535, alias="LOCAL_AIRFLOW_PORT")

    # --- generator
    generator_seed: int = Field(default=42, ge=0, alias="GENERATOR_SEED")
    generator_trades_per_second: float = Field(
        default=10.0, gt=0, alias="GENERATOR_TRADES_PER_SECOND"
    )
    generator_quotes_per_second: float = Field(
        default=50.0, gt=0, alias="GENERATOR_QUOTES_PER_SECOND"
    )

    # --- sinks
    sink_flush_size: int = Field(default=50, ge=1, alias="SINK_FLUSH_SIZE")
    sink_flush_wait_seconds: float = Field(default=1.0, gt=0, alias="SINK_FLUSH_WAIT_SECONDS")

    # --- flows
    flow_allowed_lateness_seconds: float = Field(
        default=0.5, ge=0, alias="FLOW_ALLOWED_LATENESS_SECONDS"
    )
    flow_snapshot_seconds: int = Field(default=5, ge=1, alias="FLOW_SNAPSHOT_SECONDS")
    local_flow_metrics_port: int = Field(
        default=19100, ge=1, le=65500, alias="LOCAL_FLOW_METRICS_PORT"
    )

    # --- anomaly detection (flows.anomaly; tuned on a clean run, see docs/anomaly.md)
    anomaly_spread_factor: float = Field(default=3.0, gt=1, alias="ANOMALY_SPREAD_FACTOR")
    anomaly_stale_factor: float = Field(default=12.0, gt=1, alias="ANOMALY_STALE_FACTOR")
    anomaly_volume_factor: float = Field(default=5.0, gt=1, alias="ANOMALY_VOLUME_FACTOR")
    anomaly_price_sigmas: float = Field(default=12.0, gt=0, alias="ANOMALY_PRICE_SIGMAS")
    anomaly_outside_fraction: float = Field(
        default=0.01, gt=0, alias="ANOMALY_OUTSIDE_FRACTION"
    )
    anomaly_warmup_quotes: int = Field(default=50, ge=1, alias="ANOMALY_WARMUP_QUOTES")
    anomaly_merge_seconds: float = Field(default=60.0, ge=0, alias="ANOMALY_MERGE_SECONDS")

    @field_validator("clickhouse_url")
    @classmethod
    def _http_url(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if raw and urlsplit(raw).scheme not in ("http", "https"):
            raise ValueError("must be an http:// or https:// URL")
        return SecretStr(raw.rstrip("/"))

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if raw and urlsplit(raw).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis:// or rediss:// URL")
        return value

    @field_validator("live_views_url")
    @classmethod
    def _pg_url(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if raw and urlsplit(raw).scheme not in ("postgres", "postgresql"):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("clickhouse_database")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not value.replace("_", "").isalnum():
            raise ValueError("must be letters, digits and underscores")
        return value

    @field_validator("clickhouse_cluster")
    @classmethod
    def _cluster_name(cls, value: str) -> str:
        if value and not value.replace("_", "").replace("-", "").isalnum():
            raise ValueError("must be letters, digits, underscores and hyphens")
        return value

    # ------------------------------------------------------------------ resolved URLs
    @property
    def state_path(self) -> Path:
        """Absolute state directory."""
        return self.state_dir.expanduser().resolve()

    @property
    def kafka_is_local(self) -> bool:
        """True when `up` must start the local broker."""
        return not self.kafka_bootstrap_servers

    @property
    def clickhouse_is_local(self) -> bool:
        """True when `up` must start the embedded ClickHouse server."""
        return not self.clickhouse_url.get_secret_value()

    @property
    def postgres_is_local(self) -> bool:
        """True when `up` must start the local PostgreSQL."""
        return not self.live_views_url.get_secret_value()

    @property
    def redis_is_local(self) -> bool:
        """True when `up` must start the local Valkey."""
        return not self.redis_url.get_secret_value()

    @property
    def kafka_servers(self) -> str:
        """Bootstrap servers to connect to."""
        return self.kafka_bootstrap_servers or f"{LOCALHOST}:{self.local_kafka_port}"

    @property
    def clickhouse_http_url(self) -> str:
        """Base HTTP URL of ClickHouse without credentials."""
        raw = self.clickhouse_url.get_secret_value()
        if not raw:
            return f"http://{LOCALHOST}:{self.local_clickhouse_port}"
        parts = urlsplit(raw)
        netloc = parts.hostname or ""
        if parts.port:
            netloc = f"{netloc}:{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    @property
    def clickhouse_credentials(self) -> tuple[str, str]:
        """User and password: those in CLICKHOUSE_URL win over CLICKHOUSE_USER/PASSWORD."""
        raw = self.clickhouse_url.get_secret_value()
        parts = urlsplit(raw) if raw else None
        user = unquote(parts.username) if parts and parts.username else self.clickhouse_user
        if parts and parts.password is not None:
            return user, unquote(parts.password)
        return user, self.clickhouse_password.get_secret_value()

    @property
    def redis(self) -> str:
        """Redis URL to connect to (may hold a password: never print it, use `mask_url`)."""
        return self.redis_url.get_secret_value() or f"redis://{LOCALHOST}:{self.local_redis_port}/0"

    @property
    def postgres(self) -> str:
        """Live-views Postgres URL (may hold a password: never print it, use `mask_url`)."""
        return (
            self.live_views_url.get_secret_value()
            or f"postgresql://flowforge@{LOCALHOST}:{self.local_postgres_port}/flowforge"
        )

    def as_env(self) -> dict[str, str]:
        """Every setting as the environment variable it is read from, secrets included.

        For child processes only (never print it): a component started by `up` must see the
        same configuration as the `up` that started it, including settings made in code.
        """
        env: dict[str, str] = {}
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[info.alias or name.upper()] = str(value)
        return env

    def service_urls(self) -> dict[str, str]:
        """Every role's URL with passwords masked: safe to print."""
        user, password = self.clickhouse_credentials
        ch = urlsplit(self.clickhouse_http_url)
        auth = quote(user) + (":****" if password else "")
        return {
            "kafka": self.kafka_servers,
            "clickhouse": urlunsplit((ch.scheme, f"{auth}@{ch.netloc}", ch.path, "", "")),
            "postgres": mask_url(self.postgres),
            "redis": mask_url(self.redis),
        }


def mask_url(url: str) -> str:
    """Replace the password of a URL with `****`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username or ''}:****@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def load_settings() -> Settings:
    """Read the settings, turning a validation failure into one line naming the setting."""
    try:
        return Settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "setting"
        field = Settings.model_fields.get(name)
        env = field.alias if field and field.alias else name.upper()
        raise SettingsError(f"invalid setting {env}: {err['msg']}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once)."""
    return load_settings()

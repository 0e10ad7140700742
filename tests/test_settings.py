import pytest

from flowforge_pipeline.settings import Settings, SettingsError, load_settings, mask_url


def test_defaults_point_every_role_at_a_local_stand_in_on_uncommon_ports():
    s = Settings(_env_file=None)
    assert s.kafka_is_local and s.clickhouse_is_local and s.postgres_is_local and s.redis_is_local
    assert s.kafka_servers == "127.0.0.1:19092"
    assert s.clickhouse_http_url == "http://127.0.0.1:18123"
    assert s.redis == "redis://127.0.0.1:16379/0"
    assert s.postgres.endswith("@127.0.0.1:15432/flowforge")
    assert {s.local_redis_port, s.local_postgres_port}.isdisjoint({6379, 5432})


def test_a_set_url_switches_the_role_to_the_external_service():
    s = Settings(
        _env_file=None,
        REDIS_URL="redis://:pw@cache:6380/1",
        CLICKHOUSE_URL="https://alice:s3cret@ch.example:8443/",
    )
    assert not s.redis_is_local and s.redis == "redis://:pw@cache:6380/1"
    assert not s.clickhouse_is_local
    assert s.clickhouse_http_url == "https://ch.example:8443"
    assert s.clickhouse_credentials == ("alice", "s3cret")
    assert s.kafka_is_local  # the others stay local


def test_user_and_password_settings_apply_when_the_url_has_none():
    s = Settings(
        _env_file=None,
        CLICKHOUSE_URL="http://ch:8123",
        CLICKHOUSE_USER="bob",
        CLICKHOUSE_PASSWORD="pw",
    )
    assert s.clickhouse_credentials == ("bob", "pw")


def test_secrets_never_appear_in_repr_or_service_urls():
    s = Settings(
        _env_file=None,
        REDIS_URL="redis://:topsecret1@cache:6380/1",
        LIVE_VIEWS_URL="postgresql://mz:topsecret2@mz:6875/materialize",
        CLICKHOUSE_URL="http://u:topsecret3@ch:8123",
        CLICKHOUSE_PASSWORD="topsecret4",
    )
    shown = repr(s) + str(s) + str(s.service_urls())
    for secret in ("topsecret1", "topsecret2", "topsecret3", "topsecret4"):
        assert secret not in shown
    assert s.service_urls()["redis"] == "redis://:****@cache:6380/1"
    assert s.service_urls()["clickhouse"] == "http://u:****@ch:8123"


def test_settings_are_frozen():
    s = Settings(_env_file=None)
    with pytest.raises(Exception, match="frozen"):
        s.sink_flush_size = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LOCAL_REDIS_PORT", "not-a-port"),
        ("LOCAL_POSTGRES_PORT", "70000"),
        ("CLICKHOUSE_URL", "ftp://ch"),
        ("REDIS_URL", "http://cache"),
        ("LIVE_VIEWS_URL", "mysql://db"),
        ("SINK_FLUSH_SIZE", "0"),
        ("GENERATOR_TRADES_PER_SECOND", "-1"),
        ("CLICKHOUSE_DATABASE", "x; DROP TABLE y"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    message = str(err.value)
    assert message.startswith(f"invalid setting {name}:")
    assert "\n" not in message


def test_mask_url_hides_only_the_password():
    assert mask_url("postgresql://u:p@h:5/d?x=1") == "postgresql://u:****@h:5/d?x=1"
    assert mask_url("redis://h:6379/0") == "redis://h:6379/0"


def test_env_example_documents_every_setting():
    from pathlib import Path

    text = (Path(__file__).parents[1] / ".env.example").read_text()
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for field in Settings.model_fields.values():
        assert f"\n{field.alias}=" in text, field.alias
        assert field.alias in readme, field.alias


def test_as_env_round_trips_every_setting_for_child_processes():
    s = Settings(_env_file=None, REDIS_URL="redis://:pw@h:1/0", LOCAL_KAFKA_PORT=12345,
                 SINK_FLUSH_WAIT_SECONDS=0.25)
    again = Settings(_env_file=None, **s.as_env())
    assert again == s
    assert again.redis == "redis://:pw@h:1/0"

"""deploy/: the compose file and Dockerfile agree with the settings, the flows and versions.env.

Nothing here builds or starts a container (no Docker engine on the test machine); the files
are parsed and checked against the code they deploy.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from flowforge_pipeline.flows.components import FLOW_NAMES
from flowforge_pipeline.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"

#: Variables a pipeline container receives that are not pipeline settings, each read by the
#: third-party program named: Airflow's own configuration is any `AIRFLOW__SECTION__KEY`.
NON_PIPELINE_VARIABLES = {
    "AIRFLOW_HOME": "Airflow: its home directory",
    "BYTEWAX_DATAFLOW_API_ENABLED": "Bytewax: serve /metrics",
    "BYTEWAX_DATAFLOW_API_PORT": "Bytewax: port of /metrics",
    "BYTEWAX_DATAFLOW_API_CACHE_PATH": "Bytewax: where dataflow.json is written",
}
PIPELINE_IMAGES = ("flowforge-pipeline", "flowforge-pipeline-airflow")
IMAGE = re.compile(r"^(?P<name>[^:]+(?::\d+/[^:]+)?):\$\{(?P<var>[A-Z_]+)(?::\?[^}]*)?\}$")


def resolve(value: object) -> str:
    """A compose value with `${VAR:-default}` as its default and `${VAR:?msg}` as `__VAR__`."""
    text = re.sub(r"\$\{([A-Z_]+):-([^}]*)\}", lambda m: m.group(2), str(value))
    return re.sub(r"\$\{([A-Z_]+)(?::\?[^}]*)?\}", lambda m: f"__{m.group(1)}__", text)


def load_compose() -> dict[str, Any]:
    data = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def load_versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (DEPLOY / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def image_name(service: dict[str, Any]) -> str:
    match = IMAGE.match(service["image"])
    assert match, f"image {service['image']!r} is not <name>:${{VERSION}}"
    return match.group("name")


def pipeline_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in compose["services"].items()
        if image_name(svc) in PIPELINE_IMAGES
    }


def unknown_variables(environment: dict[str, Any]) -> list[str]:
    """Names a pipeline service is given that neither the settings nor a known program read."""
    aliases = {info.alias for info in Settings.model_fields.values()}
    return sorted(
        name
        for name in environment
        if name not in aliases
        and name not in NON_PIPELINE_VARIABLES
        and not re.fullmatch(r"AIRFLOW__[A-Z_]+__[A-Z_]+", name)
    )


def service_with_image(compose: dict[str, Any], prefix: str) -> str:
    found = [n for n, s in compose["services"].items() if image_name(s).endswith(prefix)]
    assert len(found) == 1, f"{prefix}: {found}"
    return found[0]


def test_every_variable_given_to_a_pipeline_service_is_a_setting_or_documented():
    services = pipeline_services(load_compose())
    assert len(services) >= len(FLOW_NAMES) + 5
    for name, svc in services.items():
        env = svc.get("environment", {})
        assert isinstance(env, dict), f"{name}: environment must be a mapping"
        assert "KAFKA_BOOTSTRAP_SERVERS" in env, name
        assert unknown_variables(env) == [], name


def test_the_variable_check_catches_a_misspelt_setting():
    assert unknown_variables({"KAFKA_BOOTSTRAP_SERVER": "x", "CLICKHOUSE_URL": "y"}) == [
        "KAFKA_BOOTSTRAP_SERVER"
    ]
    assert unknown_variables({"AIRFLOW_CORE_EXECUTOR": "x"}) == ["AIRFLOW_CORE_EXECUTOR"]
    assert unknown_variables({"AIRFLOW__CORE__EXECUTOR": "x"}) == []


def test_secrets_come_from_the_environment_never_from_the_file():
    compose = load_compose()
    checked = 0
    for name, svc in compose["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET", key) and not key.endswith("_FILE"):
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", str(value)), (name, key)
                checked += 1
            if key.endswith(("_URL", "_CONN")):
                password = urlsplit(resolve(value)).password
                assert password is None or re.fullmatch(r"__[A-Z_]+__", password), (name, key)
                checked += password is not None
    assert checked >= 10


def test_every_role_the_pipeline_needs_has_a_service_and_the_urls_point_at_it():
    compose = load_compose()
    services = compose["services"]
    broker = service_with_image(compose, "redpandadata/redpanda")
    clickhouse = service_with_image(compose, "clickhouse/clickhouse-server")
    materialize = service_with_image(compose, "materialize/materialized")
    redis = service_with_image(compose, "redis")
    env = services["init"]["environment"]
    assert resolve(env["KAFKA_BOOTSTRAP_SERVERS"]).split(":")[0] == broker
    assert urlsplit(resolve(env["CLICKHOUSE_URL"])).hostname == clickhouse
    assert urlsplit(resolve(env["LIVE_VIEWS_URL"])).hostname == materialize
    assert urlsplit(resolve(env["REDIS_URL"])).hostname == redis
    assert urlsplit(resolve(env["REDIS_URL"])).password == "__REDIS_PASSWORD__"
    airflow = {
        tuple(s.get("command", []))[:1]: n
        for n, s in services.items()
        if image_name(s) == "flowforge-pipeline-airflow"
    }
    for role in ("api-server", "scheduler", "dag-processor"):
        assert (role,) in airflow, f"no Airflow {role}"
    assert services["generator"]["command"] == ["generate"]
    assert services["init"]["entrypoint"] == ["flowforge-init"]


def test_every_flow_has_a_service_with_its_own_recovery_volume():
    compose = load_compose()
    volumes = set()
    for flow in FLOW_NAMES:
        svc = compose["services"][f"flow-{flow}"]
        assert image_name(svc) == "flowforge-pipeline"
        assert svc["entrypoint"] == ["flowforge-run-flow"]
        assert svc["command"] == [flow]
        mounts = [v for v in svc["volumes"] if v.endswith(":/var/lib/flowforge")]
        assert len(mounts) == 1, flow
        volume = mounts[0].split(":")[0]
        assert volume in compose["volumes"]
        volumes.add(volume)
        assert svc["depends_on"]["init"]["condition"] == "service_completed_successfully"
    assert len(volumes) == len(FLOW_NAMES)
    # the flow runner starts the module these services name, with recovery on that volume
    runner = (DEPLOY / "run-flow.sh").read_text()
    assert '"flowforge_pipeline.flows.${flow}:flow"' in runner
    assert '-r "${recovery}"' in runner


def test_every_published_port_binds_127_0_0_1():
    compose = load_compose()
    published = 0
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            published += 1
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", name
            else:
                assert re.fullmatch(r"127\.0\.0\.1:\d+:\d+", str(port)), (name, port)
    assert published >= 5 + len(FLOW_NAMES)


def test_every_image_version_comes_from_versions_env():
    compose = load_compose()
    versions = load_versions()
    used = set()
    for name, svc in compose["services"].items():
        match = IMAGE.match(svc["image"])
        assert match, f"{name}: {svc['image']!r} is not <name>:${{VERSION}}"
        assert match.group("var") in versions, name
        used.add(match.group("var"))
        build = svc.get("build")
        if build:
            arg = build["args"]["PYTHON_VERSION"]
            assert re.fullmatch(r"\$\{PYTHON_VERSION(:\?[^}]*)?\}", arg), name
    assert used | {"PYTHON_VERSION"} == set(versions)
    pyproject = (REPO / "pyproject.toml").read_text()
    assert f'\nversion = "{versions["PIPELINE_VERSION"]}"\n' in pyproject


def test_depends_on_uses_conditions_on_services_that_can_meet_them():
    services = load_compose()["services"]
    for name, svc in services.items():
        for dep, cond in svc.get("depends_on", {}).items():
            assert dep in services, (name, dep)
            assert cond["condition"] in ("service_healthy", "service_completed_successfully")
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], (name, dep)
            else:
                assert services[dep].get("restart") == "no", (name, dep)


def _dockerfile() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_pins_its_base_runs_as_non_root_and_enters_the_cli():
    instructions = _dockerfile()
    versions = load_versions()
    args = dict(
        rest.split("=", 1) for word, rest in instructions if word == "ARG" and "=" in rest
    )
    assert args["PYTHON_VERSION"] == versions["PYTHON_VERSION"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", versions["PYTHON_VERSION"])
    froms = [rest for word, rest in instructions if word == "FROM"]
    assert froms == ["python:${PYTHON_VERSION}-slim-bookworm"]
    users = [rest for word, rest in instructions if word == "USER"]
    assert users, "no USER"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert any(word == "RUN" and "pip install" in rest for word, rest in instructions)
    assert ("ENTRYPOINT", '["flowforge-pipeline"]') in instructions
    copied = {rest.split()[0] for word, rest in instructions if word == "COPY"}
    for path in copied:
        assert (REPO / path).exists(), path


@pytest.mark.parametrize("script", ["run-flow.sh", "init.sh"])
def test_scripts_the_image_runs_are_shipped_and_executable(script: str):
    path = DEPLOY / script
    assert path.stat().st_mode & 0o111
    assert path.read_text().startswith("#!/bin/sh\n")

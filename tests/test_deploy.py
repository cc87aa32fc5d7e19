"""The Dockerfile, the compose file and the Prometheus config agree with the code."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import api.observability
import notifier.observability.metrics
from notifier.cli.main import build_parser
from notifier.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
# Imported for their registrations in the default Prometheus registry.
EXPORTERS = (api.observability, notifier.observability.metrics)
_INTERPOLATION = re.compile(r"\$\{([A-Z_]+)(?::-([^}]*))?\}")


def _interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` with nothing set: the default."""
    return _INTERPOLATION.sub(lambda m: m.group(2) or "", value)


def _compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return document


def _ours(service: dict[str, Any]) -> bool:
    return "build" in service


def _command(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    words = shlex.split(command) if isinstance(command, str) else command
    return [_interpolate(str(word)) for word in words]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    return {key: _interpolate(str(value)) for key, value in env.items()}


SERVICES = _compose()["services"]
OUR_SERVICES = sorted(name for name, service in SERVICES.items() if _ours(service))


def test_the_stack_has_every_part() -> None:
    assert {"postgres", "migrate", "api", "notifier", "receiver", "prometheus", "grafana"} <= set(
        SERVICES
    )
    assert SERVICES["notifier"]["deploy"]["replicas"] == 2
    for name, service in SERVICES.items():
        assert "image" in service or "build" in service, name


@pytest.mark.parametrize("name", OUR_SERVICES)
def test_commands_parse_with_the_real_cli(name: str) -> None:
    args = build_parser().parse_args(_command(SERVICES[name]))
    assert args.command == _command(SERVICES[name])[0]


@pytest.mark.parametrize("name", OUR_SERVICES)
def test_environment_names_settings_the_code_reads(name: str) -> None:
    env = _environment(SERVICES[name])
    known = {f"NOTIFIER_{field.upper()}" for field in Settings.model_fields}
    ours = {key for key in env if key.startswith("NOTIFIER_")}
    assert ours <= known, ours - known
    settings = Settings(**{key.removeprefix("NOTIFIER_").lower(): v for key, v in env.items()})
    assert settings.database_url.startswith("postgresql://")


def _settings_of(name: str) -> Settings:
    env = _environment(SERVICES[name])
    return Settings(**{key.removeprefix("NOTIFIER_").lower(): value for key, value in env.items()})


def _container_ports(service: dict[str, Any]) -> set[int]:
    published = {int(str(p).rsplit(":", 1)[-1]) for p in service.get("ports", [])}
    return published | {int(p) for p in service.get("expose", [])}


def test_ports_match_the_settings() -> None:
    assert _settings_of("api").api_port in _container_ports(SERVICES["api"])
    assert _settings_of("notifier").daemon_port in _container_ports(SERVICES["notifier"])
    receiver = build_parser().parse_args(_command(SERVICES["receiver"]))
    assert receiver.port in _container_ports(SERVICES["receiver"])


def test_health_checks_probe_what_each_service_runs() -> None:
    assert "pg_isready" in " ".join(SERVICES["postgres"]["healthcheck"]["test"])
    for name, target in (("api", "api"), ("notifier", "daemon")):
        test = SERVICES[name]["healthcheck"]["test"]
        assert test[0] == "CMD"
        assert test[1] == "notifier"
        args = build_parser().parse_args(test[2:])
        assert (args.command, args.target) == ("healthcheck", target)
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    migrate = build_parser().parse_args(SERVICES["migrate"]["command"])
    assert (migrate.command, migrate.wait) == ("migrate", 60.0)
    for name in ("api", "notifier"):
        assert SERVICES[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )


def test_prometheus_scrapes_both_processes_on_their_ports() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["api"]["static_configs"][0]["targets"] == [f"api:{_settings_of('api').api_port}"]
    dns = jobs["notifier"]["dns_sd_configs"][0]
    assert (dns["names"], dns["port"]) == (["notifier"], _settings_of("notifier").daemon_port)


def test_grafana_is_provisioned_from_files_that_exist() -> None:
    volumes = SERVICES["grafana"]["volumes"]
    for volume in volumes:
        source = volume.split(":", 1)[0]
        assert (ROOT / source).exists(), source
    dashboards = list((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
    assert dashboards


def _dockerfile_stages() -> list[list[str]]:
    lines = (ROOT / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    stages: list[list[str]] = []
    for line in (raw.strip() for raw in lines):
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


def test_dockerfile_final_image_is_small_non_root_and_checks_health() -> None:
    final = _dockerfile_stages()[-1]
    instructions = {line.split()[0].upper(): line for line in final}
    assert "slim" in instructions["FROM"]
    user = instructions["USER"].split()[1]
    assert user not in ("root", "0")
    assert instructions["ENTRYPOINT"] == 'ENTRYPOINT ["notifier"]'
    healthcheck = shlex.split(instructions["HEALTHCHECK"])
    command = healthcheck[healthcheck.index("CMD") + 1 :]
    command = [word.strip('[],"') for word in command]
    assert command[0] == "notifier"
    assert build_parser().parse_args(command[1:]).command == "healthcheck"
    exposed = {int(port) for port in instructions["EXPOSE"].split()[1:]}
    defaults = Settings()
    assert {defaults.api_port, defaults.daemon_port} <= exposed
    # No compilers or package managers' build tools in the final stage.
    assert not any(re.search(r"apt-get|gcc|build-essential", line) for line in final)


def test_dockerfile_copies_what_the_wheel_needs() -> None:
    build = _dockerfile_stages()[0]
    copied = {line.split()[1] for line in build if line.upper().startswith("COPY ")}
    assert {"notifier", "api", "sql", "pyproject.toml"} <= copied
    for path in copied:
        assert (ROOT / path).exists(), path


def test_dashboard_queries_name_metrics_the_code_exports() -> None:
    exported = {sample.name for family in REGISTRY.collect() for sample in family.samples} | {
        family.name for family in REGISTRY.collect()
    }
    dashboard = json.loads(
        (ROOT / "deploy" / "grafana" / "dashboards" / "notifier.json").read_text()
    )
    names: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            names |= set(re.findall(r"\b((?:notifier|api)_[a-z_]+)\b", target["expr"]))
    assert names
    # Labelled counters and histograms export samples only once used: a family suffices.
    missing = {
        name
        for name in names
        if not {name, name.removesuffix("_bucket"), name.removesuffix("_total")} & exported
    }
    assert not missing, missing

"""The Kubernetes manifests render, match the Kubernetes API schemas and agree with the code.

``kubectl kustomize`` renders the base and the local overlay; without kubectl the tests
skip, unless ``NOTIFIER_REQUIRE_KUBECTL=1`` makes that a failure.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from aiohttp import web
from pydantic import SecretStr

from api.app import create_app
from api.auth import PUBLIC_PATHS
from notifier import __version__
from notifier.cli.main import build_parser
from notifier.devtools import SECRET_ENV
from notifier.observability.health import health_app
from notifier.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
KUSTOMIZATIONS = {
    "base": ROOT / "deploy" / "kubernetes" / "base",
    "local": ROOT / "deploy" / "kubernetes" / "overlays" / "local",
}
# The oldest Kubernetes the manifests are written for; they are also checked against the
# newest whose schemas kubernetes-validate ships.
OLDEST_KUBERNETES = (1, 27)
SCHEMA_VERSIONS = ("1.27", kubernetes_validate.latest_version())
# The Deployments of the two processes, and the subcommand each runs.
PROCESSES = {"notifier-api": "api", "notifier-daemon": "run"}
# Peak RSS measured per subcommand (MiB), as the manifests' comments give it: a request
# must cover it and a limit leave it at least as much again.
MEASURED_PEAK_MIB = {"api": 61.2, "run": 92.2, "migrate": 46.6, "receiver": 55.8}
# Stand-ins for the values the base reads from the Secret it does not ship.
SECRET_STAND_INS = {
    "NOTIFIER_DATABASE_URL": "postgresql://notifier@postgres:5432/notifier",
    "NOTIFIER_API_TOKEN": "token",
}
_VARIABLE_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")

Object = dict[str, Any]


@pytest.fixture(autouse=True)
def _no_settings_from_this_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from the manifests and the defaults, not from whoever runs the tests."""
    for field in Settings.model_fields:
        monkeypatch.delenv(f"NOTIFIER_{field.upper()}", raising=False)


@functools.cache
def _kubectl() -> tuple[str | None, str]:
    """kubectl's path, or None and why it cannot be used."""
    found = shutil.which("kubectl")
    if found is None:
        return None, "kubectl is not on PATH"
    result = subprocess.run(
        [found, "version", "--client", "--output", "json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    client = json.loads(result.stdout or "{}").get("clientVersion", {})
    major, minor = (
        int(re.sub(r"\D", "", client.get(part, "0")) or 0) for part in ("major", "minor")
    )
    if (major, minor) < OLDEST_KUBERNETES:
        return None, f"kubectl {major}.{minor} is too old"
    return found, ""


def _require_kubectl() -> str:
    found, problem = _kubectl()
    if found is None:
        hint = f"{problem}: install kubectl 1.27 or newer to check deploy/kubernetes"
        if os.environ.get("NOTIFIER_REQUIRE_KUBECTL") == "1":
            pytest.fail(f"{hint} (NOTIFIER_REQUIRE_KUBECTL=1: these tests must run)")
        pytest.skip(hint)
    return found


@functools.cache
def _render(name: str) -> tuple[Object, ...]:
    result = subprocess.run(
        [_require_kubectl(), "kustomize", str(KUSTOMIZATIONS[name])],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def _objects(name: str, kind: str) -> dict[str, Object]:
    return {o["metadata"]["name"]: o for o in _render(name) if o["kind"] == kind}


def _workloads(name: str) -> dict[str, Object]:
    """Every Deployment and StatefulSet, by name."""
    return {**_objects(name, "Deployment"), **_objects(name, "StatefulSet")}


def _containers(pod: Object) -> Iterator[Object]:
    yield from pod.get("initContainers", [])
    yield from pod["containers"]


def _main(deployment: Object) -> Object:
    containers: list[Object] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, deployment["metadata"]["name"]
    return containers[0]


def _secret_values(name: str) -> dict[tuple[str, str], str]:
    """(Secret name, key) -> value of every Secret rendered."""
    values = {}
    for secret_name, secret in _objects(name, "Secret").items():
        for key, encoded in secret.get("data", {}).items():
            values[secret_name, key] = base64.b64decode(encoded).decode()
        for key, value in secret.get("stringData", {}).items():
            values[secret_name, key] = value
    return values


def _environment(name: str, container: Object) -> dict[str, str]:
    """The container's variables, those from a Secret as the Secret (or a stand-in) has them."""
    secrets = _secret_values(name)
    env = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
            continue
        ref = var["valueFrom"]["secretKeyRef"]
        if (ref["name"], ref["key"]) in secrets:
            env[var["name"]] = secrets[ref["name"], ref["key"]]
        elif not ref.get("optional", False):  # an optional key left out sets nothing
            env[var["name"]] = SECRET_STAND_INS.get(var["name"], "stand-in")
    return env


def _settings(name: str, container: Object) -> Settings:
    """The settings the container's process reads (its variables, else the defaults)."""
    fields: dict[str, Any] = {}
    for variable, value in _environment(name, container).items():
        field = variable.removeprefix("NOTIFIER_").lower()
        if variable.startswith("NOTIFIER_") and field in Settings.model_fields:
            fields[field] = value
    return Settings(**fields)


def _args(container: Object) -> list[str]:
    """The container's arguments, with ``$(VAR)`` expanded as the kubelet does."""
    env = {var["name"]: var.get("value", f"<{var['name']}>") for var in container.get("env", [])}
    expanded = []
    for arg in container.get("args", []):
        for variable in _VARIABLE_REFERENCE.findall(arg):
            # An undefined reference is passed on verbatim: never what was meant.
            assert variable in env, f"{container['name']}: $({variable}) is not defined"
        expanded.append(_VARIABLE_REFERENCE.sub(lambda m: env[m.group(1)], arg))
    return expanded


def _subcommand(container: Object) -> str:
    command: str = build_parser().parse_args(_args(container)).command
    return command


def _selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a label selector (matchLabels and matchExpressions) selects these labels."""
    if not all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        held = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not held:
            return False
    return bool(selector.get("matchLabels") or selector.get("matchExpressions"))


def _pod_labels(workload: Object) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def _port_number(container: Object, port: int | str) -> int:
    """A probe's or Service's port (a number or a container port's name) as a number."""
    declared = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    if isinstance(port, str):
        assert port in declared, f"{container['name']} has no port named {port}"
        return int(declared[port])
    assert port in declared.values(), f"{container['name']} declares no port {port}"
    return port


def _mebibytes(quantity: str) -> float:
    """A memory quantity (``96Mi``, ``1Gi``, ``500M``) in MiB."""
    units = {
        "Ki": 1 / 1024,
        "Mi": 1,
        "Gi": 1024,
        "K": 1e3 / 2**20,
        "M": 1e6 / 2**20,
        "G": 1e9 / 2**20,
    }
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMG]i?)?", quantity)
    assert match, quantity
    return float(match.group(1)) * (units[match.group(2)] if match.group(2) else 1 / 2**20)


@functools.cache
def _get_routes(process: str) -> frozenset[str]:
    """The GET paths the real application of ``api`` or ``run`` serves."""

    async def readiness() -> dict[str, bool]:
        return {}

    app: web.Application = (
        create_app(Settings(api_token=SecretStr("token")))
        if process == "api"
        else health_app(readiness)
    )
    return frozenset(
        route.resource.canonical
        for route in app.router.routes()
        if route.method == "GET" and route.resource is not None
    )


def _process_port(process: str, settings: Settings) -> int:
    return settings.api_port if process == "api" else settings.daemon_port


def _dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text().replace("\\\n", " ")


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_every_object_matches_the_kubernetes_api_schemas(name: str, version: str) -> None:
    problems = []
    for obj in _render(name):
        try:
            # Strict: a misspelt field is an error, not silently dropped.
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(part) for part in exc.absolute_path)
            problems.append(f"{obj['kind']}/{obj['metadata']['name']} {where}: {exc.message}")
    assert not problems, "\n".join(problems)


def test_the_base_runs_two_of_each_process_anywhere() -> None:
    deployments = _objects("base", "Deployment")
    assert set(PROCESSES) <= set(deployments)
    for deployment_name in PROCESSES:
        assert deployments[deployment_name]["spec"]["replicas"] == 2
    assert set(PROCESSES) <= set(_objects("base", "Service"))
    namespaced = [o for o in _render("base") if "namespace" in o["metadata"]]
    assert not namespaced, "the base must not pick a namespace"


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_containers_run_the_image_the_dockerfile_builds(name: str) -> None:
    assert re.search(r'^ENTRYPOINT \["notifier"\]$', _dockerfile(), re.MULTILINE)
    # The base names a release; the local overlay what `docker compose build` tags.
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    expected = {"base": f"notifier:{__version__}", "local": compose["services"]["api"]["image"]}
    for deployment in _objects(name, "Deployment").values():
        for container in _containers(deployment["spec"]["template"]["spec"]):
            assert container["image"] == expected[name], container["name"]
            # The image's entrypoint is the `notifier` command: only arguments are given.
            assert "command" not in container, container["name"]


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_arguments_parse_with_the_real_cli(name: str) -> None:
    deployments = _objects(name, "Deployment")
    for deployment_name, subcommand in PROCESSES.items():
        assert _subcommand(_main(deployments[deployment_name])) == subcommand
    for deployment in deployments.values():
        for container in _containers(deployment["spec"]["template"]["spec"]):
            _subcommand(container)  # argparse exits on anything it does not take


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_each_process_migrates_first_and_waits_for_the_database(name: str) -> None:
    deployments = _objects(name, "Deployment")
    for deployment_name in PROCESSES:
        pod = deployments[deployment_name]["spec"]["template"]["spec"]
        first = pod["initContainers"][0]
        migrate = build_parser().parse_args(_args(first))
        assert migrate.command == "migrate"
        assert migrate.wait >= 60, "a database still starting would fail the pod"
        # The same database as the process, from the same place.
        sources = [
            next(var for var in container["env"] if var["name"] == "NOTIFIER_DATABASE_URL")
            for container in (first, _main(deployments[deployment_name]))
        ]
        assert sources[0] == sources[1], deployment_name


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_environment_names_settings_the_code_reads(name: str) -> None:
    known = {f"NOTIFIER_{field.upper()}" for field in Settings.model_fields} | {SECRET_ENV}
    for deployment in _objects(name, "Deployment").values():
        for container in _containers(deployment["spec"]["template"]["spec"]):
            ours = {var["name"] for var in container.get("env", [])}
            ours = {variable for variable in ours if variable.startswith("NOTIFIER_")}
            assert ours <= known, ours - known
            settings = _settings(name, container)
            assert settings.database_url.startswith("postgresql://")
    api = _environment(name, _main(_objects(name, "Deployment")["notifier-api"]))
    assert "NOTIFIER_API_TOKEN" in api, "the API refuses to start without a token"


def _secret_references(name: str) -> Iterator[tuple[str, Object, Object]]:
    """(variable name, container, secretKeyRef) of every variable read from a Secret."""
    for workload in _workloads(name).values():
        for container in _containers(workload["spec"]["template"]["spec"]):
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref is not None:
                    yield var["name"], container, ref


def test_the_base_references_a_secret_and_commits_none() -> None:
    assert not _objects("base", "Secret")
    assert not [o for o in _render("base") if "data" in o or "stringData" in o]
    references = list(_secret_references("base"))
    assert {ref["name"] for _, _, ref in references} == {"notifier"}
    required = {ref["key"] for _, _, ref in references if not ref.get("optional", False)}
    assert required == {"database-url", "api-token"}
    # Sentry's DSN (a credential: it lets anyone send events) is read when it is there.
    optional = {(name, ref["key"]) for name, _, ref in references if ref.get("optional", False)}
    assert optional == {("NOTIFIER_SENTRY_DSN", "sentry-dsn")}


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_credentials_come_only_from_secrets(name: str) -> None:
    for workload in _workloads(name).values():
        for container in _containers(workload["spec"]["template"]["spec"]):
            for var in container.get("env", []):
                if re.search(r"DATABASE_URL|TOKEN|SECRET|PASSWORD|DSN", var["name"]):
                    assert "value" not in var, f"{container['name']}: {var['name']}"


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_probes_ask_the_health_routes_on_the_settings_port(name: str) -> None:
    deployments = _objects(name, "Deployment")
    for deployment_name, process in PROCESSES.items():
        container = _main(deployments[deployment_name])
        port = _process_port(process, _settings(name, container))
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = container[probe]["httpGet"]
            assert get["path"] == path, (deployment_name, probe)
            assert path in _get_routes(process)
            # Probes carry no token.
            assert process != "api" or path in PUBLIC_PATHS
            assert _port_number(container, get["port"]) == port, (deployment_name, probe)


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_scrape_annotations_point_at_the_metrics(name: str) -> None:
    deployments = _objects(name, "Deployment")
    for deployment_name, process in PROCESSES.items():
        annotations = deployments[deployment_name]["spec"]["template"]["metadata"]["annotations"]
        container = _main(deployments[deployment_name])
        assert annotations["prometheus.io/scrape"] == "true"
        port = int(annotations["prometheus.io/port"])
        assert port == _process_port(process, _settings(name, container))
        assert _port_number(container, port) == port
        assert annotations["prometheus.io/path"] in _get_routes(process)
        assert process != "api" or annotations["prometheus.io/path"] in PUBLIC_PATHS


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_pods_outlast_the_shutdown_grace(name: str) -> None:
    deployments = _objects(name, "Deployment")
    for deployment_name, process in PROCESSES.items():
        pod = deployments[deployment_name]["spec"]["template"]["spec"]
        grace = _settings(name, _main(deployments[deployment_name])).shutdown_grace_seconds
        pre_stop = _main(deployments[deployment_name]).get("lifecycle", {}).get("preStop")
        pause = float(pre_stop["exec"]["command"][1]) if pre_stop else 0.0
        if pre_stop:
            assert pre_stop["exec"]["command"][0] == "sleep"
        # The API waits once for in-flight requests; the daemon up to the grace for each
        # of finishing attempts, recording them and releasing the rest.
        needed = pause + grace if process == "api" else 3 * grace
        assert pod["terminationGracePeriodSeconds"] > needed, deployment_name
    assert _main(deployments["notifier-api"])["lifecycle"]["preStop"], "no pause for endpoints"


def _effective(pod: Object, container: Object, field: str) -> Any:
    """A securityContext field as it applies to a container (its own, else the pod's)."""
    own = container.get("securityContext", {})
    return own[field] if field in own else pod.get("securityContext", {}).get(field)


def _check_restricted(pod: Object, workload_name: str) -> None:
    """Pod Security's `restricted` profile, and what these pods add to it."""
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(host), (workload_name, host)
    assert not [v for v in pod.get("volumes", []) if "hostPath" in v], workload_name
    assert pod["automountServiceAccountToken"] is False, workload_name
    # Service links would put *_PORT and *_SERVICE_HOST variables into the environment,
    # NOTIFIER_API_PORT=tcp://... among them for a Service named notifier-api.
    assert pod["enableServiceLinks"] is False, workload_name
    for container in _containers(pod):
        where = (workload_name, container["name"])
        assert _effective(pod, container, "runAsNonRoot") is True, where
        assert _effective(pod, container, "runAsUser") not in (None, 0), where
        assert _effective(pod, container, "seccompProfile") == {"type": "RuntimeDefault"}, where
        own = container["securityContext"]
        assert own["allowPrivilegeEscalation"] is False, where
        assert own["readOnlyRootFilesystem"] is True, where
        assert own["capabilities"] == {"drop": ["ALL"]}, where
        assert not own.get("privileged"), where


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_pods_run_restricted_and_as_the_image_user(name: str) -> None:
    user = re.search(r"useradd\b[^\n]*--uid (\d+)", _dockerfile())
    assert user, "the Dockerfile no longer makes its user with a fixed uid"
    for workload_name, workload in _workloads(name).items():
        pod = workload["spec"]["template"]["spec"]
        _check_restricted(pod, workload_name)
        if workload["kind"] == "Deployment":
            for container in _containers(pod):
                assert _effective(pod, container, "runAsUser") == int(user.group(1))


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_resources_cover_the_measured_memory(name: str) -> None:
    for workload_name, workload in _workloads(name).items():
        for container in _containers(workload["spec"]["template"]["spec"]):
            where = (workload_name, container["name"])
            requests, limits = container["resources"]["requests"], container["resources"]["limits"]
            assert "cpu" in requests, where
            request, limit = _mebibytes(requests["memory"]), _mebibytes(limits["memory"])
            assert limit >= request, where
            if workload["kind"] != "Deployment":
                continue
            peak = MEASURED_PEAK_MIB.get(_subcommand(container))
            if peak is not None:
                assert request >= peak, where
                assert limit >= 2 * peak, where


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_disruption_budgets_and_selectors_match_the_pods(name: str) -> None:
    workloads = _workloads(name)
    budgets = _objects(name, "PodDisruptionBudget")
    for workload_name, workload in workloads.items():
        assert _selects(workload["spec"]["selector"], _pod_labels(workload)), workload_name
        others = [_pod_labels(w) for n, w in workloads.items() if n != workload_name]
        assert not any(_selects(workload["spec"]["selector"], labels) for labels in others)
    for deployment_name in PROCESSES:
        labels = _pod_labels(workloads[deployment_name])
        covering = [b for b in budgets.values() if _selects(b["spec"]["selector"], labels)]
        assert len(covering) == 1, deployment_name
        budget = covering[0]["spec"]
        # A budget that allows no eviction at all would block every node drain.
        assert budget.get("maxUnavailable", 0) >= 1 or (
            budget["minAvailable"] < workloads[deployment_name]["spec"]["replicas"]
        )
    for budget_name, budget in budgets.items():
        selected = [
            w for w in workloads.values() if _selects(budget["spec"]["selector"], _pod_labels(w))
        ]
        assert len(selected) == 1, budget_name


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_services_select_the_pods_and_ports_they_serve(name: str) -> None:
    workloads = _workloads(name)
    for service_name, service in _objects(name, "Service").items():
        selector = {"matchLabels": service["spec"]["selector"]}
        selected = [w for w in workloads.values() if _selects(selector, _pod_labels(w))]
        assert len(selected) == 1, service_name
        main = selected[0]["spec"]["template"]["spec"]["containers"][0]
        for port in service["spec"]["ports"]:
            target = _port_number(main, port.get("targetPort", port["port"]))
            if selected[0]["metadata"]["name"] in PROCESSES:
                process = PROCESSES[selected[0]["metadata"]["name"]]
                assert target == _process_port(process, _settings(name, main)), service_name
    # Every replica of the daemon is scraped, a not-ready (stalled) one above all.
    daemon = _objects(name, "Service")["notifier-daemon"]["spec"]
    assert daemon["clusterIP"] == "None"
    assert daemon["publishNotReadyAddresses"] is True


def test_the_local_overlay_runs_alone_in_its_namespace() -> None:
    deployments = _objects("local", "Deployment")
    for deployment_name in PROCESSES:
        assert deployments[deployment_name]["spec"]["replicas"] == 1
    (namespace,) = _objects("local", "Namespace").values()
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    for obj in _render("local"):
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == namespace["metadata"]["name"], obj["kind"]


def test_the_local_overlay_generates_its_demo_secret() -> None:
    (secret_name, secret), *others = _objects("local", "Secret").items()
    assert not others
    assert "demo-only" in json.dumps(secret["metadata"].get("annotations", {}))
    values = _secret_values("local")
    # Every reference was renamed to the generated (hash-suffixed) Secret, and its key is there.
    for variable, container, ref in _secret_references("local"):
        if not ref.get("optional", False):
            assert (ref["name"], ref["key"]) in values, (container["name"], variable)
    url = urlsplit(values[secret_name, "database-url"])
    postgres = _objects("local", "StatefulSet")["postgres"]
    env = _environment("local", postgres["spec"]["template"]["spec"]["containers"][0])
    assert (url.username, url.password) == (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"])
    assert url.path == f"/{env['POSTGRES_DB']}"
    service = _objects("local", "Service")[postgres["spec"]["serviceName"]]
    assert (url.hostname, url.port) == (
        service["metadata"]["name"],
        service["spec"]["ports"][0]["port"],
    )


def test_the_local_receiver_is_subscribed_where_it_listens() -> None:
    receiver = _objects("local", "Deployment")["notifier-receiver"]
    main = _main(receiver)
    listening = build_parser().parse_args(_args(main))
    subscribe = next(
        c for c in receiver["spec"]["template"]["spec"]["initContainers"] if "add" in c["args"]
    )
    added = build_parser().parse_args(_args(subscribe))
    url = urlsplit(added.url)
    service = _objects("local", "Service")[str(url.hostname)]
    (port,) = service["spec"]["ports"]
    assert url.port == port["port"]
    assert _port_number(main, port["targetPort"]) == listening.port
    # Both sign with the same secret.
    assert _environment("local", subscribe)[SECRET_ENV] == _environment("local", main)[SECRET_ENV]
    # A cluster address is a private one: the daemon sends to it, the API and the CLI
    # subscribe it.
    deployments = _objects("local", "Deployment")
    for container in (_main(deployments[name]) for name in PROCESSES):
        assert _settings("local", container).allow_private_targets, container["name"]
    assert _settings("local", subscribe).allow_private_targets

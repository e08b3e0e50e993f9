"""The Helm chart (helm/orchestrator), checked offline in a few seconds:
rendered with helm-python-sdk (Helm's Go SDK in a bundled native library, no
helm binary, no network), linted strictly, every manifest validated strictly
against pinned Kubernetes schemas (kubernetes-validate ships them), bad values
rejected by values.schema.json; plus the container image's health check."""

from __future__ import annotations

import asyncio
import base64
import functools
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from cli.embedded_nats import find_nats_server
from orchestration.runtime import healthcheck
from orchestration.runtime.credentials import engine_credential_for, issue_controller_credential
from orchestration.store.natsusers import chart_permissions
from orchestration.store.subjects import Subjects
from orchestration_sdk.runtime.credentials import secret_sha256
from orchestration_sdk.runtime.grpcserver import Server

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "orchestrator"
PRODUCTION = CHART / "values-production.yaml"
# The newest Kubernetes the pinned kubernetes-validate knows, and the oldest
# the chart supports (Chart.yaml kubeVersion: grpc probes are GA since 1.27).
KUBE_VERSIONS = ("1.37.0", "1.27.0")
RELEASE, NAMESPACE = "orch", "prod"
SERVICES = ("gateway", "dispatcher", "monitor", "controller-sim")

Manifest = dict[str, Any]


def values_file(path: Path) -> dict[str, Any]:
    """A values file as `helm -f` reads it."""
    return helm.values_from_yaml(path.read_text())


def render(values: dict[str, Any] | None = None) -> list[Manifest]:
    """Every manifest the chart renders with these values (over the defaults)."""
    with helm.Chart.load(CHART) as chart:
        files = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return [doc for path, text in sorted(files.items()) if path.endswith(".yaml")
            for doc in yaml.safe_load_all(text) if doc]


def notes(values: dict[str, Any] | None = None) -> str:
    with helm.Chart.load(CHART) as chart:
        files = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return files["orchestrator/templates/NOTES.txt"]


def find(manifests: list[Manifest], kind: str, suffix: str) -> Manifest:
    matches = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"].endswith(suffix)]
    assert len(matches) == 1, f"{kind} *{suffix}: {[m['metadata']['name'] for m in matches]}"
    return matches[0]


def workloads(manifests: list[Manifest]) -> Iterator[Manifest]:
    return (m for m in manifests if m["kind"] in ("Deployment", "StatefulSet"))


def containers(workload: Manifest, init: bool = True) -> list[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    return [*(spec.get("initContainers", []) if init else []), *spec["containers"]]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def service_container(manifests: list[Manifest], component: str) -> dict[str, Any]:
    return containers(find(manifests, "Deployment", f"-{component}"), init=False)[0]


@pytest.fixture(scope="module", autouse=True)
def _schemas_read_once() -> Iterator[None]:
    """kubernetes-validate reads its (large) schema files on every call: once is enough here."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kubernetes_validate.utils, "schema_contents",
                      functools.lru_cache(maxsize=None)(kubernetes_validate.utils.schema_contents))
        yield


@pytest.fixture(scope="module")
def default() -> list[Manifest]:
    return render()


@pytest.fixture(scope="module")
def production() -> list[Manifest]:
    return render(values_file(PRODUCTION))


# ---- lint and Kubernetes schemas -------------------------------------------------


@pytest.mark.parametrize("values_path", [None, PRODUCTION], ids=["default", "production"])
def test_lint_strict(values_path: Path | None) -> None:
    values = values_file(values_path) if values_path else None
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSIONS[0]}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # 2 warning, 3 error
    assert report["total_charts_linted"] == 1
    assert not problems and not report["errors"], report


@pytest.mark.parametrize("values", [
    None,
    PRODUCTION,
    {"jaeger": {"enabled": True}, "nats": {"replicas": 1, "jetstream": {"replicas": 1}}},
    {"nats": {"enabled": False, "external": {"existingSecret": "nats-url"}}, "monitor": {"enabled": False},
     "metrics": {"enabled": False}, "serviceAccount": {"create": False}},
], ids=["default", "production", "jaeger-single-nats", "external-nats"])
def test_every_manifest_is_valid_kubernetes(values: Path | dict[str, Any] | None) -> None:
    manifests = render(values_file(values) if isinstance(values, Path) else values)
    assert manifests
    for version in KUBE_VERSIONS:
        for manifest in manifests:
            where = f"{manifest['kind']}/{manifest['metadata']['name']} on Kubernetes {version}"
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                pytest.fail(f"{where}: {'.'.join(map(str, err.path))}: {err.message}")
            except kubernetes_validate.SchemaNotFoundError as err:
                pytest.fail(f"{where}: {err.message}")


@pytest.mark.parametrize("values_path", [None, PRODUCTION], ids=["default", "production"])
def test_every_container_has_resources_and_runs_as_non_root(values_path: Path | None) -> None:
    manifests = render(values_file(values_path) if values_path else None)
    for workload in workloads(manifests):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, workload["metadata"]["name"]
        assert pod["automountServiceAccountToken"] is False
        for container in containers(workload):
            name = f"{workload['metadata']['name']}/{container['name']}"
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][part]), name
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, name


# ---- what the defaults deploy ------------------------------------------------------


def test_default_replicas(default: list[Manifest]) -> None:
    assert find(default, "Deployment", "-dispatcher")["spec"]["replicas"] == 2
    assert find(default, "Deployment", "-gateway")["spec"]["replicas"] == 1
    assert find(default, "Deployment", "-controller-sim")["spec"]["replicas"] == 1
    assert find(default, "Deployment", "-monitor")["spec"]["replicas"] == 1
    assert not [m for m in default if "jaeger" in m["metadata"]["name"]]


def test_nats_is_a_replicated_jetstream_cluster(default: list[Manifest]) -> None:
    nats = find(default, "StatefulSet", "-nats")
    assert nats["spec"]["replicas"] == 3
    assert nats["spec"]["podManagementPolicy"] == "Parallel"
    claim = nats["spec"]["volumeClaimTemplates"][0]
    assert claim["metadata"]["name"] == "data" and claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    server = containers(nats)[0]
    assert {"name": "data", "mountPath": "/data"} in server["volumeMounts"]
    config = find(default, "ConfigMap", "-nats-config")["data"]["nats.conf"]
    assert re.search(r"jetstream \{\s*store_dir: /data", config)
    assert "password: $NATS_PASSWORD" in config  # from the Secret, never written into the ConfigMap
    routes = re.search(r"routes: \[(.*?)\]", config, re.S).group(1).split()
    assert routes == ["$NATS_ROUTE_0", "$NATS_ROUTE_1", "$NATS_ROUTE_2"]
    env = env_of(server)
    headless = find(default, "Service", "-nats-headless")
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    for i in range(3):
        url = env[f"NATS_ROUTE_{i}"]["value"]
        assert url == (f"nats://$(NATS_USER):$(NATS_PASSWORD)@{nats['metadata']['name']}-{i}."
                       f"{headless['metadata']['name']}.{NAMESPACE}.svc.cluster.local:6222")
    assert server["livenessProbe"]["httpGet"]["path"] == "/healthz?js-enabled-only=true"
    assert find(default, "PodDisruptionBudget", "-nats")["spec"]["maxUnavailable"] == 1
    # The suite's streams and buckets are created with three replicas before the services start.
    for component in ("gateway", "dispatcher", "monitor"):
        init = find(default, "Deployment", f"-{component}")["spec"]["template"]["spec"]["initContainers"][0]
        assert env_of(init)["ORCH_JETSTREAM_REPLICAS"]["value"] == "3"


def test_nats_credentials_come_from_one_secret_and_each_service_has_its_own_user(default: list[Manifest]) -> None:
    secret = find(default, "Secret", "-nats-auth")
    users = ("gateway", "dispatcher", "monitor", "bus")
    assert set(secret["data"]) == {"user", "password", *(f"{u}-password" for u in users)}
    server = env_of(containers(find(default, "StatefulSet", "-nats"))[0])
    for component in ("gateway", "dispatcher", "monitor"):
        env = env_of(service_container(default, component))
        assert env["ORCH_NATS_URL"]["value"] == f"nats://$(NATS_USER):$(NATS_PASSWORD)@{RELEASE}-orchestrator-nats:4222"
        assert env["NATS_USER"]["value"] == component
        ref = env["NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": secret["metadata"]["name"], "key": f"{component}-password"}
        assert server[f"NATS_PASSWORD_{component.upper()}"]["valueFrom"]["secretKeyRef"] == ref
    # The server knows every user, each with the permissions natsusers defines.
    config = find(default, "ConfigMap", "-nats-config")["data"]["nats.conf"]
    for user in users:
        assert f'{{user: "{user}", password: $NATS_PASSWORD_{user.upper()}, permissions: {{' in config
    assert '"orch.requests.>"' in config
    assert "zzprefixzz" not in config.lower()
    # Controllers talk to the dispatcher, not to NATS.
    assert "ORCH_NATS_URL" not in env_of(service_container(default, "controller-sim"))


def test_api_token_and_controller_credential_come_from_secrets(default: list[Manifest]) -> None:
    token = find(default, "Secret", "-api-token")
    assert len(token["data"]["token"]) >= 48
    gateway = find(default, "Deployment", "-gateway")
    volumes = {v["name"]: v for v in gateway["spec"]["template"]["spec"]["volumes"]}
    assert volumes["api-token"]["secret"]["secretName"] == token["metadata"]["name"]
    args = service_container(default, "gateway")["args"]
    assert args[args.index("--token-file") + 1] == "/etc/orchestrator/api-token/token"
    secret = find(default, "Secret", "-controller-credential")
    credential = secret["metadata"]["name"]
    assert set(secret["data"]) == {"credential", "registration-key", "engine-sha256-sim", "controller-sim"}
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    # The chart issues the same credentials as orch up does.
    assert data["engine-sha256-sim"] == secret_sha256(engine_credential_for(data["credential"], "Internal"))
    assert data["controller-sim"] == issue_controller_credential(data["registration-key"], ["Internal", "sim"])
    mounted = {"dispatcher": None, "monitor": [{"key": "credential", "path": "credential"}],
               "controller-sim": [{"key": "controller-sim", "path": "credential"}]}
    for component, items in mounted.items():
        pod = find(default, "Deployment", f"-{component}")["spec"]["template"]["spec"]
        volume = {"secretName": credential, "defaultMode": 0o440, **({"items": items} if items else {})}
        assert {"name": "controller-credential", "secret": volume} in pod["volumes"], component
        args = pod["containers"][0]["args"]
        assert args[args.index("--credential-file") + 1] == "/etc/orchestrator/controller-credential/credential"
    dispatcher = service_container(default, "dispatcher")["args"]
    assert dispatcher[dispatcher.index("--registration-key-file") + 1] == "/etc/orchestrator/controller-credential/registration-key"
    sim = env_of(service_container(default, "controller-sim"))
    assert sim["ORCH_ENGINE_CREDENTIAL_SHA256"]["valueFrom"]["secretKeyRef"] == {"name": credential, "key": "engine-sha256-sim"}


def test_existing_secrets_are_used_not_generated() -> None:
    manifests = render({"gateway": {"auth": {"existingSecret": "my-token", "existingSecretKey": "api"}},
                        "controllerCredential": {"existingSecret": "my-credential"},
                        "nats": {"auth": {"existingSecret": "my-nats"}}})
    assert not [m for m in manifests if m["kind"] == "Secret"]
    gateway = find(manifests, "Deployment", "-gateway")["spec"]["template"]["spec"]
    assert {"name": "api-token", "secret": {"secretName": "my-token", "defaultMode": 0o440}} in gateway["volumes"]
    assert "/etc/orchestrator/api-token/api" in gateway["containers"][0]["args"]
    assert env_of(gateway["containers"][0])["NATS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "my-nats",
                                                                                             "key": "gateway-password"}
    assert "get secret my-token" in notes({"gateway": {"auth": {"existingSecret": "my-token"}}})


def test_probes_are_grpc_health(default: list[Manifest]) -> None:
    for component, port in (("gateway", 50051), ("dispatcher", 50052), ("controller-sim", 50060)):
        container = service_container(default, component)
        assert {"name": "grpc", "containerPort": port, "protocol": "TCP"} in container["ports"]
        for probe in ("livenessProbe", "readinessProbe"):
            assert container[probe]["grpc"] == {"port": port}, (component, probe)


def test_services_command_lines(default: list[Manifest]) -> None:
    gateway = service_container(default, "gateway")
    assert gateway["command"] == ["python", "-m", "gateway"]
    assert gateway["args"][:4] == ["--addr", "0.0.0.0:50051", "--prefix", "orch"]
    dispatcher = service_container(default, "dispatcher")
    assert dispatcher["command"] == ["python", "-m", "dispatcher"]
    assert dispatcher["args"][dispatcher["args"].index("--replica") + 1] == "$(POD_NAME)"
    sim = service_container(default, "controller-sim")
    assert sim["command"] == ["python", "-m", "controllers.sim"]
    args = sim["args"]
    assert args[args.index("--advertise") + 1] == "$(POD_IP):50060"
    assert args[args.index("--dispatcher") + 1] == f"{RELEASE}-orchestrator-dispatcher:50052"
    assert "--state-file" in args
    monitor = service_container(default, "monitor")
    assert monitor["command"] == ["python", "-m", "monitor"] and "--interval" in monitor["args"]


def test_controllers_come_from_the_list() -> None:
    manifests = render({"controllers": [
        {"name": "sim", "command": ["python", "-m", "controllers.sim"], "replicas": 3, "componentTypes": ["Internal:V1.0.0"],
         "registers": ["Internal", "sim"]},
        {"name": "vm", "command": ["vm-controller"], "args": ["--zone", "a"], "replicas": 2, "port": 7000, "registers": ["vm"],
         "componentTypes": ["server:V1.0.0", "network:V1.0.0"], "image": {"repository": "acme/vm", "tag": "2.0"}},
    ]})
    assert find(manifests, "Deployment", "-controller-sim")["spec"]["replicas"] == 3
    vm = find(manifests, "Deployment", "-controller-vm")
    assert vm["spec"]["replicas"] == 2
    assert vm["metadata"]["annotations"]["orchestrator/component-types"] == "server:V1.0.0,network:V1.0.0"
    container = containers(vm)[0]
    assert container["image"] == "acme/vm:2.0" and container["command"] == ["vm-controller"]
    assert container["args"][:2] == ["--addr", "0.0.0.0:7000"] and container["args"][-2:] == ["--zone", "a"]
    assert container["readinessProbe"]["grpc"] == {"port": 7000}


# ---- tracing -----------------------------------------------------------------------


def test_otlp_endpoint_only_when_jaeger_is_enabled(default: list[Manifest]) -> None:
    for workload in workloads(default):
        for container in containers(workload):
            assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env_of(container), workload["metadata"]["name"]
    traced = render({"jaeger": {"enabled": True}})
    jaeger = find(traced, "Service", "-jaeger")
    assert {"name": "otlp-grpc", "port": 4317, "targetPort": "otlp-grpc", "protocol": "TCP", "appProtocol": "grpc"} \
        in jaeger["spec"]["ports"]
    find(traced, "Deployment", "-jaeger")
    for component in SERVICES:
        env = env_of(service_container(traced, component))
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == f"http://{jaeger['metadata']['name']}:4317", component


def test_external_otlp_endpoint_without_jaeger() -> None:
    manifests = render({"tracing": {"otlpEndpoint": "http://collector.observability:4317"}})
    assert not [m for m in manifests if "jaeger" in m["metadata"]["name"]]
    for component in SERVICES:
        env = env_of(service_container(manifests, component))
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "http://collector.observability:4317"


# ---- production values -------------------------------------------------------------


def test_production_values(production: list[Manifest]) -> None:
    assert find(production, "Deployment", "-dispatcher")["spec"]["replicas"] == 4
    assert find(production, "Deployment", "-gateway")["spec"]["replicas"] == 2
    assert find(production, "Deployment", "-controller-sim")["spec"]["replicas"] == 3
    assert find(production, "StatefulSet", "-nats")["spec"]["replicas"] == 3
    find(production, "Deployment", "-jaeger")
    gateway = find(production, "Deployment", "-gateway")["spec"]["template"]["spec"]
    assert {"name": "tls", "secret": {"secretName": "orchestrator-gateway-tls", "defaultMode": 0o440}} in gateway["volumes"]
    container = gateway["containers"][0]
    assert "--tls-cert" in container["args"]
    # Kubernetes' grpc probes cannot speak TLS: the probe runs the health check in the container.
    probe = container["readinessProbe"]["exec"]["command"]
    assert probe[:4] == ["python", "-m", "orchestration.runtime.healthcheck", "--tls"] and probe[-1] == "127.0.0.1:50051"
    assert find(production, "Service", "-gateway")["spec"]["type"] == "LoadBalancer"
    dispatcher = service_container(production, "dispatcher")
    assert dispatcher["resources"]["limits"] == {"cpu": "4", "memory": "2Gi"}


def test_notes_tell_how_to_reach_the_gateway() -> None:
    text = notes()
    assert f"port-forward service/{RELEASE}-orchestrator-gateway 50051:50051" in text
    assert f"get secret {RELEASE}-orchestrator-api-token" in text and "ORCH_TOKEN" in text
    assert "orch --server 127.0.0.1:50051" in text


# ---- values the chart refuses --------------------------------------------------------


@pytest.mark.parametrize(("bad_values", "field"), [
    ("dispatcher:\n  replicas: two\n", "/dispatcher/replicas"),
    ("dispatcher:\n  replicas: -1\n", "/dispatcher/replicas"),
    ("controllers:\n  - name: sim\n    command: [python, -m, controllers.sim]\n    replicas: -3\n", "/controllers/0/replicas"),
    ("controllers:\n  - command: [python, -m, controllers.sim]\n    replicas: 1\n    registers: [Internal]\n", "missing property 'name'"),
    ("controllers:\n  - name: sim\n    command: [python, -m, controllers.sim]\n    replicas: 1\n", "missing property 'registers'"),
    ("controllers:\n  - name: Not_A_DNS_Label\n    command: [x]\n    replicas: 1\n", "/controllers/0/name"),
    ("nats:\n  replicas: 2\n", "/nats/replicas"),
    ("gateway:\n  resources:\n    limits: null\n", "/gateway/resources"),
    ("prefix: 'has.dot'\n", "/prefix"),
    ("dispatchers:\n  replicas: 2\n", "'dispatchers' not allowed"),
    ("nats:\n  auth:\n    user: orch\n    busClients: [ERP.1]\n", "/nats/auth/busClients/0"),
], ids=["replicas-string", "replicas-negative", "controller-replicas-negative", "controller-without-name",
        "controller-without-registers",
        "controller-bad-name", "nats-even", "missing-limits", "prefix", "unknown-key", "bus-client-name"])
def test_schema_rejects_bad_values(tmp_path: Path, bad_values: str, field: str) -> None:
    path = tmp_path / "bad-values.yaml"
    path.write_text(bad_values)
    values = values_file(path)
    with helm.Chart.load(CHART) as chart:
        with pytest.raises(helm.HelmValuesError) as schema_error:
            chart.validate_schema(values)  # over the defaults, as an install does
        with pytest.raises(helm.HelmValuesError) as render_error:
            chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert field in str(schema_error.value) and field in str(render_error.value)
    report = helm.lint(CHART, values, strict=True)
    assert any(field in error for error in report["errors"]), report


@pytest.mark.parametrize(("values", "message"), [
    ({"nats": {"replicas": 1}}, "nats.jetstream.replicas (3) must not exceed nats.replicas (1)"),
    ({"controllers": [{"name": "a", "command": ["x"], "replicas": 1, "registers": ["a"]},
                      {"name": "a", "command": ["y"], "replicas": 1, "registers": ["a"]}]},
     'the name "a" is used twice'),
    ({"gateway": {"tls": {"enabled": True}}}, "gateway.tls.secretName"),
    ({"nats": {"enabled": False}}, "nats.external.existingSecret"),
], ids=["jetstream-replicas", "duplicate-controller", "tls-without-secret", "external-nats-without-url"])
def test_inconsistent_values_fail_rendering(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render(values)


# ---- the image's health check and the JetStream init script ---------------------------


async def test_healthcheck_exits_0_only_when_serving() -> None:
    server = Server("127.0.0.1:0", "token", ["orchestration.v1.Test"])
    await server.start()
    await server.set_serving(False)
    address = f"127.0.0.1:{server.port}"

    async def run(*args: str) -> int:  # the check blocks: off the loop that serves
        return await asyncio.to_thread(healthcheck.main, list(args))

    try:
        assert await asyncio.to_thread(healthcheck.check, address) == "NOT_SERVING"
        assert await run(address) == 1
        await server.set_serving(True)
        assert await run(address) == 0
        assert await run(address, "--service", "orchestration.v1.Test") == 0
        assert await run(address, "--service", "unknown") == 1
    finally:
        await server.stop(0)
    assert await run(address, "--timeout", "1") == 1
    assert await run("none") == 0


def test_jetstream_init_script_prepares_the_streams(nats_server: Any, subjects: Subjects) -> None:
    script = find(render(), "ConfigMap", "-scripts")["data"]["jetstream_init.py"]
    env = {**os.environ, "ORCH_NATS_URL": nats_server.url, "ORCH_PREFIX": subjects.prefix,
           "ORCH_JETSTREAM_REPLICAS": "1"}  # one server here: the chart asks for 3 on its cluster
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "streams and buckets ready" in done.stdout


def test_dockerfile_matches_the_chart() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", dockerfile, re.M)
    assert len(re.findall(r"^FROM ", dockerfile, re.M)) == 2  # builder + runtime
    uid = int(re.search(r"^USER (\d+):\d+$", dockerfile, re.M).group(1))
    assert uid == values_file(CHART / "values.yaml")["podSecurityContext"]["runAsUser"]
    assert re.search(r"^HEALTHCHECK .*\n\s+CMD \[\"python\", \"-m\", \"orchestration\.runtime\.healthcheck\"\]", dockerfile, re.M)
    # The same code generation as `make generate`: the SDK's build compiles its contracts, protoc the engine's own.
    assert "grpc_tools.protoc -Iproto --python_out=services --pyi_out=services --grpc_python_out=services" in dockerfile
    assert "pip install --no-deps ./sdk" in dockerfile
    sdk_protos = {"model.proto", "controller.proto", "dispatcher.proto"}
    engine_protos = {p.name for p in (ROOT / "proto" / "orchestration" / "v1").glob("*.proto")} - sdk_protos
    assert set(re.findall(r"proto/orchestration/v1/(\w+\.proto)", dockerfile)) == engine_protos
    assert "SDK_PROTOS := $(addprefix proto/orchestration/v1/,model.proto controller.proto dispatcher.proto)" in (ROOT / "Makefile").read_text()


def test_the_charts_nats_permissions_are_the_engines() -> None:
    """files/nats-permissions.json is natsusers' output (regenerate it with
    `cd services && python -m orchestration.store.natsusers > ../helm/orchestrator/files/nats-permissions.json`)."""
    assert (CHART / "files" / "nats-permissions.json").read_text() == chart_permissions()


def test_the_charts_nats_config_is_accepted_by_nats_server(default: list[Manifest], tmp_path: Path) -> None:
    config = find(default, "ConfigMap", "-nats-config")["data"]["nats.conf"]
    config = config.replace("/var/run/nats/nats.pid", str(tmp_path / "pid")).replace("store_dir: /data", f"store_dir: {tmp_path}")
    (tmp_path / "nats.conf").write_text(config)
    env = {**os.environ, "POD_NAME": "n-0", "NATS_USER": "orch", "NATS_PASSWORD": "p",
           **{f"NATS_PASSWORD_{u}": "x" for u in ("GATEWAY", "DISPATCHER", "MONITOR", "BUS")},
           **{f"NATS_ROUTE_{i}": f"nats://orch:p@127.0.0.1:{6222 + i}" for i in range(3)}}
    checked = subprocess.run([find_nats_server(), "-c", str(tmp_path / "nats.conf"), "-t"], env=env,
                             capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0 and "is valid" in checked.stderr + checked.stdout, checked.stderr


def test_the_console_is_a_port_of_the_gateway_with_a_sticky_service_and_an_optional_ingress(default: list[Manifest]) -> None:
    gateway = service_container(default, "gateway")
    assert gateway["args"][gateway["args"].index("--console-addr") + 1] == "0.0.0.0:8470"
    assert {"name": "console", "containerPort": 8470, "protocol": "TCP"} in gateway["ports"]
    console = find(default, "Service", "-console")
    assert console["spec"]["sessionAffinity"] == "ClientIP" and console["spec"]["ports"][0]["targetPort"] == "console"
    assert not [m for m in default if m["kind"] == "Ingress"]
    manifests = render({"jaeger": {"enabled": True}, "gateway": {"console": {"enabled": True, "port": 8470, "service": {"port": 80},
                        "ingress": {"enabled": True, "host": "orch.example.com", "className": "nginx", "tlsSecretName": "orch-tls"}}}})
    ingress = find(manifests, "Ingress", "-console")
    assert ingress["spec"]["rules"][0]["host"] == "orch.example.com"
    assert ingress["spec"]["tls"] == [{"hosts": ["orch.example.com"], "secretName": "orch-tls"}]
    args = service_container(manifests, "gateway")["args"]
    assert args[args.index("--jaeger-url") + 1] == f"http://{RELEASE}-orchestrator-jaeger:16686"
    assert "--console-secure-cookie" in args  # TLS ends at the ingress: the cookie is Secure anyway
    assert "--console-secure-cookie" not in service_container(default, "gateway")["args"]
    off = render({"gateway": {"console": {"enabled": False, "port": 8470, "service": {"port": 8470},
                                          "ingress": {"enabled": False, "host": "x"}}}})
    assert "--console-addr" not in service_container(off, "gateway")["args"]
    assert not [m for m in off if m["kind"] == "Service" and m["metadata"]["name"].endswith("-console")]


def test_named_bus_clients_get_a_user_a_password_and_a_private_inbox_each(tmp_path: Path) -> None:
    manifests = render({"nats": {"auth": {"busClients": ["erp", "billing-2"]}}})
    secret = find(manifests, "Secret", "-nats-auth")
    assert {"bus-erp-password", "bus-billing-2-password", "bus-password"} <= set(secret["data"])
    server = env_of(containers(find(manifests, "StatefulSet", "-nats"))[0])
    assert server["NATS_PASSWORD_BUS_BILLING_2"]["valueFrom"]["secretKeyRef"]["key"] == "bus-billing-2-password"
    config = find(manifests, "ConfigMap", "-nats-config")["data"]["nats.conf"]
    # The shared bus user's rights, with each client's own inbox and no other.
    entry = next(line for line in config.splitlines() if '"bus-erp"' in line)
    assert "$NATS_PASSWORD_BUS_ERP" in entry and '"_INBOX_bus-erp.>"' in entry
    assert '"orch.requests.>"' in entry and "$JS" not in entry and "_INBOX_bus-billing-2" not in entry
    assert "zzclientzz" not in config
    config = config.replace("/var/run/nats/nats.pid", str(tmp_path / "pid")).replace("store_dir: /data", f"store_dir: {tmp_path}")
    (tmp_path / "nats.conf").write_text(config)
    users = ("GATEWAY", "DISPATCHER", "MONITOR", "BUS", "BUS_ERP", "BUS_BILLING_2")
    env = {**os.environ, "POD_NAME": "n-0", "NATS_USER": "orch", "NATS_PASSWORD": "p",
           **{f"NATS_PASSWORD_{u}": "x" for u in users},
           **{f"NATS_ROUTE_{i}": f"nats://orch:p@127.0.0.1:{6222 + i}" for i in range(3)}}
    checked = subprocess.run([find_nats_server(), "-c", str(tmp_path / "nats.conf"), "-t"], env=env,
                             capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0 and "is valid" in checked.stderr + checked.stdout, checked.stderr

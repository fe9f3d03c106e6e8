"""The deploy artefacts (deploy/Dockerfile, docker-compose.yml, k8s/) agree with the code.

Every manifest and the compose file are parsed; every environment variable they set must be a
setting the bridge reads (introspected from the pydantic settings classes), probes must hit the
health endpoints on the container's port, the Discord StatefulSet's shard count must match its
replicas, every secretKeyRef must name a key of the Secret template, the image must run as a
non-root user, and shutdown windows must be longer than BRIDGE_SHUTDOWN_GRACE.

The Docker daemon, Compose and a cluster are not needed: what can be checked statically is, and
the image's HEALTHCHECK command is run for real against a local server. `kubectl kustomize` is
used when kubectl is installed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from adapters.discord.settings import DiscordSettings, load_discord_settings
from adapters.slack.settings import SlackSettings
from bridge.config import ConfigError, Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "docker-compose.yml"
SETTINGS_CLASSES = (Settings, SlackSettings, DiscordSettings)

# Variables the compose file itself substitutes (not bridge settings).
COMPOSE_ONLY = {"POSTGRES_PASSWORD"}

# Settings that hold secrets (besides the SecretStr fields): the database URL carries a password.
EXTRA_SECRET_SETTINGS = {"BRIDGE_DATABASE_URL"}

# After BRIDGE_SHUTDOWN_GRACE, the bridge may still spend about 12 s marking unfinished replies
# interrupted (relay: FINAL_FLUSH_TIMEOUT + 1 waiting, then one platform call); measured with
# the real image: SIGTERM to exit took 41.6 s with the default grace of 30 s.
SHUTDOWN_OVERHEAD = 15.0

PROBE_PATHS = {"livenessProbe": "/healthz", "startupProbe": "/healthz", "readinessProbe": "/readyz"}
POD_INDEX_FIELD = "metadata.labels['apps.kubernetes.io/pod-index']"


# -- what the code reads ---------------------------------------------------------------------


def _env_name(name: str, field: Any) -> str:
    alias = field.validation_alias or field.alias
    return (alias if isinstance(alias, str) else name).upper()


def setting_names() -> set[str]:
    return {_env_name(n, f) for cls in SETTINGS_CLASSES for n, f in cls.model_fields.items()}


def secret_setting_names() -> set[str]:
    names = {
        _env_name(n, f)
        for cls in SETTINGS_CLASSES
        for n, f in cls.model_fields.items()
        if "SecretStr" in repr(f.annotation) or f.annotation is SecretStr
    }
    return names | EXTRA_SECRET_SETTINGS


def default_of(env_name: str) -> Any:
    for cls in SETTINGS_CLASSES:
        for name, field in cls.model_fields.items():
            if _env_name(name, field) == env_name:
                return field.default
    raise KeyError(env_name)


ALLOWED = setting_names()


# -- reading the artefacts -------------------------------------------------------------------


def k8s_files() -> list[Path]:
    return sorted(K8S.glob("*.yaml"))


def k8s_docs() -> list[tuple[Path, dict[str, Any]]]:
    docs = []
    for path in k8s_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path, doc))
    return docs


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in k8s_docs() if doc.get("kind") == kind]


def one(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in of_kind(kind) if d["metadata"].get("name") == name]
    assert len(found) == 1, f"expected one {kind} {name!r} in deploy/k8s, found {len(found)}"
    return found[0]


def is_bridge_image(image: str) -> bool:
    repository = image.rsplit("@", 1)[0]
    last = repository.rsplit("/", 1)[-1]
    return last.split(":", 1)[0] == "agent-bridge"


def workloads() -> list[dict[str, Any]]:
    return [d for _, d in k8s_docs() if d.get("kind") in {"Deployment", "StatefulSet", "Job"}]


def bridge_containers() -> Iterator[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """(workload, pod spec, container) for every container running the bridge image."""
    for doc in workloads():
        pod = doc["spec"]["template"]["spec"]
        for container in pod.get("initContainers", []) + pod["containers"]:
            if is_bridge_image(container["image"]):
                yield doc, pod, container


def long_running_bridges() -> list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    return [c for c in bridge_containers() if c[0]["kind"] in {"Deployment", "StatefulSet"}]


def container_env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every variable a container gets: explicit `env` entries and ConfigMap `envFrom` keys."""
    env: dict[str, dict[str, Any]] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            cm = one("ConfigMap", source["configMapRef"]["name"])
            for key, value in (cm.get("data") or {}).items():
                env[key] = {"name": key, "value": value, "from": f"ConfigMap {cm['metadata']['name']}"}
        if "secretRef" in source:
            secret = one("Secret", source["secretRef"]["name"])
            for key in secret_keys(secret):
                env[key] = {"name": key, "from": f"Secret {secret['metadata']['name']}"}
    for entry in container.get("env", []):
        env[entry["name"]] = entry
    return env


def secret_keys(secret: dict[str, Any]) -> set[str]:
    return set(secret.get("stringData") or {}) | set(secret.get("data") or {})


def effective(container: dict[str, Any], name: str) -> str:
    entry = container_env(container).get(name)
    if entry is not None and "value" in entry:
        return str(entry["value"])
    return str(default_of(name))


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def compose_bridge_services() -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in compose()["services"].items()
        if is_bridge_image(svc.get("image", "")) or "build" in svc
    }


def compose_environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def env_file_names(path: Path) -> set[str]:
    """Variable names in an env file, including commented-out `# NAME=value` examples."""
    names = set()
    for line in path.read_text().splitlines():
        m = re.match(r"^\s*#?\s*([A-Z][A-Z0-9_]*)=", line)
        if m:
            names.add(m.group(1))
    return names


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    out = []
    for line in logical:
        instruction, _, args = line.partition(" ")
        out.append((instruction.upper(), args.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (ins, _) in enumerate(instructions) if ins == "FROM")
    return instructions[last_from:]


def dockerfile_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins, args in stage:
        if ins == "ENV":
            for token in shlex.split(args):
                key, _, value = token.partition("=")
                env[key] = value
    return env


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def duration_seconds(value: str | int) -> float:
    if isinstance(value, int | float) or str(value).replace(".", "", 1).isdigit():
        return float(value)  # a bare number is seconds (systemd, Kubernetes)
    total = 0.0
    for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", value):
        total += float(amount) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}[unit]
    return total


def shutdown_grace_for(container: dict[str, Any]) -> float:
    return float(effective(container, "BRIDGE_SHUTDOWN_GRACE"))


# -- the manifests -----------------------------------------------------------------------------


def test_every_manifest_parses_into_kubernetes_objects():
    docs = k8s_docs()
    assert {p.name for p in k8s_files()} >= {
        "kustomization.yaml",
        "secret.example.yaml",
        "configmap.yaml",
        "slack-deployment.yaml",
        "discord-statefulset.yaml",
    }
    for path, doc in docs:
        assert doc.get("apiVersion") and doc.get("kind"), f"{path.name}: object without apiVersion/kind"
        if doc["kind"] != "Kustomization":
            meta = doc.get("metadata") or {}
            assert meta.get("name") or meta.get("generateName"), f"{path.name}: {doc['kind']} without a name"
    kinds = {doc["kind"] for _, doc in docs}
    assert {"Secret", "ConfigMap", "Deployment", "Service", "StatefulSet"} <= kinds


def test_kustomization_lists_existing_files_and_never_the_secret_template():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    resources = kustomization["resources"]
    for resource in resources:
        assert (K8S / resource).is_file(), f"kustomization.yaml lists missing {resource}"
    for resource in resources:
        for doc in yaml.safe_load_all((K8S / resource).read_text()):
            # `kubectl apply -k` must never overwrite the real Secret with placeholders.
            assert doc is None or doc.get("kind") != "Secret", f"{resource} puts a Secret into kustomization"
    assert {"slack-deployment.yaml", "discord-statefulset.yaml", "configmap.yaml"} <= set(resources)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds_the_manifests():
    result = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    built = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert {d["kind"] for d in built} >= {"Deployment", "StatefulSet", "Service", "ConfigMap"}
    assert all(d["metadata"].get("namespace") == "agent-bridge" for d in built if d["kind"] != "Namespace")


def test_every_variable_the_manifests_set_is_a_bridge_setting():
    containers = list(bridge_containers())
    assert containers, "no container runs the agent-bridge image"
    for workload, _, container in containers:
        for name, entry in container_env(container).items():
            where = entry.get("from", f"{workload['kind']} {workload['metadata'].get('name')}")
            assert name in ALLOWED, f"{where} sets {name}, which no settings class reads"
    for cm in of_kind("ConfigMap"):
        for key in cm.get("data") or {}:
            assert key in ALLOWED, f"ConfigMap {cm['metadata']['name']} sets {key}, which no settings class reads"
    bridge_secret = one("Secret", "agent-bridge")
    for key in secret_keys(bridge_secret):
        assert key in ALLOWED, f"Secret agent-bridge holds {key}, which no settings class reads"


def test_secrets_come_from_the_secret_never_from_plain_values_or_the_configmap():
    secret_names = secret_setting_names()
    assert {"AGENT_API_KEY", "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "DISCORD_BOT_TOKEN"} <= secret_names
    for cm in of_kind("ConfigMap"):
        leaked = secret_names & set(cm.get("data") or {})
        assert not leaked, f"ConfigMap {cm['metadata']['name']} holds secrets {sorted(leaked)}"
    for workload, _, container in bridge_containers():
        for entry in container.get("env", []):
            if entry["name"] in secret_names:
                assert "secretKeyRef" in (entry.get("valueFrom") or {}), (
                    f"{workload['metadata'].get('name')}: {entry['name']} is not read from a Secret"
                )


def test_every_secret_key_ref_names_a_key_of_a_secret_template():
    secrets = {s["metadata"]["name"]: s for s in of_kind("Secret")}
    refs = 0
    for _, doc in k8s_docs():
        if doc.get("kind") not in {"Deployment", "StatefulSet", "Job"}:
            continue
        pod = doc["spec"]["template"]["spec"]
        for container in pod.get("initContainers", []) + pod["containers"]:
            for entry in container.get("env", []):
                ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
                if ref is None:
                    continue
                refs += 1
                assert ref["name"] in secrets, f"{entry['name']}: no Secret template named {ref['name']!r}"
                assert ref["key"] in secret_keys(secrets[ref["name"]]), (
                    f"{entry['name']}: Secret {ref['name']!r} has no key {ref['key']!r}"
                )
    assert refs >= 5


def test_secret_templates_hold_only_placeholders():
    for secret in of_kind("Secret"):
        values = {**(secret.get("stringData") or {}), **(secret.get("data") or {})}
        assert values
        for key, value in values.items():
            assert "REPLACE_ME" in str(value), f"Secret {secret['metadata']['name']}: {key} is not a placeholder"


def test_probes_hit_the_health_endpoints_on_the_container_port():
    checked = 0
    for workload, _, container in long_running_bridges():
        name = workload["metadata"]["name"]
        port = int(effective(container, "BRIDGE_HTTP_PORT"))
        ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
        assert port in ports.values(), f"{name}: BRIDGE_HTTP_PORT {port} is not a containerPort"
        for probe_name, path in PROBE_PATHS.items():
            probe = container.get(probe_name)
            if probe is None:
                assert probe_name == "startupProbe", f"{name}: no {probe_name}"
                continue
            get = probe["httpGet"]
            assert get["path"] == path, f"{name}: {probe_name} asks {get['path']}, not {path}"
            target = get["port"]
            resolved = ports.get(target) if isinstance(target, str) else target
            assert resolved == port, f"{name}: {probe_name} probes port {target!r}, the bridge listens on {port}"
            checked += 1
    assert checked >= 4


def test_slack_http_replicas_behind_a_service():
    deployment = one("Deployment", "agent-bridge-slack")
    assert deployment["spec"]["replicas"] >= 2
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["args"][:1] == ["run"] and "slack" in container["args"]
    env = container_env(container)
    assert {"SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "BRIDGE_DATABASE_URL", "AGENT_API_KEY"} <= set(env)
    assert "SLACK_APP_TOKEN" not in env, "replicas behind a Service need HTTP mode, not Socket Mode"
    resources = container["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"] and resources["limits"]["memory"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = one("Service", "agent-bridge-slack")
    assert service["spec"]["selector"].items() <= labels.items(), "the Service does not select the Slack pods"
    ports = {p.get("name"): p["containerPort"] for p in container["ports"]}
    for port in service["spec"]["ports"]:
        target = port["targetPort"]
        assert (ports.get(target) if isinstance(target, str) else target) in ports.values()


def test_discord_statefulset_runs_one_shard_per_pod():
    sts = one("StatefulSet", "agent-bridge-discord")
    replicas = sts["spec"]["replicas"]
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:1] == ["run"] and "discord" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    assert int(env["DISCORD_SHARD_COUNT"]["value"]) == replicas, "DISCORD_SHARD_COUNT must equal replicas"
    assert env["DISCORD_SHARD_IDS"]["valueFrom"]["fieldRef"]["fieldPath"] == POD_INDEX_FIELD
    headless = one("Service", sts["spec"]["serviceName"])
    assert headless["spec"].get("clusterIP") == "None"
    assert headless["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    # What each pod's settings become: ordinals 0..replicas-1 are valid single shards.
    for ordinal in range(replicas):
        settings = load_discord_settings(
            discord_shard_count=env["DISCORD_SHARD_COUNT"]["value"], discord_shard_ids=str(ordinal)
        )
        assert settings.sharded and settings.shard_ids == (ordinal,)
    with pytest.raises(ConfigError):
        load_discord_settings(discord_shard_count=str(replicas), discord_shard_ids=str(replicas))


def test_pods_run_as_the_images_non_root_user():
    uid = image_uid()
    for workload, pod, container in bridge_containers():
        name = workload["metadata"].get("name") or workload["metadata"]["generateName"]
        ctx = {**(pod.get("securityContext") or {}), **(container.get("securityContext") or {})}
        assert ctx.get("runAsNonRoot") is True, f"{name}: runAsNonRoot is not set"
        assert ctx.get("runAsUser", uid) == uid != 0, f"{name}: runs as uid {ctx.get('runAsUser')}"
        container_ctx = container.get("securityContext") or {}
        assert container_ctx.get("allowPrivilegeEscalation") is False, f"{name}: privilege escalation allowed"
        assert "ALL" in (container_ctx.get("capabilities") or {}).get("drop", []), f"{name}: capabilities kept"


def test_termination_grace_outlasts_the_shutdown_grace():
    for workload, pod, container in long_running_bridges():
        name = workload["metadata"]["name"]
        grace = shutdown_grace_for(container)
        pre_stop = ((container.get("lifecycle") or {}).get("preStop") or {}).get("exec", {}).get("command", [])
        pause = float(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0.0
        window = pod.get("terminationGracePeriodSeconds", 30)
        assert window >= grace + pause + SHUTDOWN_OVERHEAD, (
            f"{name}: terminationGracePeriodSeconds {window} < BRIDGE_SHUTDOWN_GRACE {grace}"
            f" + preStop {pause} + {SHUTDOWN_OVERHEAD} s to mark unfinished replies interrupted"
        )


# -- the image ---------------------------------------------------------------------------------


def image_uid() -> int:
    users = [args for ins, args in final_stage() if ins == "USER"]
    assert users, "the runtime stage sets no USER: it would run as root"
    user = users[-1].split(":", 1)[0]
    assert user.isdigit(), f"USER {user}: use a numeric uid so runAsNonRoot can verify it"
    return int(user)


def test_dockerfile_is_multi_stage_python_311_non_root():
    instructions = dockerfile_instructions()
    stages = [args for ins, args in instructions if ins == "FROM"]
    assert len(stages) >= 2, "the Dockerfile is not multi-stage"
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for ins, a in instructions if ins == "ARG" and "=" in a}
    bases = [re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), s.split()[0]) for s in stages]
    assert all(re.match(r"python:3\.11[.-]", b) for b in bases), bases
    final = final_stage()
    assert any(ins == "COPY" and a.startswith("--from=") for ins, a in final), "runtime copies nothing from a builder"
    assert image_uid() != 0
    assert exec_form(next(a for i, a in final if i == "ENTRYPOINT")) == ["agent-bridge"]
    assert exec_form(next(a for i, a in final if i == "CMD")) == ["run"]


def test_dockerfile_healthcheck_and_expose_match_the_http_port():
    final = final_stage()
    exposed = [int(p.split("/")[0]) for ins, a in final if ins == "EXPOSE" for p in a.split()]
    default_port = int(default_of("BRIDGE_HTTP_PORT"))
    assert exposed == [default_port]
    check = healthcheck_command()
    assert check[0] in {"python", "python3"}, "slim images have no curl: probe with Python's stdlib"
    assert "/healthz" in check[-1]
    assert f"'{default_port}'" in check[-1] or f":{default_port}/" in check[-1]
    env = dockerfile_env(final)
    for name in env:
        if name.startswith(("AGENT_", "BRIDGE_", "SLACK_", "DISCORD_")):
            assert name in ALLOWED, f"the Dockerfile sets {name}, which no settings class reads"
    assert not (secret_setting_names() - EXTRA_SECRET_SETTINGS) & set(env), "a secret is baked into the image"


def healthcheck_command() -> list[str]:
    args = next(a for ins, a in final_stage() if ins == "HEALTHCHECK")
    assert " CMD " in f" {args} "
    return exec_form(args.split("CMD", 1)[1].strip())


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _run_healthcheck(port: int) -> int:
    command = healthcheck_command()
    env = {**os.environ, "BRIDGE_HTTP_PORT": str(port)}
    return subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, timeout=30).returncode


def test_dockerfile_healthcheck_command_passes_only_on_a_healthy_answer():
    for status, healthy in ((200, True), (503, False)):
        handler = type("Handler", (_Health,), {"status": status})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            assert (_run_healthcheck(server.server_address[1]) == 0) is healthy, status
        finally:
            server.shutdown()
            server.server_close()
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    assert _run_healthcheck(free) != 0


def test_dockerignore_keeps_secrets_and_history_out_of_the_build():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".env", ".git", ".venv"} <= ignored
    for needed in ("pyproject.toml", "README.md", "bridge", "adapters"):
        assert needed not in ignored and f"/{needed}" not in ignored
    copied = [a.split()[0] for ins, a in dockerfile_instructions() if ins == "COPY" and not a.startswith("--")]
    for source in copied:
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"


# -- compose -----------------------------------------------------------------------------------


def test_compose_runs_the_bridge_on_a_healthy_postgres():
    spec = compose()
    services = spec["services"]
    postgres = services["postgres"]
    assert postgres["healthcheck"]["test"], "Postgres has no healthcheck"
    volume = next(v for v in postgres["volumes"] if v.endswith(":/var/lib/postgresql/data"))
    assert volume.split(":")[0] in (spec.get("volumes") or {}), "Postgres data is not on a named volume"
    bridge = services["bridge"]
    assert bridge["depends_on"]["postgres"]["condition"] == "service_healthy"
    build = bridge["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    assert bridge["env_file"] in (".env", [".env"])
    published = [p.split(":") for p in bridge["ports"]]
    exposed = [int(a.split("/")[0]) for ins, a in final_stage() if ins == "EXPOSE"]
    assert [int(p[-1]) for p in published] == exposed
    url = compose_environment(bridge)["BRIDGE_DATABASE_URL"].replace("${POSTGRES_PASSWORD}", "pw")
    settings = Settings(bridge_database_url=url, _env_file=None)
    assert settings.bridge_database_url.startswith("postgresql+asyncpg://")
    assert "@postgres:" in url, "the bridge does not talk to the compose Postgres service"
    grace = float(compose_environment(bridge).get("BRIDGE_SHUTDOWN_GRACE") or default_of("BRIDGE_SHUTDOWN_GRACE"))
    assert duration_seconds(bridge["stop_grace_period"]) >= grace + SHUTDOWN_OVERHEAD


def test_every_variable_compose_and_the_env_templates_set_is_a_setting():
    services = compose_bridge_services()
    assert "bridge" in services
    for name, service in services.items():
        for key in compose_environment(service):
            assert key in ALLOWED, f"compose service {name} sets {key}, which no settings class reads"
    for template in (DEPLOY / ".env.example", DEPLOY / "agent-bridge.env.example"):
        for key in env_file_names(template):
            assert key in ALLOWED | COMPOSE_ONLY, f"{template.name} sets {key}, which no settings class reads"
    substituted = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text()))
    assert substituted <= env_file_names(DEPLOY / ".env.example"), "compose needs a variable .env.example lacks"


def test_systemd_unit_outlasts_the_shutdown_grace():
    unit = (DEPLOY / "agent-bridge.service").read_text()
    stop = re.search(r"^TimeoutStopSec=(\S+)", unit, re.M)
    assert stop, "the unit sets no TimeoutStopSec"
    assert duration_seconds(stop.group(1)) >= float(default_of("BRIDGE_SHUTDOWN_GRACE")) + SHUTDOWN_OVERHEAD


# -- docs and the allow-list -----------------------------------------------------------------


def test_deploy_doc_covers_every_artefact():
    doc = (ROOT / "docs" / "DEPLOY.md").read_text()
    for path in [DOCKERFILE, COMPOSE, DEPLOY / ".env.example", DEPLOY / "agent-bridge.service", *k8s_files()]:
        assert path.relative_to(ROOT).as_posix() in doc, f"docs/DEPLOY.md does not mention {path.relative_to(ROOT)}"
    for endpoint in ("/healthz", "/readyz", "/metrics"):
        assert endpoint in doc
    assert "docs/DEPLOY.md" in (ROOT / "README.md").read_text()

"""The Kubernetes deployment in deploy/kubernetes/, rendered and checked offline.

No cluster, no network: each kustomization is rendered by the small renderer below, which
implements exactly the kustomize features those kustomizations use (and rejects any other,
so a new feature cannot be silently ignored); when a ``kubectl`` or ``kustomize`` binary is
on the PATH, one test checks the renderer against it. Built-in kinds are validated against
the Kubernetes JSON schemas shipped with ``kubernetes-validate``; the CRDs (ServiceMonitor,
ScaledObject, TriggerAuthentication) are checked field by field. The rest checks what the
daemon needs: probes on its endpoints, a grace period longer than its shutdown, the state
volume, a configuration the daemon accepts, selectors that select, and the security context.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from streamrnn.config import MANAGED_KEYS, Settings, load_settings
from streamrnn.kafka.clients import client_config

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S = REPO_ROOT / "deploy" / "kubernetes"
BASE = K8S / "base"
OVERLAY = K8S / "overlays" / "example"
SECRET_EXAMPLE = OVERLAY / "secret.example.yaml"

#: Kubernetes versions whose schemas the built-in objects must satisfy (shipped offline by
#: kubernetes-validate): the oldest we claim to support and the newest it knows.
SCHEMA_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
#: Partition count of the example's input topic (the comment in scaledobject.yaml).
EXAMPLE_INPUT_PARTITIONS = 12
#: The daemon's shutdown waits this long for producer acknowledgements (seconds).
SHUTDOWN_ACK_WAIT_S = 20

STATE_MOUNT = "/var/lib/streamrnn"
CONFIG_PATH = "/etc/streamrnn/config.yaml"
POD_NAME = "streamrnn-0"

BUILTIN_API_GROUPS = {"v1", "apps/v1", "policy/v1"}
CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
}
CLUSTER_SCOPED = {"Namespace"}
COMMON_LABELS = {"app.kubernetes.io/name": "streamrnn", "app.kubernetes.io/part-of": "streamrnn"}

Obj = dict[str, Any]


# --- a minimal kustomize -------------------------------------------------------------------

_KUSTOMIZATION_FIELDS = {
    "apiVersion",
    "kind",
    "resources",
    "components",
    "configMapGenerator",
    "images",
    "namespace",
    "replicas",
    "patches",
}
#: Lists that a strategic-merge patch merges by ``name`` (their patchMergeKey); a patch
#: touching any other list is refused rather than rendered differently from kustomize.
_MERGE_BY_NAME = {"containers", "initContainers", "env", "volumes"}


def _load_yaml_docs(path: Path) -> list[Obj]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def _kustomize_hash(data: dict[str, str]) -> str:
    """kustomize's content-hash name suffix of a generated ConfigMap (api/hasher).

    kustomize hashes ``{"data", "kind", "name"}`` as Go's json.Marshal writes it (sorted
    keys, HTML characters escaped, UTF-8 as is); its lookup of the name yields "", so the
    name is hashed empty. SHA-256, first 10 hex digits, with 0 1 3 a e replaced.
    """
    text = json.dumps(
        {"data": data, "kind": "ConfigMap", "name": ""},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    for char, escaped in {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}.items():
        text = text.replace(char, escaped)
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


def _pod_specs(obj: Obj) -> Iterator[Obj]:
    if obj["kind"] in {"StatefulSet", "Deployment", "DaemonSet", "ReplicaSet", "Job"}:
        yield obj["spec"]["template"]["spec"]


def _containers(obj: Obj) -> Iterator[Obj]:
    for spec in _pod_specs(obj):
        yield from spec.get("initContainers", [])
        yield from spec["containers"]


def _rename_configmap_refs(objects: list[Obj], renames: dict[str, str]) -> None:
    for obj in objects:
        for spec in _pod_specs(obj):
            for volume in spec.get("volumes", []):
                if "configMap" in volume and volume["configMap"]["name"] in renames:
                    volume["configMap"]["name"] = renames[volume["configMap"]["name"]]
        for container in _containers(obj):
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("configMapKeyRef")
                if ref and ref["name"] in renames:
                    ref["name"] = renames[ref["name"]]
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef")
                if ref and ref["name"] in renames:
                    ref["name"] = renames[ref["name"]]


def _strategic_merge(target: Obj, patch: Obj) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _strategic_merge(target[key], value)
        elif isinstance(value, list) and key in target:
            if key not in _MERGE_BY_NAME:
                raise NotImplementedError(f"the test renderer cannot patch the list {key!r}")
            by_name = {item["name"]: item for item in target[key]}
            for item in value:
                if item["name"] in by_name:
                    _strategic_merge(by_name[item["name"]], item)
                else:
                    target[key].append(copy.deepcopy(item))
        else:
            target[key] = copy.deepcopy(value)


def _set_image(container: Obj, rule: dict[str, str]) -> None:
    """kustomize ``images``: a container image ``name[:tag]`` matching ``rule["name"]`` gets
    ``newName`` and ``newTag`` (digests are not used here)."""
    if set(rule) - {"name", "newName", "newTag"} or "@" in container["image"]:
        raise NotImplementedError(f"the test renderer cannot apply {rule}")
    name: str = container["image"]
    tag: str | None = None
    if ":" in name.rsplit("/", 1)[-1]:
        name, tag = name.rsplit(":", 1)
    if name == rule["name"]:
        tag = rule.get("newTag", tag)
        new_name = rule.get("newName", name)
        container["image"] = f"{new_name}:{tag}" if tag else new_name


def render(directory: Path, accumulated: list[Obj] | None = None) -> list[Obj]:
    """The objects ``kustomize build directory`` outputs (for the features used here)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text("utf-8"))
    unknown = set(kustomization) - _KUSTOMIZATION_FIELDS
    if unknown:
        raise NotImplementedError(f"{directory}: the test renderer lacks {sorted(unknown)}")
    is_component = kustomization.get("kind") == "Component"
    objects: list[Obj] = accumulated if is_component and accumulated is not None else []

    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        objects.extend(render(path) if path.is_dir() else _load_yaml_docs(path))

    renames: dict[str, str] = {}
    for generator in kustomization.get("configMapGenerator", []):
        options = generator.get("options", {})
        if set(generator) - {"name", "files", "options"} or set(options) - {"labels"}:
            raise NotImplementedError(f"{directory}: configMapGenerator {generator}")
        data = {}
        for file_entry in generator["files"]:
            key, _, rel = file_entry.rpartition("=")
            path = directory / rel
            data[key or path.name] = path.read_text(encoding="utf-8")
        name = f"{generator['name']}-{_kustomize_hash(data)}"
        renames[generator["name"]] = name
        metadata: Obj = {"name": name}
        if options.get("labels"):
            metadata["labels"] = dict(options["labels"])
        objects.append(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}
        )
    _rename_configmap_refs(objects, renames)

    for component in kustomization.get("components", []):
        render((directory / component).resolve(), objects)

    for entry in kustomization.get("patches", []):
        if set(entry) != {"path"}:
            raise NotImplementedError(f"{directory}: patch {entry}")
        (patch,) = _load_yaml_docs(directory / entry["path"])
        targets = [
            o
            for o in objects
            if o["kind"] == patch["kind"] and o["metadata"]["name"] == patch["metadata"]["name"]
        ]
        assert len(targets) == 1, f"patch {entry['path']} matches {len(targets)} objects"
        _strategic_merge(targets[0], patch)

    for rule in kustomization.get("images", []):
        for obj in objects:
            for container in _containers(obj):
                _set_image(container, rule)

    for rule in kustomization.get("replicas", []):
        for obj in objects:
            if obj["metadata"]["name"] == rule["name"] and obj["kind"] in {
                "StatefulSet",
                "Deployment",
                "ReplicaSet",
            }:
                obj["spec"]["replicas"] = rule["count"]

    if "namespace" in kustomization:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = kustomization["namespace"]
    return objects


# --- helpers -------------------------------------------------------------------------------


BUILDS = {"base": BASE, "overlay": OVERLAY}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Obj]]:
    return {label: render(path) for label, path in BUILDS.items()}


@pytest.fixture(params=sorted(BUILDS))
def build(request: pytest.FixtureRequest, rendered: dict[str, list[Obj]]) -> list[Obj]:
    return copy.deepcopy(rendered[request.param])


@pytest.fixture
def overlay(rendered: dict[str, list[Obj]]) -> list[Obj]:
    return copy.deepcopy(rendered["overlay"])


def _one(objects: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _all(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def _statefulset(objects: list[Obj]) -> Obj:
    return _one(objects, "StatefulSet", "streamrnn")


def _container(objects: list[Obj]) -> Obj:
    containers: list[Obj] = _statefulset(objects)["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["streamrnn"]
    return containers[0]


def _env(container: Obj) -> dict[str, Obj]:
    names = [e["name"] for e in container["env"]]
    assert len(names) == len(set(names)), f"duplicate env entries: {names}"
    return {e["name"]: e for e in container["env"]}


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _quantity(value: str | int) -> float:
    """A Kubernetes resource quantity as a number (bytes or cores)."""
    units = {"": 1, "m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    assert match, f"not a quantity: {value!r}"
    number, unit = match.groups()
    return float(number) * units[unit]


def _pod_env_settings(container: Obj, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The daemon's settings in a pod: the ConfigMap's config.yaml plus the container's env,
    with the pod name for fieldRefs and secret.example.yaml for secretKeyRefs."""
    (secret,) = _load_yaml_docs(SECRET_EXAMPLE)
    for name in list(os.environ):
        if name.startswith("STREAMRNN_"):
            monkeypatch.delenv(name)
    for name, entry in _env(container).items():
        if "value" in entry:
            value = entry["value"]
        elif "fieldRef" in entry["valueFrom"]:
            assert entry["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
            value = POD_NAME
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"]
            value = secret["stringData"][ref["key"]]
        monkeypatch.setenv(name, value)
    return load_settings(BASE / "config.yaml")


# --- the ConfigMap -------------------------------------------------------------------------


def test_base_config_yaml_is_a_byte_identical_copy_of_the_repository_config() -> None:
    assert (BASE / "config.yaml").read_bytes() == (REPO_ROOT / "config.yaml").read_bytes(), (
        "deploy/kubernetes/base/config.yaml differs from config.yaml: "
        "cp config.yaml deploy/kubernetes/base/config.yaml"
    )


def test_configmap_holds_config_yaml_and_is_mounted_where_the_daemon_reads_it(
    build: list[Obj],
) -> None:
    configmap = _one(build, "ConfigMap")
    assert re.fullmatch(r"streamrnn-config-[a-z0-9]{10}", configmap["metadata"]["name"])
    assert configmap["data"] == {"config.yaml": (REPO_ROOT / "config.yaml").read_text("utf-8")}

    container = _container(build)
    assert container["args"] == ["run", "--config", CONFIG_PATH]
    assert "command" not in container, "the image's entrypoint is streamrnn"
    volumes = {v["name"]: v for v in _statefulset(build)["spec"]["template"]["spec"]["volumes"]}
    mounts = [
        m
        for m in container["volumeMounts"]
        if volumes.get(m["name"], {}).get("configMap", {}).get("name")
        == configmap["metadata"]["name"]
    ]
    assert len(mounts) == 1
    assert mounts[0]["mountPath"] + "/config.yaml" == CONFIG_PATH
    assert mounts[0].get("readOnly") is True


def test_config_hash_suffix_changes_with_the_content() -> None:
    data = {"config.yaml": (BASE / "config.yaml").read_text("utf-8")}
    changed = {"config.yaml": data["config.yaml"] + "# edited\n"}
    assert _kustomize_hash(data) != _kustomize_hash(changed)


# --- schemas -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_builtin_objects_are_valid_against_the_kubernetes_schemas(
    build: list[Obj], version: str
) -> None:
    validated = set()
    for obj in build:
        if (obj["apiVersion"], obj["kind"]) in CRD_KINDS:
            continue
        assert obj["apiVersion"] in BUILTIN_API_GROUPS, f"unchecked kind {obj['kind']}"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} {path}: {exc.message}")
        validated.add(obj["kind"])
    assert {"StatefulSet", "Service", "ConfigMap", "PodDisruptionBudget"} <= validated


def test_schema_validation_rejects_a_broken_object(rendered: dict[str, list[Obj]]) -> None:
    statefulset = copy.deepcopy(_statefulset(rendered["base"]))
    statefulset["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"][
        "pathh"
    ] = "/healthz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(statefulset, SCHEMA_VERSIONS[0], strict=True)


def test_every_object_is_builtin_or_a_known_crd_and_the_base_needs_no_crd(
    rendered: dict[str, list[Obj]],
) -> None:
    for objects in rendered.values():
        for obj in objects:
            key = (obj["apiVersion"], obj["kind"])
            assert obj["apiVersion"] in BUILTIN_API_GROUPS or key in CRD_KINDS, key
    assert not [o for o in rendered["base"] if (o["apiVersion"], o["kind"]) in CRD_KINDS]


# --- the StatefulSet -----------------------------------------------------------------------


def test_probes_hit_healthz_and_readyz_on_the_http_port(build: list[Obj]) -> None:
    container = _container(build)
    (port,) = [p for p in container["ports"] if p["name"] == "http"]
    assert port["containerPort"] == 8080
    assert port.get("protocol", "TCP") == "TCP"
    expected = {
        "startupProbe": "/healthz",
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    for probe_name, path in expected.items():
        probe = container[probe_name]
        assert probe["httpGet"] == {"path": path, "port": "http"}, probe_name
    startup = container["startupProbe"]
    # Start-up (torch import, model load) takes tens of seconds: allow minutes.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    liveness = container["livenessProbe"]
    # A slow batch or checkpoint must not get the pod killed.
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 30
    assert "initialDelaySeconds" not in liveness, "the startupProbe covers start-up"


def test_grace_period_outlasts_the_daemons_shutdown(build: list[Obj]) -> None:
    pod = _statefulset(build)["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 60
    assert pod["terminationGracePeriodSeconds"] > SHUTDOWN_ACK_WAIT_S + 30


def test_resources(rendered: dict[str, list[Obj]]) -> None:
    base = _container(rendered["base"])["resources"]
    assert base == {"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}
    overlay = _container(rendered["overlay"])["resources"]
    for resources in (base, overlay):
        assert set(resources["requests"]) == {"cpu", "memory"}
        assert "cpu" not in resources["limits"], "see the comment in statefulset.yaml"
        assert _quantity(resources["limits"]["memory"]) >= _quantity(
            resources["requests"]["memory"]
        )
    for kind in ("requests", "limits"):
        for resource, value in base[kind].items():
            assert _quantity(overlay[kind][resource]) > _quantity(value), (kind, resource)


def test_security_context_meets_the_restricted_pod_security_standard(build: list[Obj]) -> None:
    pod = _statefulset(build)["spec"]["template"]["spec"]
    container = _container(build)
    pod_context, context = pod["securityContext"], container["securityContext"]
    assert pod_context["runAsNonRoot"] is True
    assert pod_context["runAsUser"] == 10001
    assert pod_context["fsGroup"] == 10001, "the state volume must be writable for the user"
    assert pod_context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == 10001
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not context.get("privileged", False)
    for host_field in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(host_field, False)
    assert pod["automountServiceAccountToken"] is False
    # Service links would put STREAMRNN_SERVICE_HOST etc. into the daemon's env namespace.
    assert pod["enableServiceLinks"] is False

    volumes = {v["name"]: v for v in pod["volumes"]}
    for volume in volumes.values():
        assert set(volume) - {"name"} <= {"configMap", "emptyDir", "secret", "projected"}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]], "a writable /tmp on a read-only root"


def test_state_lives_on_a_per_pod_persistent_volume(build: list[Obj]) -> None:
    statefulset = _statefulset(build)
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert _quantity(claim["spec"]["resources"]["requests"]["storage"]) >= 2**30
    container = _container(build)
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[STATE_MOUNT]["name"] == claim["metadata"]["name"]
    assert not mounts[STATE_MOUNT].get("readOnly", False)
    pod_volumes = {v["name"] for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    assert claim["metadata"]["name"] not in pod_volumes, "would shadow the claim template"
    env = _env(container)
    assert env["STREAMRNN_STATE__DIRECTORY"]["value"] == f"{STATE_MOUNT}/state"
    assert env["STREAMRNN_RETRAIN__REGISTRY_DIR"]["value"] == f"{STATE_MOUNT}/models"


def test_the_daemon_accepts_the_pods_configuration(
    build: list[Obj], monkeypatch: pytest.MonkeyPatch
) -> None:
    container = _container(build)
    env = _env(container)
    settings = _pod_env_settings(container, monkeypatch)
    assert str(settings.state.directory) == f"{STATE_MOUNT}/state"
    assert str(settings.retrain.registry_dir) == f"{STATE_MOUNT}/models"
    assert settings.kafka.instance_id == POD_NAME
    assert settings.logging.format == "json"
    assert settings.kafka.bootstrap_servers == env["STREAMRNN_KAFKA__BOOTSTRAP_SERVERS"]["value"]
    # The probes and the Service reach the daemon's HTTP server on the port named http.
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == "http"]
    assert settings.http.port == port
    assert settings.http.host == "0.0.0.0", "a pod's probes come from outside its loopback"
    consumer = client_config(settings, "consumer")
    assert consumer["group.instance.id"] == POD_NAME
    assert consumer["security.protocol"] == "SASL_SSL"
    assert consumer["sasl.mechanism"] == "SCRAM-SHA-512"
    # A misspelt top-level section would be ignored by the loader: check the names too.
    for name in env:
        if name.startswith("STREAMRNN_"):
            section = name.removeprefix("STREAMRNN_").split("__")[0].lower()
            assert section in Settings.model_fields, name


def test_credentials_come_from_an_optional_secret_not_from_the_manifests(
    rendered: dict[str, list[Obj]],
) -> None:
    for objects in rendered.values():
        assert not _all(objects, "Secret"), "credentials must not be rendered"
        ref = _env(_container(objects))["STREAMRNN_KAFKA__CLIENT"]["valueFrom"]["secretKeyRef"]
        assert ref == {
            "name": "streamrnn-kafka-credentials",
            "key": "client.json",
            "optional": True,
        }
    (secret,) = _load_yaml_docs(SECRET_EXAMPLE)
    assert secret["kind"] == "Secret"
    assert secret["metadata"]["name"] == "streamrnn-kafka-credentials"
    kubernetes_validate.validate(secret, SCHEMA_VERSIONS[0], strict=True)
    client = json.loads(secret["stringData"]["client.json"])
    assert not MANAGED_KEYS & set(client)
    kustomization = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text("utf-8"))
    assert SECRET_EXAMPLE.name not in kustomization["resources"]


def test_pod_labels_and_common_labels(build: list[Obj]) -> None:
    statefulset = _statefulset(build)
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert _selects(statefulset["spec"]["selector"]["matchLabels"], pod_labels)
    for obj in build:
        if obj["kind"] == "Namespace":
            continue
        labels = obj["metadata"].get("labels", {})
        assert labels.items() >= COMMON_LABELS.items(), f"{obj['kind']} {labels}"
    assert pod_labels.items() >= COMMON_LABELS.items()


# --- Services, PodDisruptionBudget ---------------------------------------------------------


def test_services_select_the_pods_and_the_headless_one_governs_the_statefulset(
    build: list[Obj],
) -> None:
    statefulset = _statefulset(build)
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    services = {s["metadata"]["name"]: s for s in _all(build, "Service")}
    assert set(services) == {"streamrnn", "streamrnn-headless"}
    for service in services.values():
        assert _selects(service["spec"]["selector"], pod_labels), service["metadata"]["name"]
    headless = services[statefulset["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    metrics = services["streamrnn"]
    assert metrics["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert metrics["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}
    ]
    container_ports = {p["name"] for p in _container(build)["ports"]}
    assert metrics["spec"]["ports"][0]["targetPort"] in container_ports


def test_pod_disruption_budget_covers_the_pods(build: list[Obj]) -> None:
    pdb = _one(build, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in pdb["spec"]
    statefulset = _statefulset(build)
    assert _selects(
        pdb["spec"]["selector"]["matchLabels"],
        statefulset["spec"]["template"]["metadata"]["labels"],
    )
    assert pdb["spec"]["selector"] == statefulset["spec"]["selector"]


# --- the example overlay -------------------------------------------------------------------


def test_overlay_namespace_image_replicas_and_patch(rendered: dict[str, list[Obj]]) -> None:
    overlay = rendered["overlay"]
    namespace = _one(overlay, "Namespace")
    name = namespace["metadata"]["name"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for obj in overlay:
        if obj["kind"] not in CLUSTER_SCOPED:
            assert obj["metadata"].get("namespace") == name, obj["kind"]
    assert _statefulset(overlay)["spec"]["replicas"] == 4
    assert _container(overlay)["image"] == "registry.example.com/streamrnn:0.1.0"
    # The patch changes the broker address and keeps every other variable.
    base_env, overlay_env = _env(_container(rendered["base"])), _env(_container(overlay))
    assert list(overlay_env) == list(base_env)
    changed = {n for n in base_env if base_env[n] != overlay_env[n]}
    assert changed == {"STREAMRNN_KAFKA__BOOTSTRAP_SERVERS"}


def test_servicemonitor_scrapes_metrics_from_the_metrics_service(overlay: list[Obj]) -> None:
    monitor = _one(overlay, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["name"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    selected = [s for s in _all(overlay, "Service") if _selects(selector, s["metadata"]["labels"])]
    # Exactly one Service: selecting the headless one too would scrape every pod twice.
    assert [s["metadata"]["name"] for s in selected] == ["streamrnn"]
    service = selected[0]
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"] or (
        monitor["spec"].get("namespaceSelector")
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["port"] == "http"
    assert endpoint["path"] == "/metrics"


def test_scaledobject_scales_the_statefulset_on_the_daemons_consumer_lag(
    overlay: list[Obj],
) -> None:
    scaled = _one(overlay, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    statefulset = _statefulset(overlay)
    assert scaled["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": statefulset["metadata"]["name"],
    }
    assert scaled["metadata"]["namespace"] == statefulset["metadata"]["namespace"]
    low, high = scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]
    assert 1 <= low <= high <= EXAMPLE_INPUT_PARTITIONS
    assert f"({EXAMPLE_INPUT_PARTITIONS} here" in (OVERLAY / "scaledobject.yaml").read_text("utf-8")
    assert low == statefulset["spec"]["replicas"], "a re-apply would fight the autoscaler"

    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    config = load_settings(BASE / "config.yaml")
    env = _env(_container(overlay))
    assert meta["bootstrapServers"] == env["STREAMRNN_KAFKA__BOOTSTRAP_SERVERS"]["value"]
    assert meta["consumerGroup"] == config.kafka.group_id
    assert meta["topic"] in config.topics.input
    assert int(meta["lagThreshold"]) > 0
    assert meta["offsetResetPolicy"] == config.kafka.consumer["auto.offset.reset"]
    assert all(isinstance(v, str) for v in meta.values()), "KEDA metadata values are strings"

    auth = _one(overlay, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    (secret,) = _load_yaml_docs(SECRET_EXAMPLE)
    refs = auth["spec"]["secretTargetRef"]
    assert {r["parameter"] for r in refs} == {"sasl", "username", "password", "tls"}
    for ref in refs:
        assert ref["name"] == secret["metadata"]["name"]
        assert ref["key"] in secret["stringData"]
    assert secret["stringData"]["sasl"] in {"plaintext", "scram_sha256", "scram_sha512"}
    assert secret["stringData"]["tls"] == "enable"


# --- the renderer against the real kustomize -----------------------------------------------


def _kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@pytest.mark.parametrize("label", sorted(BUILDS))
def test_renderer_agrees_with_kustomize(label: str, rendered: dict[str, list[Obj]]) -> None:
    command = _kustomize_command()
    if command is None:
        pytest.skip("no kustomize or kubectl binary")
    result = subprocess.run(
        [*command, str(BUILDS[label])], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr

    def keyed(objects: list[Obj]) -> dict[tuple[str, str], Obj]:
        return {(o["kind"], o["metadata"]["name"]): o for o in objects}

    expected = keyed([d for d in yaml.safe_load_all(result.stdout) if d is not None])
    actual = keyed(rendered[label])
    assert sorted(actual) == sorted(expected)
    for key, obj in expected.items():
        assert actual[key] == obj, key

"""The Kubernetes manifests in deploy/k8s, checked without a cluster.

Every core object (Namespace, ConfigMap, ServiceAccount, DaemonSet, ...) is validated against
the Kubernetes OpenAPI schemas that kubernetes-validate ships (offline), in strict mode: an
unknown or misspelt field fails, as `kubectl apply --validate=strict` would. The
RabbitmqCluster is a custom resource those schemas do not know: it is checked against a schema
written here for the fields it uses (names and limits from the RabbitMQ Cluster Operator's CRD,
closed at every level we use), its pod-template override as a core Pod spec, and for the
settings Kiln depends on. The ConfigMaps must be byte-for-byte copies of deploy/worker.yaml and
deploy/rabbitmq/definitions.json (deploy/k8s/sync-configmaps.py writes them), and the worker's
DaemonSet must agree with the worker: its KILN_* variables name real configuration fields, its
probes and annotations point at the port the worker listens on, its grace period covers the
longest deadline, its memory the configured VM profiles.
"""

import copy
import json
import pathlib
import re
import subprocess
import sys

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kubernetes_validate_utils

ROOT = pathlib.Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
WORKER_YAML = ROOT / "deploy" / "worker.yaml"
DEFINITIONS_JSON = ROOT / "deploy" / "rabbitmq" / "definitions.json"
RABBITMQ_CONF = ROOT / "deploy" / "rabbitmq" / "rabbitmq.conf"

# The oldest Kubernetes the manifests support and the newest schema kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")

# KILN_* variables the worker reads that set no configuration field
# (WorkerConfiguration.otherVariables).
NON_FIELD_VARIABLES = {"KILN_CONFIG", "KILN_LOG_LEVEL", "KILN_RUN_DIR"}

# Capabilities the worker container may add. None: the qemu backend does all it does as root on
# root-owned files (see worker-daemonset.yaml). Adding one means adding it here, with its reason.
ALLOWED_CAPABILITIES = set()

# rabbitmq.conf settings the RabbitmqCluster carries under another key, and why.
TRANSLATED_SETTINGS = {
    # The operator sets disk_free_limit.absolute, which wins over any relative limit.
    "disk_free_limit.relative": "disk_free_limit.absolute",
}

# The worker's planning overhead per QEMU VM beyond its guest memory (Worker.swift:
# memoryPerVMMB), and what the worker itself needs beside its VMs.
QEMU_OVERHEAD_MIB = 64
WORKER_HEADROOM_MIB = 1024

# A Kubernetes resource.Quantity, as the operator's CRD and apimachinery spell it.
QUANTITY = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
BINARY_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
DECIMAL_UNITS = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def quantity_bytes(text):
    """A byte quantity in Kubernetes (4Gi, 512M) or RabbitMQ (6GiB, 500MB) notation."""
    match = re.fullmatch(r"([0-9]+)\s*(Ki|Mi|Gi|Ti|k|K|M|G|T)?(i?B)?", str(text))
    assert match, f"not a byte quantity: {text!r}"
    number, unit, suffix = match.groups()
    if unit is None:
        return int(number)
    if suffix == "iB" or unit.endswith("i"):
        return int(number) * BINARY_UNITS[unit[0].upper() + "i"]
    return int(number) * DECIMAL_UNITS[unit if unit != "K" else "k"]


def closed(properties, required=()):
    """A JSON schema object with exactly these properties."""
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


QUANTITY_SCHEMA = {"type": ["string", "integer"], "pattern": QUANTITY}
RESOURCE_LIST = {"type": "object", "additionalProperties": QUANTITY_SCHEMA}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
DNS_LABEL = {"type": "string", "pattern": r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"}

# The part of the RabbitmqCluster schema (rabbitmq.com/v1beta1, cluster-operator 2.x) these
# manifests use: field names, types and limits as the CRD declares them, every level closed.
# affinity and the override's pod spec are core types, validated as a Pod below.
RABBITMQ_CLUSTER_SCHEMA = closed(
    {
        "apiVersion": {"const": "rabbitmq.com/v1beta1"},
        "kind": {"const": "RabbitmqCluster"},
        "metadata": closed({"name": DNS_LABEL, "namespace": DNS_LABEL, "labels": STRING_MAP, "annotations": STRING_MAP},
                           required=("name", "namespace")),
        "spec": closed(
            {
                "replicas": {"type": "integer", "minimum": 0},
                "image": {"type": "string"},
                "resources": closed({"requests": RESOURCE_LIST, "limits": RESOURCE_LIST}),
                "persistence": closed({"storage": QUANTITY_SCHEMA, "storageClassName": {"type": "string"}}),
                "affinity": {"type": "object"},
                "rabbitmq": closed({
                    "additionalPlugins": {
                        "type": "array", "maxItems": 100,
                        "items": {"type": "string", "pattern": r"^\w+$", "maxLength": 100},
                    },
                    "additionalConfig": {"type": "string", "maxLength": 100000},
                }),
                "override": closed({
                    "statefulSet": closed({
                        "spec": closed({
                            "template": closed({"spec": {"type": "object"}}, required=("spec",)),
                        }, required=("template",)),
                    }, required=("spec",)),
                }),
            },
            required=("replicas", "rabbitmq", "override"),
        ),
    },
    required=("apiVersion", "kind", "metadata", "spec"),
)


def load_yaml_documents(path):
    return [document for document in yaml.safe_load_all(path.read_text(encoding="utf-8")) if document is not None]


def manifest_files():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    return [K8S / name for name in kustomization["resources"]]


def all_objects():
    return [(path.name, document) for path in manifest_files() for document in load_yaml_documents(path)]


def object_id(entry):
    name, document = entry
    return f"{name}:{document['kind']}/{document['metadata']['name']}"


CORE_OBJECTS = [entry for entry in all_objects() if not entry[1]["apiVersion"].startswith("rabbitmq.com/")]


def the_object(kind, name=None):
    found = [document for _, document in all_objects()
             if document["kind"] == kind and (name is None or document["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def worker_source():
    return yaml.safe_load(WORKER_YAML.read_text(encoding="utf-8"))


def rabbitmq_settings(text):
    """key = value lines of a rabbitmq.conf (sysctl format), comments and blank lines skipped."""
    settings = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, separator, value = line.partition("=")
        assert separator, f"line {number} is not key = value: {line!r}"
        key, value = key.strip(), value.strip()
        assert "#" not in value, f"line {number}: keep comments on their own line ({line!r})"
        assert key not in settings, f"{key} is set twice"
        settings[key] = value
    return settings


@pytest.fixture(scope="module")
def daemonset():
    return the_object("DaemonSet", "kiln-worker")


@pytest.fixture(scope="module")
def pod_spec(daemonset):
    return daemonset["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def worker_container(pod_spec):
    containers = [container for container in pod_spec["containers"] if container["name"] == "worker"]
    assert len(containers) == 1
    return containers[0]


@pytest.fixture(scope="module")
def worker_env(worker_container):
    return {variable["name"]: variable for variable in worker_container["env"]}


@pytest.fixture(scope="module")
def rabbitmq_cluster():
    return the_object("RabbitmqCluster", "kiln-rabbitmq")


@pytest.fixture(scope="module")
def broker_config(rabbitmq_cluster):
    return rabbitmq_settings(rabbitmq_cluster["spec"]["rabbitmq"]["additionalConfig"])


def mount_for(container, pod, path):
    """The volume mount holding `path` in `container` (the deepest), and its volume."""
    mounts = [mount for mount in container.get("volumeMounts", [])
              if path == mount["mountPath"] or path.startswith(mount["mountPath"].rstrip("/") + "/")]
    assert mounts, f"{path} is on no volume"
    mount = max(mounts, key=lambda mount: len(mount["mountPath"]))
    volumes = [volume for volume in pod.get("volumes", []) if volume["name"] == mount["name"]]
    assert len(volumes) == 1, f"volume {mount['name']} is not defined once"
    return mount, volumes[0]


# Layout --------------------------------------------------------------------------------------


def test_kustomization_lists_every_manifest():
    listed = {path.name for path in manifest_files()}
    present = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present, f"kustomization.yaml lists {sorted(listed)}, the folder holds {sorted(present)}"


def test_every_object_is_in_the_kiln_namespace():
    namespace = the_object("Namespace")["metadata"]["name"]
    for name, document in all_objects():
        if document["kind"] != "Namespace":
            assert document["metadata"].get("namespace") == namespace, f"{object_id((name, document))} is not in {namespace}"


# Core objects against the Kubernetes schemas -------------------------------------------------


def test_the_chosen_kubernetes_schemas_are_bundled():
    bundled = set(kubernetes_validate_utils.all_versions())
    for version in KUBERNETES_VERSIONS:
        assert version in bundled, f"kubernetes-validate {kubernetes_validate.__version__} has no schema for {version}"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("entry", CORE_OBJECTS, ids=object_id)
def test_core_object_is_valid_kubernetes(entry, version):
    _, document = entry
    try:
        kubernetes_validate.validate(document, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        pytest.fail(f"{object_id(entry)} against Kubernetes {version}: {error.message} at {'.'.join(map(str, error.path))}")


def test_strict_validation_rejects_unknown_fields(daemonset):
    """Guards the test above: strict mode must fail on a field Kubernetes does not have."""
    broken = copy.deepcopy(daemonset)
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged "] = False
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def test_resource_quantities_are_well_formed(worker_container, rabbitmq_cluster):
    # The Kubernetes schemas take any string for a quantity; the API server does not.
    for requirements in (worker_container["resources"], rabbitmq_cluster["spec"]["resources"]):
        for kind in ("requests", "limits"):
            for name, value in requirements.get(kind, {}).items():
                assert re.fullmatch(QUANTITY, str(value)), f"{kind}.{name}: {value!r} is not a quantity"


# The RabbitmqCluster ---------------------------------------------------------------------------


def test_rabbitmq_cluster_matches_its_schema(rabbitmq_cluster):
    jsonschema.validate(rabbitmq_cluster, RABBITMQ_CLUSTER_SCHEMA)


def test_rabbitmq_cluster_schema_rejects_unknown_fields(rabbitmq_cluster):
    """Guards the test above: the schema is closed where the manifest has fields."""
    for path in (("spec",), ("spec", "rabbitmq"), ("spec", "override", "statefulSet", "spec")):
        broken = copy.deepcopy(rabbitmq_cluster)
        node = broken
        for key in path:
            node = node[key]
        node["unknownField"] = 1
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, RABBITMQ_CLUSTER_SCHEMA)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_rabbitmq_cluster_pod_parts_are_valid_kubernetes(rabbitmq_cluster, version):
    """The override's pod spec and the affinity are core types: validated as a Pod."""
    spec = copy.deepcopy(rabbitmq_cluster["spec"]["override"]["statefulSet"]["spec"]["template"]["spec"])
    spec["affinity"] = rabbitmq_cluster["spec"]["affinity"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "override"}, "spec": spec}
    kubernetes_validate.validate(pod, version, strict=True)


def test_rabbitmq_cluster_has_three_nodes(rabbitmq_cluster):
    assert rabbitmq_cluster["spec"]["replicas"] == 3


def test_rabbitmq_cluster_enables_the_plugins_kiln_uses(rabbitmq_cluster):
    plugins = set(rabbitmq_cluster["spec"]["rabbitmq"]["additionalPlugins"])
    assert {"rabbitmq_management", "rabbitmq_prometheus", "rabbitmq_consistent_hash_exchange"} <= plugins


def test_rabbitmq_cluster_pauses_a_minority(broker_config):
    assert broker_config.get("cluster_partition_handling") == "pause_minority"


def test_rabbitmq_cluster_carries_rabbitmq_conf(broker_config, rabbitmq_cluster):
    source = rabbitmq_settings(RABBITMQ_CONF.read_text(encoding="utf-8"))
    assert source, "deploy/rabbitmq/rabbitmq.conf sets nothing?"
    for key, value in source.items():
        if key in TRANSLATED_SETTINGS:
            assert key not in broker_config, f"{key} would lose to the operator's {TRANSLATED_SETTINGS[key]}"
            assert TRANSLATED_SETTINGS[key] in broker_config, f"{key} = {value} is not carried as {TRANSLATED_SETTINGS[key]}"
        else:
            assert broker_config.get(key) == value, f"{key}: rabbitmq.conf says {value}, the cluster {broker_config.get(key)}"
    # disk_free_limit.relative is a multiple of the node's memory: the absolute value must be
    # at least that multiple of the memory limit.
    relative = float(source["disk_free_limit.relative"])
    memory = quantity_bytes(rabbitmq_cluster["spec"]["resources"]["limits"]["memory"])
    absolute = quantity_bytes(broker_config["disk_free_limit.absolute"])
    assert absolute >= relative * memory, f"disk_free_limit.absolute {absolute} < {relative} × memory limit {memory}"


def test_rabbitmq_cluster_loads_the_mounted_definitions(rabbitmq_cluster, broker_config):
    pod = rabbitmq_cluster["spec"]["override"]["statefulSet"]["spec"]["template"]["spec"]
    path = broker_config.get("definitions.local.path") or broker_config.get("load_definitions")
    assert path, "no definitions are loaded at boot"
    if "definitions.local.path" in broker_config:
        assert broker_config.get("definitions.import_backend") == "local_filesystem"
    # Without it every node restart re-imports the users, resetting their passwords.
    assert broker_config.get("definitions.skip_if_unchanged") == "true"
    rabbitmq = [container for container in pod["containers"] if container["name"] == "rabbitmq"]
    assert len(rabbitmq) == 1, "the operator's container is named rabbitmq"
    mount, volume = mount_for(rabbitmq[0], pod, path)
    assert "subPath" not in mount, "a subPath mount never sees an edited ConfigMap"
    key = path[len(mount["mountPath"].rstrip("/")) + 1:]
    config_map = volume["configMap"]
    items = {item["path"]: item["key"] for item in config_map.get("items", [])} or {key: key}
    definitions = the_object("ConfigMap", config_map["name"])
    assert definitions["metadata"]["name"] == "kiln-rabbitmq-definitions"
    assert items.get(key) in definitions["data"], f"{path} is not a key of ConfigMap {config_map['name']}"


def test_definitions_config_map_is_deploy_rabbitmq_definitions_json():
    data = the_object("ConfigMap", "kiln-rabbitmq-definitions")["data"]["definitions.json"]
    source = DEFINITIONS_JSON.read_text(encoding="utf-8")
    assert data == source, "deploy/k8s/rabbitmq-cluster.yaml is stale: run deploy/k8s/sync-configmaps.py"
    assert json.loads(data) == json.loads(source)


# The worker ------------------------------------------------------------------------------------


def test_worker_config_map_is_deploy_worker_yaml():
    data = the_object("ConfigMap", "kiln-worker-config")["data"]["worker.yaml"]
    assert data == WORKER_YAML.read_text(encoding="utf-8"), \
        "deploy/k8s/worker-daemonset.yaml is stale: run deploy/k8s/sync-configmaps.py"
    parsed = yaml.safe_load(data)
    missing = set(worker_source()) - set(parsed)
    assert not missing, f"the ConfigMap's worker.yaml lacks {sorted(missing)}"


def test_sync_script_finds_nothing_to_do():
    result = subprocess.run([sys.executable, str(K8S / "sync-configmaps.py"), "--check"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_worker_reads_its_config_map(worker_env, worker_container, pod_spec):
    path = worker_env["KILN_CONFIG"]["value"]
    mount, volume = mount_for(worker_container, pod_spec, path)
    assert volume.get("configMap", {}).get("name") == "kiln-worker-config"
    assert path == mount["mountPath"].rstrip("/") + "/worker.yaml"


def test_worker_variables_name_configuration_fields(worker_env):
    """WorkerConfiguration reads KILN_<SECTION>_<KEY> for a field of the file and ignores a
    misspelt one (with a warning), so each must name a field of deploy/worker.yaml."""
    fields = worker_source()
    for name in worker_env:
        assert name.startswith("KILN_"), f"{name} is not for the worker"
        if name in NON_FIELD_VARIABLES:
            continue
        section, _, key = name[len("KILN_"):].lower().partition("_")
        assert isinstance(fields.get(section), dict), f"{name}: no section {section} in deploy/worker.yaml"
        assert key in fields[section], f"{name}: no field {section}.{key} in deploy/worker.yaml"
        assert not isinstance(fields[section][key], (dict, list)), f"{name}: {section}.{key} cannot be set from the environment"


def test_worker_sees_only_its_own_variables(pod_spec):
    # Service links would add KILN_RABBITMQ_SERVICE_HOST and the like to a worker that reads
    # every KILN_* variable.
    assert pod_spec.get("enableServiceLinks") is False


def test_worker_host_is_the_node_name(worker_env):
    assert worker_env["KILN_WORKER_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


def test_broker_credentials_come_from_a_secret(worker_env):
    reference = worker_env["KILN_AMQP_URL"].get("valueFrom", {}).get("secretKeyRef")
    assert reference, "KILN_AMQP_URL carries a password: take it from a Secret, not the manifest"
    readme = (K8S / "README.md").read_text(encoding="utf-8")
    assert reference["name"] in readme and f"--from-literal={reference['key']}=" in readme, \
        "README.md must say how to create the Secret the worker reads"


def test_worker_listens_on_the_named_metrics_port(worker_env, worker_container):
    ports = {port["name"]: port for port in worker_container["ports"]}
    host, _, port = worker_env["KILN_METRICS_LISTEN"]["value"].rpartition(":")
    assert host in ("0.0.0.0", "[::]", ""), "probes and Prometheus reach the pod's address, not its loopback"
    assert ports["metrics"]["containerPort"] == int(port)


@pytest.mark.parametrize("probe", ["startupProbe", "readinessProbe", "livenessProbe"])
def test_probes_ask_healthz_on_the_metrics_port(worker_container, probe):
    action = worker_container[probe]["httpGet"]
    assert action["path"] == "/healthz"
    assert action["port"] == "metrics", "refer to the port by name, so that it moves with the container port"


def test_prometheus_scrapes_the_metrics_port(daemonset, worker_container):
    annotations = daemonset["spec"]["template"]["metadata"]["annotations"]
    ports = {port["name"]: port["containerPort"] for port in worker_container["ports"]}
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(ports["metrics"])
    assert annotations["prometheus.io/path"] == "/metrics"


def test_worker_gets_kvm_from_a_device_plugin(worker_container, pod_spec):
    limits = worker_container["resources"]["limits"]
    kvm = [name for name in limits if name.endswith("/kvm")]
    assert len(kvm) == 1 and str(limits[kvm[0]]) == "1", "request /dev/kvm as a device-plugin resource"
    readme = (K8S / "README.md").read_text(encoding="utf-8")
    assert kvm[0] in readme, "README.md must say where the KVM resource comes from"
    # A hostPath of /dev/kvm cannot replace it: the device cgroup of an unprivileged container
    # refuses open() whatever is mounted.
    for volume in pod_spec.get("volumes", []):
        if "hostPath" in volume:
            assert not volume["hostPath"]["path"].startswith("/dev"), f"{volume['name']}: hostPath of a device"


def test_worker_is_not_privileged(worker_container, pod_spec):
    context = worker_container["securityContext"]
    assert context.get("privileged") is not True
    assert context.get("allowPrivilegeEscalation") is False
    assert "ALL" in context["capabilities"]["drop"]
    added = set(context["capabilities"].get("add", []))
    assert added <= ALLOWED_CAPABILITIES, f"capabilities {sorted(added - ALLOWED_CAPABILITIES)} are not justified"
    for host_namespace in ("hostNetwork", "hostPID", "hostIPC"):
        assert pod_spec.get(host_namespace) is not True, host_namespace
    assert pod_spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for container in pod_spec.get("initContainers", []):
        assert container.get("securityContext", {}).get("privileged") is not True, container["name"]


def test_worker_does_not_mount_the_node_cgroup_tree(pod_spec):
    # On cgroup v2 (nsdelegate) the kernel refuses to move a process from the container's
    # cgroup namespace into a cgroup outside it: with the node's tree mounted, every VM start
    # would fail instead of running without a cgroup of its own.
    for volume in pod_spec.get("volumes", []):
        if "hostPath" in volume:
            assert not volume["hostPath"]["path"].startswith("/sys"), f"{volume['name']} mounts {volume['hostPath']['path']}"


def test_worker_state_outlives_the_pod(worker_env, worker_container, pod_spec):
    for variable in ("KILN_VM_IMAGE_CACHE", "KILN_HISTORY_PATH"):
        _, volume = mount_for(worker_container, pod_spec, worker_env[variable]["value"])
        assert "hostPath" in volume, f"{variable} must be on the node, not in the pod"
    _, volume = mount_for(worker_container, pod_spec, worker_env["KILN_RUN_DIR"]["value"])
    assert "emptyDir" in volume, "the run directory belongs to the pod"


def test_worker_writes_only_to_volumes(worker_container, pod_spec):
    assert worker_container["securityContext"].get("readOnlyRootFilesystem") is True
    mount_for(worker_container, pod_spec, "/tmp")


def test_grace_period_covers_the_longest_deadline(pod_spec):
    configuration = yaml.safe_load(the_object("ConfigMap", "kiln-worker-config")["data"]["worker.yaml"])
    longest_s = configuration["limits"]["max_deadline_ms"] / 1000
    # Beyond the invocation itself: confirming its result, destroying the VMs.
    assert pod_spec["terminationGracePeriodSeconds"] >= longest_s + 30


def test_memory_limit_holds_every_vm(worker_container):
    configuration = yaml.safe_load(the_object("ConfigMap", "kiln-worker-config")["data"]["worker.yaml"])
    vms_mib = sum(profile["max_total"] * (profile["memory_mb"] + QEMU_OVERHEAD_MIB)
                  for profile in configuration["profiles"].values())
    limit = quantity_bytes(worker_container["resources"]["limits"]["memory"])
    assert limit >= (vms_mib + WORKER_HEADROOM_MIB) * 2**20, \
        f"memory limit {limit >> 20} MiB < {vms_mib} MiB of VMs + {WORKER_HEADROOM_MIB} MiB for the worker"


def test_one_worker_per_node_at_any_time(daemonset):
    strategy = daemonset["spec"]["updateStrategy"]
    assert strategy["type"] == "RollingUpdate"
    assert str(strategy["rollingUpdate"].get("maxSurge", 0)) in ("0", "0%")

"""Static checks of deploy/kubernetes/ against the binary it deploys.

No cluster exists on the build machines, so nothing here is applied.  Every manifest is parsed
(python3-yaml) and held to the fields of the Kubernetes API objects it uses (a misspelt field is
an error, as under kubectl's strict field validation); what the pods run is fed to the real
binary ($CHANCED_BIN):

    every role       a Deployment (replicas >= 2, rolling updates, --role=ROLE) with a
                     PodDisruptionBudget, requests and limits, a restricted securityContext,
                     probes on /readyz and /livez of the role's health port, a grace period
                     above shutdown_timeout_ms
    configuration    each ConfigMap holds keys of one key table; the environment each pod gets
                     (ConfigMaps, env, the Secret and certificate files at their mount paths) is
                     accepted by `chanced --role=ROLE config check`, every variable taken as the
                     key it names; no loopback default is left in a pod
    Services         the gateway behind the Ingress; chance and logger internal (ClusterIP),
                     each with a headless Service that the gateway's chance_addr / logger_addr
                     name; ports resolve to the containers' ports; NetworkPolicies
    Jobs             `chanced migrate` and the first admin, run for real against an empty
                     PostgreSQL database (create-admin twice: it is idempotent)
    README.md        the Secrets it tells you to create hold every file the pods read
    kustomization    lists every file; `kubectl kustomize` builds it where kubectl exists

kubectl is optional (Debian does not package it): only the kustomize build needs it.
"""

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

import test_deploy as deploy

ROOT = Path(__file__).resolve().parent.parent.parent
K8S = ROOT / "deploy" / "kubernetes"
KUSTOMIZATION = K8S / "kustomization.yaml"
K8S_README = K8S / "README.md"
SCALE_DOC = ROOT / "docs" / "scale.md"
ROLES = deploy.ROLES
ROLE_MODULES = deploy.ROLE_MODULES
HEALTH_KEY = deploy.HEALTH_KEY
# The peer address keys of the gateway, and the listen key each peer serves them on
PEERS = {"chance": ("chance_addr", "chance_listen"), "logger": ("logger_addr", "logger_listen")}
# The internal links' certificate keys (mutual TLS; issue 10)
RPC_TLS = ("rpc_tls_ca", "rpc_tls_cert", "rpc_tls_key")
# Exit codes that no retry can fix (README "Exit codes"): usage, configuration
PERMANENT_EXIT = {64, 78}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


# --- the Kubernetes API, as far as these manifests use it ----------------------------------
#
# Each type maps its field names to a type name, "[Type]" for a list of them, or None for a
# value not checked further (scalars, free maps).  Fields not listed are refused, so a typo
# (readinesProbe, matchLabel) fails here rather than at `kubectl apply`.

API = {
    "ObjectMeta": {"name": None, "namespace": None, "labels": None, "annotations": None},
    "LabelSelector": {"matchLabels": None, "matchExpressions": None},
    "DeploymentSpec": {"replicas": None, "selector": "LabelSelector",
                       "template": "PodTemplateSpec", "strategy": "DeploymentStrategy",
                       "minReadySeconds": None, "revisionHistoryLimit": None,
                       "progressDeadlineSeconds": None},
    "DeploymentStrategy": {"type": None, "rollingUpdate": "RollingUpdate"},
    "RollingUpdate": {"maxSurge": None, "maxUnavailable": None},
    "PodTemplateSpec": {"metadata": "ObjectMeta", "spec": "PodSpec"},
    "PodSpec": {"containers": "[Container]", "volumes": "[Volume]", "restartPolicy": None,
                "serviceAccountName": None, "automountServiceAccountToken": None,
                "enableServiceLinks": None, "terminationGracePeriodSeconds": None,
                "securityContext": "PodSecurityContext",
                "topologySpreadConstraints": "[TopologySpreadConstraint]",
                "affinity": None, "nodeSelector": None, "tolerations": None,
                "priorityClassName": None},
    "PodSecurityContext": {"runAsNonRoot": None, "runAsUser": None, "runAsGroup": None,
                           "fsGroup": None, "seccompProfile": "SeccompProfile",
                           "fsGroupChangePolicy": None},
    "SeccompProfile": {"type": None, "localhostProfile": None},
    "TopologySpreadConstraint": {"maxSkew": None, "topologyKey": None,
                                 "whenUnsatisfiable": None, "labelSelector": "LabelSelector",
                                 "minDomains": None},
    "Container": {"name": None, "image": None, "imagePullPolicy": None, "command": None,
                  "args": None, "env": "[EnvVar]", "envFrom": "[EnvFromSource]",
                  "ports": "[ContainerPort]", "startupProbe": "Probe",
                  "readinessProbe": "Probe", "livenessProbe": "Probe",
                  "lifecycle": "Lifecycle", "resources": "ResourceRequirements",
                  "securityContext": "SecurityContext", "volumeMounts": "[VolumeMount]"},
    "EnvVar": {"name": None, "value": None},
    "EnvFromSource": {"configMapRef": "LocalObjectReference"},
    "LocalObjectReference": {"name": None},
    "ContainerPort": {"name": None, "containerPort": None, "protocol": None},
    "Probe": {"httpGet": "HTTPGetAction", "initialDelaySeconds": None, "periodSeconds": None,
              "timeoutSeconds": None, "failureThreshold": None, "successThreshold": None},
    "HTTPGetAction": {"path": None, "port": None, "scheme": None},
    "Lifecycle": {"preStop": "LifecycleHandler"},
    "LifecycleHandler": {"exec": "ExecAction"},
    "ExecAction": {"command": None},
    "ResourceRequirements": {"requests": None, "limits": None},
    "SecurityContext": {"allowPrivilegeEscalation": None, "readOnlyRootFilesystem": None,
                        "runAsNonRoot": None, "runAsUser": None, "runAsGroup": None,
                        "capabilities": "Capabilities", "seccompProfile": "SeccompProfile"},
    "Capabilities": {"drop": None},
    "VolumeMount": {"name": None, "mountPath": None, "readOnly": None},
    "Volume": {"name": None, "secret": "SecretVolumeSource", "emptyDir": "EmptyDirVolumeSource"},
    "SecretVolumeSource": {"secretName": None, "defaultMode": None, "items": "[KeyToPath]",
                           "optional": None},
    "KeyToPath": {"key": None, "path": None, "mode": None},
    "EmptyDirVolumeSource": {"medium": None, "sizeLimit": None},
    "ServiceSpec": {"type": None, "clusterIP": None, "selector": None,
                    "ports": "[ServicePort]", "publishNotReadyAddresses": None},
    "ServicePort": {"name": None, "port": None, "targetPort": None, "protocol": None,
                    "appProtocol": None},
    "PodDisruptionBudgetSpec": {"maxUnavailable": None, "minAvailable": None,
                                "selector": "LabelSelector"},
    "JobSpec": {"backoffLimit": None, "activeDeadlineSeconds": None,
                "ttlSecondsAfterFinished": None, "podFailurePolicy": "PodFailurePolicy",
                "template": "PodTemplateSpec"},
    "PodFailurePolicy": {"rules": "[PodFailurePolicyRule]"},
    "PodFailurePolicyRule": {"action": None, "onExitCodes": "PodFailurePolicyOnExitCodes"},
    "PodFailurePolicyOnExitCodes": {"containerName": None, "operator": None, "values": None},
    "IngressSpec": {"ingressClassName": None, "tls": "[IngressTLS]", "rules": "[IngressRule]"},
    "IngressTLS": {"hosts": None, "secretName": None},
    "IngressRule": {"host": None, "http": "HTTPIngressRuleValue"},
    "HTTPIngressRuleValue": {"paths": "[HTTPIngressPath]"},
    "HTTPIngressPath": {"path": None, "pathType": None, "backend": "IngressBackend"},
    "IngressBackend": {"service": "IngressServiceBackend"},
    "IngressServiceBackend": {"name": None, "port": "ServiceBackendPort"},
    "ServiceBackendPort": {"name": None, "number": None},
    "NetworkPolicySpec": {"podSelector": "LabelSelector", "policyTypes": None,
                          "ingress": "[NetworkPolicyIngressRule]"},
    "NetworkPolicyIngressRule": {"from": "[NetworkPolicyPeer]", "ports": "[NetworkPolicyPort]"},
    "NetworkPolicyPeer": {"podSelector": "LabelSelector", "namespaceSelector": "LabelSelector"},
    "NetworkPolicyPort": {"port": None, "protocol": None},
}
# (apiVersion, kind) -> top-level fields and their types
KINDS = {
    ("v1", "Namespace"): {"metadata": "ObjectMeta"},
    ("v1", "ServiceAccount"): {"metadata": "ObjectMeta", "automountServiceAccountToken": None},
    ("v1", "ConfigMap"): {"metadata": "ObjectMeta", "data": None},
    ("v1", "Service"): {"metadata": "ObjectMeta", "spec": "ServiceSpec"},
    ("apps/v1", "Deployment"): {"metadata": "ObjectMeta", "spec": "DeploymentSpec"},
    ("policy/v1", "PodDisruptionBudget"): {"metadata": "ObjectMeta",
                                           "spec": "PodDisruptionBudgetSpec"},
    ("batch/v1", "Job"): {"metadata": "ObjectMeta", "spec": "JobSpec"},
    ("networking.k8s.io/v1", "Ingress"): {"metadata": "ObjectMeta", "spec": "IngressSpec"},
    ("networking.k8s.io/v1", "NetworkPolicy"): {"metadata": "ObjectMeta",
                                                "spec": "NetworkPolicySpec"},
}
# Fields the API requires, per type
REQUIRED = {
    "DeploymentSpec": ("selector", "template"),
    "Container": ("name", "image"), "EnvVar": ("name",), "ContainerPort": ("containerPort",),
    "VolumeMount": ("name", "mountPath"), "Volume": ("name",), "ServicePort": ("port",),
    "JobSpec": ("template",), "HTTPIngressPath": ("pathType", "backend"),
    "KeyToPath": ("key", "path"), "SecretVolumeSource": ("secretName",),
    "TopologySpreadConstraint": ("maxSkew", "topologyKey", "whenUnsatisfiable"),
}


def api_errors(value, type_name, where):
    """Field names and shapes of value against API[type_name]; a list of problems."""
    if type_name is None:
        return []
    if type_name.startswith("["):
        if not isinstance(value, list):
            return ["%s: a list expected, got %r" % (where, value)]
        out = []
        for i, item in enumerate(value):
            out += api_errors(item, type_name[1:-1], "%s[%d]" % (where, i))
        return out
    fields = API[type_name]
    if not isinstance(value, dict):
        return ["%s: an object (%s) expected, got %r" % (where, type_name, value)]
    out = ["%s: %s has no field %r" % (where, type_name, k) for k in value if k not in fields]
    out += ["%s: %s needs %r" % (where, type_name, k) for k in REQUIRED.get(type_name, ())
            if k not in value]
    for k, v in value.items():
        if k in fields:
            out += api_errors(v, fields[k], "%s.%s" % (where, k))
    return out


# --- loading -------------------------------------------------------------------------------

def load_yaml_all(path):
    try:
        import yaml
    except ImportError:
        deploy.need(False, "python3-yaml is missing (test/deps.sh should install it)")
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def manifest_files():
    return sorted(p for p in K8S.glob("*.yaml") if p != KUSTOMIZATION)


@pytest.fixture(scope="module")
def objects():
    """[(file name, object)] of every manifest, in file order."""
    out = []
    for path in manifest_files():
        for doc in load_yaml_all(path):
            out.append((path.name, doc))
    assert out, "no manifests under %s" % K8S
    return out


def of_kind(objects, kind):
    return {o["metadata"]["name"]: o for _, o in objects if o.get("kind") == kind}


def role_of(dep):
    """The --role=X of a workload's only container, or None."""
    args = containers(dep)[0].get("args") or []
    roles = [a.split("=", 1)[1] for a in args if a.startswith("--role=")]
    return roles[0] if roles else None


def pod_spec(workload):
    return workload["spec"]["template"]["spec"]


def containers(workload):
    return pod_spec(workload)["containers"]


def pod_labels(workload):
    return workload["spec"]["template"]["metadata"].get("labels") or {}


@pytest.fixture(scope="module")
def deployments(objects):
    """{role: Deployment}"""
    out = {}
    for name, dep in of_kind(objects, "Deployment").items():
        role = role_of(dep)
        assert role in ROLES, "Deployment %s runs no --role of %s" % (name, ROLES)
        assert role not in out, "two Deployments run --role=%s" % role
        out[role] = dep
    assert set(out) == set(ROLES), "Deployments for %s, want %s" % (sorted(out), ROLES)
    return out


@pytest.fixture(scope="module")
def jobs(objects):
    return of_kind(objects, "Job")


def workloads(objects):
    """Every object that runs pods: (kind/name, object)."""
    return [("%s/%s" % (o["kind"], o["metadata"]["name"]), o) for _, o in objects
            if o.get("kind") in ("Deployment", "Job")]


def selects(selector, labels):
    """A matchLabels selector (the only form these manifests use) against pod labels."""
    assert set(selector) <= {"matchLabels"}, "only matchLabels selectors: %s" % selector
    match = selector.get("matchLabels") or {}
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


# --- the binary's keys ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def keys(chanced_bin):
    return deploy.key_table(chanced_bin)


@pytest.fixture(scope="module")
def module_of(keys):
    return {k: mod for k, _, mod, _, _ in keys}


@pytest.fixture(scope="module")
def secret_keys(keys):
    return {k for k, _, _, _, secret in keys if secret}


@pytest.fixture(scope="module")
def defaults(keys):
    return {k: d for k, d, *_ in keys}


def pending_rpc_tls(module_of):
    """The internal links' TLS keys are being added to the binary (issue 10) while these
    manifests already set them: until the binary has them, they are left out of the checks
    (all three at once; a binary with only some of them fails)."""
    have = [k for k in RPC_TLS if k in module_of]
    assert len(have) in (0, len(RPC_TLS)), "the binary has only %s of %s" % (have, RPC_TLS)
    return not have


def key_of_var(var, module_of, secret_keys):
    """CHANCED_FOO -> (foo, False); CHANCED_FOO_FILE of a secret key -> (foo, True)."""
    key = var[len("CHANCED_"):].lower()
    if key.endswith("_file") and key not in module_of and key[:-5] in secret_keys:
        return key[:-5], True
    return key, False


# --- a pod's environment -------------------------------------------------------------------

def configmap_env(objects, container):
    cms = of_kind(objects, "ConfigMap")
    env = {}
    for src in container.get("envFrom") or []:
        name = src["configMapRef"]["name"]
        assert name in cms, "envFrom names ConfigMap %s, which is not in the manifests" % name
        for k, v in (cms[name].get("data") or {}).items():
            assert isinstance(v, str), "ConfigMap %s: %s must be a string (quote it)" % (name, k)
            env[k] = v
    return env


def container_env(objects, container):
    """The environment the container gets: envFrom first, env entries beat it."""
    env = configmap_env(objects, container)
    for e in container.get("env") or []:
        assert "value" in e, "%s: only literal values (secrets are files)" % e["name"]
        env[e["name"]] = str(e["value"])
    return env


def secret_mounts(workload, container):
    """{mountPath: (secret name, set of file names or None when every key is projected)}"""
    vols = {v["name"]: v for v in pod_spec(workload).get("volumes") or []}
    out = {}
    for m in container.get("volumeMounts") or []:
        v = vols.get(m["name"])
        assert v is not None, "volumeMount %s names no volume" % m["name"]
        if "secret" in v:
            items = v["secret"].get("items")
            out[m["mountPath"]] = (v["secret"]["secretName"],
                                   {i["path"] for i in items} if items else None)
    return out


# A plausible value for each secret a pod reads from a file (config check validates URLs)
SECRET_VALUES = {
    "postgres_url": "postgresql://chanced:pw@pg-1.db.internal:5432,pg-2.db.internal:5432/"
                    "chanced?target_session_attrs=read-write",
    "redis_url": "redis://:pw@redis-0.cache.internal:6379,redis-1.cache.internal:6379",
    "amqp_url": "amqp://chanced:pw@mq-1.internal:5672/,amqp://chanced:pw@mq-2.internal:5672/",
    "mongo_url": "mongodb://chanced:pw@mongo-1.internal:27017,mongo-2.internal:27017/chanced"
                 "?replicaSet=rs0&authSource=admin",
    "claim_secret": "0123456789abcdef0123456789abcdef",
}


def localize_env(objects, workload, container, module_of, secret_keys, tmp_path):
    """The container's environment with every path under a mounted Secret rewritten to a file
    under tmp_path holding a plausible value (what config check needs to accept it).
    Returns (env, {file path in the pod: secret name})."""
    env = container_env(objects, container)
    mounts = secret_mounts(workload, container)
    files = {}
    for var, value in list(env.items()):
        for mount, (secret, items) in mounts.items():
            if not value.startswith(mount + "/"):
                continue
            name = value[len(mount) + 1:]
            assert "/" not in name, "%s=%s: a Secret's files are flat" % (var, value)
            assert items is None or name in items, \
                "%s=%s: the volume projects only %s of %s" % (var, value, sorted(items), secret)
            local = tmp_path / mount.strip("/").replace("/", "_") / name
            local.parent.mkdir(parents=True, exist_ok=True)
            key = var[len("CHANCED_"):].lower().removesuffix("_file")
            if key in SECRET_VALUES:
                local.write_text(SECRET_VALUES[key] + "\n")
            elif key.endswith("_key"):
                local.write_text("-----BEGIN PRIVATE KEY-----\n")
            else:
                local.write_text("-----BEGIN CERTIFICATE-----\n")
            env[var] = str(local)
            files[value] = secret
        if var == "CREDENTIALS_DIRECTORY":
            assert value in mounts, "CREDENTIALS_DIRECTORY=%s is not a mounted Secret" % value
            d = tmp_path / value.strip("/").replace("/", "_")
            d.mkdir(parents=True, exist_ok=True)
            env[var] = str(d)
    return env, files


def check_pod_env(chanced_bin, env, args, role_modules, module_of, secret_keys, what,
                  skip_keys=()):
    """Runs `chanced ARGS config check` with env: exit 0, and every CHANCED_* variable taken
    from the environment as the key it names, a key of a module the role reads."""
    env = {k: v for k, v in env.items()
           if not k.startswith("CHANCED_") or
           k[len("CHANCED_"):].lower().removesuffix("_file") not in skip_keys}
    p, dump = deploy.config_check(chanced_bin, args, env)
    assert p.returncode == 0, "%s: `chanced %s config check` exit %d: %s" % (
        what, " ".join(args), p.returncode, p.stderr.strip())
    for var, value in env.items():
        if not var.startswith("CHANCED_") or var == "CHANCED_ROLE":
            continue
        key, is_file = key_of_var(var, module_of, secret_keys)
        assert key in module_of, "%s: %s: the binary has no key %s" % (what, var, key)
        assert module_of[key] in role_modules, \
            "%s: %s is a key of module %s, which this role does not read (%s)" % (
                what, var, module_of[key], role_modules)
        entries = dump.get(key, [])
        assert entries and all(s == "env" for _, s in entries), \
            "%s: %s was not taken from the environment: %s" % (what, var, entries)
        if key in secret_keys:
            assert all(v == "(redacted)" for v, _ in entries), (what, var, entries)
        else:
            assert all(v == value for v, _ in entries), "%s: %s=%s shows as %s" % (
                what, var, value, entries)
    return dump


# --- parsing -------------------------------------------------------------------------------

def test_every_manifest_parses_and_uses_known_fields(objects):
    problems, seen = [], {}
    for fname, o in objects:
        kind = (o.get("apiVersion"), o.get("kind"))
        if kind not in KINDS:
            problems.append("%s: unexpected object %s" % (fname, kind))
            continue
        top = KINDS[kind]
        where = "%s: %s/%s" % (fname, o["kind"], (o.get("metadata") or {}).get("name"))
        extra = set(o) - set(top) - {"apiVersion", "kind"}
        problems += ["%s: no top-level field %r" % (where, k) for k in extra]
        for k, t in top.items():
            if k in o:
                problems += api_errors(o[k], t, "%s.%s" % (where, k))
        meta = o.get("metadata") or {}
        name = meta.get("name", "")
        if not DNS_LABEL.match(name) or len(name) > 63:
            problems.append("%s: name %r is not a DNS label" % (where, name))
        if "namespace" in meta:
            problems.append("%s: the namespace comes from kustomization.yaml" % where)
        if kind in seen and name in seen[kind]:
            problems.append("%s: %s %s defined twice" % (where, kind[1], name))
        seen.setdefault(kind, set()).add(name)
    assert not problems, "\n".join(problems)


def test_api_schema_catches_a_typo():
    """The field check above must be able to fail."""
    probe = {"name": "x", "image": "chanced:0", "readinesProbe": {}}
    assert api_errors(probe, "Container", "c") == ["c: Container has no field 'readinesProbe'"]
    assert api_errors({"httpGet": {"path": "/readyz", "prot": 1}}, "Probe", "p")


def test_kustomization_lists_every_manifest(objects):
    docs = load_yaml_all(KUSTOMIZATION)
    assert len(docs) == 1
    k = docs[0]
    assert (k.get("apiVersion"), k.get("kind")) == ("kustomize.config.k8s.io/v1beta1",
                                                    "Kustomization")
    assert sorted(k.get("resources") or []) == sorted(p.name for p in manifest_files()), \
        "kustomization.yaml resources %s, files %s" % (k.get("resources"),
                                                      [p.name for p in manifest_files()])
    namespaces = of_kind(objects, "Namespace")
    assert list(namespaces) == [k.get("namespace")], \
        "kustomization namespace %s, Namespace objects %s" % (k.get("namespace"),
                                                              list(namespaces))
    for label in (k.get("labels") or []):
        assert not label.get("includeSelectors"), \
            "a label added to selectors would orphan the running pods on the next apply"


def test_kubectl_kustomize_builds(objects, tmp_path):
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl is not installed (not packaged in Debian); the checks above ran")
    env = dict(os.environ, KUBECONFIG=str(tmp_path / "none"), HOME=str(tmp_path))
    p = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True,
                       env=env, timeout=120)
    assert p.returncode == 0, "kubectl kustomize: %s" % p.stderr
    import yaml
    built = [d for d in yaml.safe_load_all(p.stdout) if d]
    ns = load_yaml_all(KUSTOMIZATION)[0]["namespace"]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in built) == \
        sorted((o["kind"], o["metadata"]["name"]) for _, o in objects)
    for d in built:
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") == ns, d["metadata"]
        if d["kind"] in ("Deployment", "Job"):
            # kustomize must not have touched selectors or pod labels
            src = next(o for _, o in objects if o["kind"] == d["kind"] and
                       o["metadata"]["name"] == d["metadata"]["name"])
            assert d["spec"]["template"]["metadata"]["labels"] == pod_labels(src)
            if d["kind"] == "Deployment":
                assert d["spec"]["selector"] == src["spec"]["selector"]


# --- Deployments ---------------------------------------------------------------------------

def test_one_deployment_per_role(deployments, objects):
    for role, dep in deployments.items():
        name = dep["metadata"]["name"]
        spec = dep["spec"]
        assert isinstance(spec.get("replicas"), int) and spec["replicas"] >= 2, \
            "%s: replicas %s (want at least 2)" % (name, spec.get("replicas"))
        assert selects(spec["selector"], pod_labels(dep)), "%s: selector misses its pods" % name
        for other_role, other in deployments.items():
            if other is not dep:
                assert not selects(spec["selector"], pod_labels(other)), \
                    "%s's selector also matches the %s pods" % (name, other_role)
        strategy = spec.get("strategy") or {}
        assert strategy.get("type") == "RollingUpdate", "%s: strategy %s" % (name, strategy)
        ru = strategy.get("rollingUpdate") or {}
        assert ru.get("maxUnavailable") == 0 and ru.get("maxSurge", 0) not in (0, "0%"), \
            "%s: a rollout must start a new pod before stopping an old one: %s" % (name, ru)
        (c,) = containers(dep)
        assert c["args"] == ["--role=%s" % role], "%s: args %s" % (name, c["args"])
        assert "command" not in c, "%s: the image's ENTRYPOINT is the binary" % name
        env = container_env(objects, c)
        assert env.get("CHANCED_ROLE") == role, \
            "%s: CHANCED_ROLE must equal --role=%s (the image's healthcheck reads it)" % (
                name, role)


def test_images_are_all_the_same_release(objects, chanced_bin):
    images = {}
    for what, w in workloads(objects):
        for c in containers(w):
            images.setdefault(c["image"], []).append(what)
            assert c.get("imagePullPolicy") in ("IfNotPresent", None), \
                "%s: pull policy %s for a versioned tag" % (what, c.get("imagePullPolicy"))
    assert len(images) == 1, "the pods run different images: %s" % images
    image = next(iter(images))
    version = deploy.run_bin(chanced_bin, ["--version"]).stdout.split()[-1]
    name, _, tag = image.rpartition(":")
    assert name.split("/")[-1] == "chanced" and tag == version, \
        "image %s: want chanced:%s (the binary's version)" % (image, version)
    k = load_yaml_all(KUSTOMIZATION)[0]
    for entry in k.get("images") or []:
        assert entry["name"] == name, "kustomization images: %s is not %s" % (entry, name)


def dockerfile_uid():
    users = [a for i, a in deploy.dockerfile_stages()[-1]["body"] if i == "USER"]
    return int(users[-1].split(":")[0])


def test_pods_run_restricted(objects):
    """Pod Security Standard "restricted", and the image's own user: non-root, no privilege
    escalation, every capability dropped, the default seccomp profile, a read-only root file
    system, no API token, no host namespaces, only Secret and emptyDir volumes."""
    uid = dockerfile_uid()
    ns = of_kind(objects, "Namespace")
    for name, n in ns.items():
        assert n["metadata"].get("labels", {}).get(
            "pod-security.kubernetes.io/enforce") == "restricted", name
    for what, w in workloads(objects):
        spec = pod_spec(w)
        psc = spec.get("securityContext") or {}
        assert psc.get("runAsNonRoot") is True, what
        assert psc.get("runAsUser") == uid and psc.get("runAsGroup") == uid, \
            "%s: run as the image's user %d: %s" % (what, uid, psc)
        assert psc.get("fsGroup") == uid, "%s: fsGroup lets the user read its Secrets" % what
        assert (psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault", what
        assert spec.get("automountServiceAccountToken") is False, what
        assert spec.get("enableServiceLinks") is False, \
            "%s: Service link variables are named CHANCED_* after the Services" % what
        for v in spec.get("volumes") or []:
            assert set(v) - {"name"} <= {"secret", "emptyDir"}, "%s: volume %s" % (what, v)
            if "secret" in v:
                mode = v["secret"].get("defaultMode")
                assert mode is not None and mode & 0o007 == 0, \
                    "%s: Secret %s readable by others (defaultMode %s)" % (
                        what, v["secret"]["secretName"], oct(mode or 0o644))
        for c in containers(w):
            sc = c.get("securityContext") or {}
            assert sc.get("allowPrivilegeEscalation") is False, (what, c["name"])
            assert sc.get("readOnlyRootFilesystem") is True, (what, c["name"])
            assert sc.get("runAsNonRoot") is True, (what, c["name"])
            assert (sc.get("capabilities") or {}).get("drop") == ["ALL"], (what, c["name"])
            for m in c.get("volumeMounts") or []:
                vol = next(v for v in spec.get("volumes") if v["name"] == m["name"])
                if "secret" in vol:
                    assert m.get("readOnly") is True, "%s: %s mounted writable" % (what, m)


QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(m|Ki|Mi|Gi|Ti|k|M|G)?$")
UNIT = {None: 1, "m": 0.001, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 1024, "Mi": 1024 ** 2,
        "Gi": 1024 ** 3, "Ti": 1024 ** 4}


def quantity(text):
    m = QUANTITY.match(str(text))
    assert m, "not a resource quantity: %r" % text
    return float(m.group(1)) * UNIT[m.group(2)]


def test_every_container_has_requests_and_limits(objects):
    for what, w in workloads(objects):
        for c in containers(w):
            res = c.get("resources") or {}
            for kind in ("requests", "limits"):
                got = res.get(kind) or {}
                assert set(got) == {"cpu", "memory"}, "%s: %s %s" % (what, kind, got)
            for r in ("cpu", "memory"):
                assert quantity(res["requests"][r]) <= quantity(res["limits"][r]), \
                    "%s: %s request above its limit" % (what, r)
            # argon2id takes argon2_memory_kib per hash: the gateway and create-admin need room
            assert quantity(res["limits"]["memory"]) >= 128 * 1024 ** 2, what


def test_every_deployment_has_a_disruption_budget(objects, deployments):
    pdbs = of_kind(objects, "PodDisruptionBudget")
    for role, dep in deployments.items():
        mine = [n for n, p in pdbs.items() if selects(p["spec"]["selector"], pod_labels(dep))]
        assert len(mine) == 1, "%s: PodDisruptionBudgets %s" % (dep["metadata"]["name"], mine)
        spec = pdbs[mine[0]]["spec"]
        replicas = dep["spec"]["replicas"]
        assert ("maxUnavailable" in spec) != ("minAvailable" in spec), spec
        if "maxUnavailable" in spec:
            assert isinstance(spec["maxUnavailable"], int) and \
                1 <= spec["maxUnavailable"] < replicas, (role, spec)
        else:
            assert isinstance(spec["minAvailable"], int) and \
                1 <= spec["minAvailable"] < replicas, (role, spec)
    for n, p in pdbs.items():
        assert any(selects(p["spec"]["selector"], pod_labels(d)) for d in deployments.values()), \
            "PodDisruptionBudget %s protects no Deployment" % n


def shutdown_timeout_ms(objects, container, defaults):
    env = container_env(objects, container)
    return int(env.get("CHANCED_SHUTDOWN_TIMEOUT_MS", defaults["shutdown_timeout_ms"]))


def test_grace_period_outlasts_the_drain(objects, deployments, defaults):
    for role, dep in deployments.items():
        (c,) = containers(dep)
        grace_ms = pod_spec(dep).get("terminationGracePeriodSeconds", 30) * 1000
        pre = ((c.get("lifecycle") or {}).get("preStop") or {}).get("exec", {}).get("command")
        pre_ms = 0
        if pre:
            assert pre[0] in ("/bin/sleep", "/usr/bin/sleep") and len(pre) == 2, pre
            pre_ms = float(pre[1]) * 1000
        drain = shutdown_timeout_ms(objects, c, defaults)
        assert grace_ms > pre_ms + drain, \
            "%s: terminationGracePeriodSeconds %d s <= preStop %d ms + shutdown_timeout_ms %d" \
            % (role, grace_ms // 1000, pre_ms, drain)


def named_port(container, port):
    if isinstance(port, int):
        return port
    found = [p["containerPort"] for p in container.get("ports") or [] if p.get("name") == port]
    assert found, "port %r is not a port of container %s" % (port, container["name"])
    return found[0]


def test_probes_ask_the_role_health_port(objects, deployments, defaults):
    for role, dep in deployments.items():
        (c,) = containers(dep)
        env = container_env(objects, c)
        var = "CHANCED_" + HEALTH_KEY[role].upper()
        listen = env.get(var, defaults[HEALTH_KEY[role]])
        host, port = listen.rsplit(":", 1)
        assert host in ("0.0.0.0", "[::]"), \
            "%s: %s=%s: the kubelet probes the pod's address, not loopback" % (role, var, listen)
        want = {"readinessProbe": "/readyz", "livenessProbe": "/livez", "startupProbe": "/livez"}
        for probe, path in want.items():
            p = c.get(probe)
            if probe == "startupProbe" and p is None:
                continue
            assert p, "%s: no %s" % (role, probe)
            get = p.get("httpGet") or {}
            assert get.get("path") == path, "%s: %s asks %s" % (role, probe, get.get("path"))
            assert named_port(c, get.get("port")) == int(port), \
                "%s: %s on port %s, the role's health port is %s" % (role, probe,
                                                                    get.get("port"), port)
            assert get.get("scheme", "HTTP") == "HTTP"


def test_containers_declare_the_ports_they_listen_on(objects, deployments, defaults,
                                                     module_of):
    for role, dep in deployments.items():
        (c,) = containers(dep)
        env = container_env(objects, c)
        declared = {p["containerPort"] for p in c.get("ports") or []}
        listens = {k for k, mod in module_of.items() if mod == role and k.endswith("_listen")}
        for key in listens:
            value = env.get("CHANCED_" + key.upper(), defaults[key])
            assert int(value.rsplit(":", 1)[1]) in declared, \
                "%s: %s=%s is not a declared container port %s" % (role, key, value, declared)
        assert len(declared) == len(listens), "%s: ports %s, listeners %s" % (
            role, declared, listens)


@pytest.mark.parametrize("role", ROLES)
def test_role_environment_is_real(role, objects, deployments, chanced_bin, module_of,
                                  secret_keys, defaults, tmp_path):
    """What the pod gets (ConfigMaps, env, the files of its Secrets) passes `chanced
    --role=ROLE config check`, every variable a key this role reads; no key whose default is
    a loopback address is left at it; the RPC listener has mutual TLS."""
    dep = deployments[role]
    (c,) = containers(dep)
    env, files = localize_env(objects, dep, c, module_of, secret_keys, tmp_path)
    pending = pending_rpc_tls(module_of)
    dump = check_pod_env(chanced_bin, env, c["args"], ROLE_MODULES[role], module_of,
                         secret_keys, "Deployment %s" % dep["metadata"]["name"],
                         skip_keys=RPC_TLS if pending else ())
    given = {key_of_var(v, module_of, secret_keys)[0] for v in env if v.startswith("CHANCED_")}
    for key, default in defaults.items():
        if module_of[key] in ROLE_MODULES[role] and "127.0.0.1" in default:
            assert key in given, "%s: %s defaults to %s, wrong in a pod" % (role, key, default)
    # secrets only ever from files (never a literal in a manifest)
    for var in env:
        if var.startswith("CHANCED_"):
            key, is_file = key_of_var(var, module_of, secret_keys)
            assert key not in secret_keys or is_file, "%s: %s is a secret: use %s_FILE" % (
                role, var, var)
    # the internal links
    for key in (k for k in given if k in ("chance_listen", "logger_listen")):
        for tls in RPC_TLS:
            assert "CHANCED_%s" % tls.upper() in env or "CHANCED_%s_FILE" % tls.upper() in env, \
                "%s: %s on a pod address without %s" % (role, key, tls)
    if role == "gateway":
        for tls in RPC_TLS:
            assert any(v in env for v in ("CHANCED_" + tls.upper(),
                                          "CHANCED_%s_FILE" % tls.upper())), \
                "the gateway calls chance and the logger without %s" % tls
    if pending:
        pytest.xfail("the binary has no %s yet (issue 10): the rest was checked" % "/".join(
            RPC_TLS))
    for tls in RPC_TLS:
        assert dump.get(tls) and all(s == "env" for _, s in dump[tls]), (role, tls, dump.get(tls))


def test_credentials_directory_reads_optional_secrets(objects, deployments, chanced_bin,
                                                      module_of, secret_keys, tmp_path):
    """The gateway's Secret is also its CREDENTIALS_DIRECTORY: a claim_secret added to the
    Secret is read without another variable (the daemon's systemd-credential mechanism)."""
    dep = deployments["gateway"]
    (c,) = containers(dep)
    env, _ = localize_env(objects, dep, c, module_of, secret_keys, tmp_path)
    assert "CREDENTIALS_DIRECTORY" in env, "the gateway sets no CREDENTIALS_DIRECTORY"
    (Path(env["CREDENTIALS_DIRECTORY"]) / "claim_secret").write_text(
        SECRET_VALUES["claim_secret"] + "\n")
    if pending_rpc_tls(module_of):
        env = {k: v for k, v in env.items() if "RPC_TLS" not in k}
    p, dump = deploy.config_check(chanced_bin, c["args"], env)
    assert p.returncode == 0, p.stderr
    assert dump.get("claim_secret") == [("(redacted)", "credential")], dump.get("claim_secret")
    assert dump.get("postgres_url") == [("(redacted)", "env")], dump.get("postgres_url")


def test_configmaps_hold_one_key_table_each(objects, module_of, secret_keys):
    """chanced-<module>: only keys of that table (`chanced config markdown` names it), never a
    secret; each role reads only ConfigMaps of tables it uses."""
    pending = pending_rpc_tls(module_of)
    for name, cm in of_kind(objects, "ConfigMap").items():
        assert name.startswith("chanced-"), name
        module = name[len("chanced-"):]
        assert module in set(module_of.values()), "ConfigMap %s names no key table" % name
        for var in cm.get("data") or {}:
            assert var.startswith("CHANCED_") and var != "CHANCED_ROLE", (name, var)
            key, is_file = key_of_var(var, module_of, secret_keys)
            if pending and key in RPC_TLS:
                continue
            assert key in module_of, "ConfigMap %s: the binary has no key %s" % (name, key)
            assert module_of[key] == module, "ConfigMap %s: %s is a key of %s" % (
                name, key, module_of[key])
            assert key not in secret_keys and not is_file, \
                "ConfigMap %s: %s is a secret: it belongs in a Secret" % (name, key)
    for what, w in workloads(objects):
        role = role_of(w) or "gateway"  # the Jobs are gateway subcommands
        for c in containers(w):
            for src in c.get("envFrom") or []:
                module = src["configMapRef"]["name"][len("chanced-"):]
                assert module in ROLE_MODULES[role], "%s reads chanced-%s" % (what, module)


# --- Services ------------------------------------------------------------------------------

def service_deployment(svc, deployments):
    sel = svc["spec"].get("selector") or {}
    found = [r for r, d in deployments.items() if selects({"matchLabels": sel}, pod_labels(d))]
    assert len(found) == 1, "Service %s selects %s" % (svc["metadata"]["name"], found)
    return found[0]


def test_services_reach_their_pods(objects, deployments):
    for name, svc in of_kind(objects, "Service").items():
        role = service_deployment(svc, deployments)
        (c,) = containers(deployments[role])
        for port in svc["spec"]["ports"]:
            named_port(c, port.get("targetPort", port["port"]))
        t = svc["spec"].get("type", "ClusterIP")
        assert t == "ClusterIP", "Service %s is %s: the Ingress is the public entry" % (name, t)


def test_gateway_finds_every_peer_by_a_headless_service(objects, deployments, defaults):
    services = of_kind(objects, "Service")
    gw_env = container_env(objects, containers(deployments["gateway"])[0])
    for peer, (addr_key, listen_key) in PEERS.items():
        addr = gw_env.get("CHANCED_" + addr_key.upper())
        assert addr, "the gateway sets no %s" % addr_key
        assert "," not in addr, "%s: one DNS name resolving to every pod" % addr_key
        host, port = addr.rsplit(":", 1)
        assert host in services, "%s=%s: no Service %s" % (addr_key, addr, host)
        svc = services[host]
        assert service_deployment(svc, deployments) == peer, "%s names %s" % (addr_key, host)
        assert svc["spec"].get("clusterIP") == "None", \
            "%s: Service %s must be headless so its name resolves to every %s pod" % (
                addr_key, host, peer)
        assert not svc["spec"].get("publishNotReadyAddresses"), \
            "only ready %s pods may be in the answer" % peer
        (c,) = containers(deployments[peer])
        listen = container_env(objects, c).get("CHANCED_" + listen_key.upper(),
                                               defaults[listen_key])
        sport = [p for p in svc["spec"]["ports"] if p["port"] == int(port)]
        assert sport and named_port(c, sport[0].get("targetPort", sport[0]["port"])) == int(
            listen.rsplit(":", 1)[1]), "%s=%s, %s listens on %s" % (addr_key, addr, peer, listen)
        # and a virtual IP for other in-cluster clients, internal too
        others = [n for n, s in services.items() if n != host and
                  service_deployment(s, deployments) == peer]
        assert others, "no ClusterIP Service for %s" % peer


def test_ingress_is_the_only_way_in(objects, deployments):
    services = of_kind(objects, "Service")
    ingresses = of_kind(objects, "Ingress")
    assert len(ingresses) == 1
    ing = next(iter(ingresses.values()))
    assert ing["spec"].get("tls"), "the Ingress terminates TLS (the gateway serves plain HTTP)"
    backends = [p["backend"]["service"] for r in ing["spec"]["rules"]
                for p in r["http"]["paths"]]
    for b in backends:
        svc = services.get(b["name"])
        assert svc, "Ingress backend %s is not a Service" % b["name"]
        assert service_deployment(svc, deployments) == "gateway"
        port = [p for p in svc["spec"]["ports"]
                if p.get("name") == b["port"].get("name") or p["port"] == b["port"].get("number")]
        assert port, "Ingress backend port %s" % b["port"]
        (c,) = containers(deployments["gateway"])
        env = container_env(objects, c)
        assert named_port(c, port[0]["targetPort"]) == int(
            env["CHANCED_HTTP_LISTEN"].rsplit(":", 1)[1]), "the Ingress misses http_listen"
    env = container_env(objects, containers(deployments["gateway"])[0])
    assert env.get("CHANCED_TRUST_FORWARDED_FOR") == "true", \
        "behind the Ingress the client address is in X-Forwarded-For"


def test_network_policies_let_only_gateways_call_the_peers(objects, deployments):
    policies = of_kind(objects, "NetworkPolicy")
    for peer in PEERS:
        dep = deployments[peer]
        (c,) = containers(dep)
        mine = [p for p in policies.values()
                if selects(p["spec"]["podSelector"], pod_labels(dep))]
        assert len(mine) == 1, "%s: NetworkPolicies %s" % (peer, [p["metadata"]["name"]
                                                                 for p in mine])
        spec = mine[0]["spec"]
        assert spec.get("policyTypes") == ["Ingress"]
        rpc_port = named_port(c, "rpc")
        for rule in spec["ingress"]:
            ports = [named_port(c, p["port"]) for p in rule.get("ports") or []]
            assert ports, "%s: a rule without ports opens every port" % peer
            if rpc_port in ports:
                peers = rule.get("from") or []
                assert peers and all(
                    set(f) == {"podSelector"} and selects(f["podSelector"],
                                                          pod_labels(deployments["gateway"]))
                    and not selects(f["podSelector"], pod_labels(dep)) for f in peers), \
                    "%s: its RPC port is open to more than the gateway pods: %s" % (peer, rule)


# --- Jobs ----------------------------------------------------------------------------------

def job_with(jobs, first_args):
    found = [j for j in jobs.values()
             if containers(j)[0]["args"][:len(first_args)] == first_args]
    assert len(found) == 1, "Jobs running %s: %s" % (first_args, [j["metadata"]["name"]
                                                                  for j in found])
    return found[0]


def test_jobs_migrate_and_create_the_admin(jobs, chanced_bin):
    migrate = job_with(jobs, ["migrate"])
    admin = job_with(jobs, ["admin", "create-user"])
    usage = deploy.run_bin(chanced_bin, ["--help"]).stdout
    line = next((ln for ln in usage.splitlines() if "admin create-user" in ln), "")
    args = containers(admin)[0]["args"]
    for flag in (a for a in args[2:] if a.startswith("--")):
        assert flag in line, "create-admin uses %s, not in: %s" % (flag, line.strip())
    assert "--password-file" in args and "--if-missing" in args, args
    assert containers(migrate)[0]["args"] == ["migrate"]
    for job in (migrate, admin):
        name = job["metadata"]["name"]
        spec = job["spec"]
        assert pod_spec(job).get("restartPolicy") == "Never", name
        assert isinstance(spec.get("backoffLimit"), int) and spec["backoffLimit"] >= 1, name
        assert spec.get("activeDeadlineSeconds"), "%s: a Job that hangs must end" % name
        rules = (spec.get("podFailurePolicy") or {}).get("rules") or []
        codes = {v for r in rules if r.get("action") == "FailJob"
                 for v in (r.get("onExitCodes") or {}).get("values", [])
                 if (r.get("onExitCodes") or {}).get("operator") == "In" and
                 r["onExitCodes"].get("containerName") == containers(job)[0]["name"]}
        assert codes == PERMANENT_EXIT, "%s: fail at once on exit codes %s, not %s" % (
            name, sorted(PERMANENT_EXIT), sorted(codes))
    # the password file is a mounted Secret's file
    pw = args[args.index("--password-file") + 1]
    mounts = secret_mounts(admin, containers(admin)[0])
    assert any(pw.startswith(m + "/") for m in mounts), "%s is no mounted Secret" % pw


def localized_job(objects, job, module_of, secret_keys, tmp_path, postgres_url):
    c = containers(job)[0]
    env, files = localize_env(objects, job, c, module_of, secret_keys, tmp_path)
    url = tmp_path / "postgres_url"
    url.write_text(postgres_url + "\n")
    assert "CHANCED_POSTGRES_URL_FILE" in env, job["metadata"]["name"]
    env["CHANCED_POSTGRES_URL_FILE"] = str(url)
    args = list(c["args"])
    for i, a in enumerate(args):
        for mount in secret_mounts(job, c):
            if a.startswith(mount + "/"):
                local = tmp_path / ("arg%d" % i)
                local.write_text("correct horse battery staple\n")
                args[i] = str(local)
    return env, args


def test_jobs_run_for_real(objects, jobs, chanced_bin, module_of, secret_keys,
                           fresh_postgres_url, tmp_path):
    """The two Jobs' command lines and environments, against an empty database: migrate, then
    the first admin twice (idempotent)."""
    migrate = job_with(jobs, ["migrate"])
    admin = job_with(jobs, ["admin", "create-user"])
    for job, runs in ((migrate, 1), (admin, 2)):
        d = tmp_path / job["metadata"]["name"]
        d.mkdir()
        env, args = localized_job(objects, job, module_of, secret_keys, d, fresh_postgres_url)
        check_pod_env(chanced_bin, {k: v for k, v in env.items()}, [], ROLE_MODULES["gateway"],
                      module_of, secret_keys, "Job %s" % job["metadata"]["name"])
        for attempt in range(runs):
            p = deploy.run_bin(chanced_bin, args, env=env, timeout=120)
            assert p.returncode == 0, "%s (run %d): exit %d\n%s%s" % (
                job["metadata"]["name"], attempt + 1, p.returncode, p.stdout, p.stderr)
    import psycopg2
    conn = psycopg2.connect(fresh_postgres_url, connect_timeout=10)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT max(version) FROM schema_migrations")
            assert cur.fetchone()[0] >= 1
            cur.execute("SELECT role FROM users WHERE username = %s",
                        (containers(admin)[0]["args"][3],))
            assert cur.fetchall() == [("admin",)]
    finally:
        conn.close()


# --- the README: the Secrets to create -----------------------------------------------------

def readme_commands():
    """The shell commands of README.md's ```sh blocks, continuation lines joined."""
    text = K8S_README.read_text()
    out = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        cur = ""
        for line in block.splitlines():
            s = line.strip()
            if s.endswith("\\"):
                cur += s[:-1] + " "
                continue
            cur += s
            if cur and not cur.startswith("#"):
                out.append(cur)
            cur = ""
    return out


def readme_secrets():
    """{secret name: set of keys} from `kubectl ... create secret generic|tls NAME ...`"""
    out = {}
    for cmd in readme_commands():
        words = shlex.split(cmd, comments=True)
        if words[:1] != ["kubectl"] or "secret" not in words:
            continue
        i = words.index("secret")
        if words[i - 1] != "create":
            continue
        kind, name = words[i + 1], words[i + 2]
        keys = set()
        for w in words[i + 3:]:
            for opt in ("--from-file=", "--from-literal="):
                if w.startswith(opt):
                    spec = w[len(opt):]
                    assert "=" in spec, "%s: name the key: %s=PATH" % (name, w)
                    keys.add(spec.split("=", 1)[0])
        if kind == "tls":
            keys |= {"tls.crt", "tls.key"}
        out[name] = keys
    return out


def test_readme_creates_every_secret_the_pods_read(objects):
    made = readme_secrets()
    assert made, "deploy/kubernetes/README.md shows no `kubectl create secret`"
    needed = {}
    for what, w in workloads(objects):
        c = containers(w)[0]
        env = container_env(objects, c)
        mounts = secret_mounts(w, c)
        vols = {v["name"]: v for v in pod_spec(w).get("volumes") or []}
        for v in vols.values():
            if "secret" in v:
                for item in v["secret"].get("items") or []:
                    needed.setdefault(v["secret"]["secretName"], set()).add(item["key"])
        for value in list(env.values()) + list(c.get("args") or []):
            for mount, (secret, _) in mounts.items():
                if value.startswith(mount + "/"):
                    needed.setdefault(secret, set()).add(value[len(mount) + 1:])
        for mount, (secret, _) in mounts.items():
            needed.setdefault(secret, set())
    for ing in of_kind(objects, "Ingress").values():
        for t in ing["spec"].get("tls") or []:
            needed.setdefault(t["secretName"], set()).update({"tls.crt", "tls.key"})
    for secret, keys in needed.items():
        assert secret in made, "README.md never creates Secret %s (needs %s)" % (
            secret, sorted(keys))
        assert keys <= made[secret], "README.md: Secret %s lacks %s" % (
            secret, sorted(keys - made[secret]))


def test_docs_name_real_variables_and_link_each_other(module_of, secret_keys):
    var = re.compile(r"\bCHANCED_[A-Z0-9_]*[A-Z0-9]\b")
    for f in (K8S_README, SCALE_DOC):
        text = f.read_text()
        for v in set(var.findall(text)):
            if v == "CHANCED_ROLE":
                continue
            key, _ = key_of_var(v, module_of, secret_keys)
            if key in RPC_TLS and pending_rpc_tls(module_of):
                continue
            assert key in module_of, "%s names %s: the binary has no key %s" % (f.name, v, key)
    scale = SCALE_DOC.read_text()
    assert "docker compose up --scale chance=3 --scale logger=2" in scale
    assert "deploy/kubernetes" in scale
    for f in (ROOT / "README.md", ROOT / "docs" / "deploy.md"):
        assert "scale.md" in f.read_text(), "%s does not link docs/scale.md" % f.name

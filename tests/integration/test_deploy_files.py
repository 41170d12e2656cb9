"""Checks of the deployment files in deploy/ (issue 4): the Kubernetes manifests, the systemd
unit, the Containerfile, and above all that every regpin config.json they carry is one that
this regpin accepts and starts with.

- Every YAML file under deploy/kubernetes parses (multi-document); every kustomization lists
  files that exist, and every YAML file in its folder is listed.
- Workloads: probes on /healthz and /readyz of the admin port, the security context
  (non-root, read-only root, no privilege escalation, no capabilities, RuntimeDefault
  seccomp), resource requests; the central StatefulSet's PVC, node-local's hostNetwork or
  hostPort, node-config's hostPath.
- Configs: each config.json embedded in a ConfigMap, deploy/systemd/config.json and
  deploy/container/config.json go through `regpin serve --config F --check-config`, then are
  started for real (on loopback, offline, in a temp data folder) and their probes answered.
  Secret files: the configs name files that exist only where they are deployed (a Secret
  mounted in the pod, a systemd credential). The test does not invent them: it finds the
  Secret volume (or LoadCredential= line) that provides each path, writes that content to a
  temp file and points the config there. A path nothing provides is a failure, so the test
  also proves that the ConfigMap, the Secret and the mounts agree.
- node-config: the container's `regpin hosts-toml` arguments (after Kubernetes' $(VAR)
  expansion) are run against a temp folder.
- With `kubectl` 1.21+ on PATH (it carries kustomize v4+), each kustomization is built and the
  built stacks are checked too, including the fail-closed component; without it those tests
  skip.
- Containerfile: never libboost-dev, the runtime packages cover `ldd regpin`, non-root USER.
- systemd unit: the sandboxing keys; `systemd-analyze verify` when it is installed.

YAML is read with PyYAML (Debian package python3-yaml). If the Python running the tests
lacks it (a pyenv Python, say), the files are parsed by /usr/bin/python3 in a subprocess.

    REGPIN_BIN=../../build/regpin python3 -m unittest -v test_deploy_files
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.request
from pathlib import Path

from harness import free_port
from harness import regpin_binary as regpin_bin

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
SYSTEMD_UNIT = DEPLOY / "systemd" / "regpin.service"
SYSTEMD_CONFIG = DEPLOY / "systemd" / "config.json"
CONTAINER_CONFIG = DEPLOY / "container" / "config.json"
CONTAINERFILE = DEPLOY / "Containerfile"

PUBLIC_REGISTRIES = ["docker.io", "ghcr.io", "quay.io", "registry.k8s.io"]
FILE_KEYS = ("token_file", "password_file", "secret_file", "ca_file")
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Pod")
FAKE_HOST_IP = "10.11.12.13"
# regpin's default shutdown_grace_s (config/README.md): the time a SIGTERM leaves transfers in
# progress before regpin exits; the kubelet's and systemd's stop timeouts must exceed it.
DEFAULT_SHUTDOWN_GRACE_S = 25


# --- YAML ------------------------------------------------------------------------------------

_YAML_TO_JSON = (
    "import json, sys, yaml\n"
    "json.dump([list(yaml.safe_load_all(open(p, encoding='utf-8'))) for p in sys.argv[1:]],"
    " sys.stdout)\n"
)


def parse_yaml_texts(texts: list[str]) -> list[list]:
    """Each text's documents (empty documents dropped)."""
    try:
        import yaml  # type: ignore

        docs = [list(yaml.safe_load_all(t)) for t in texts]
    except ImportError:
        system_python = "/usr/bin/python3"
        if not os.access(system_python, os.X_OK):
            raise RuntimeError("PyYAML is needed: apt-get install python3-yaml")
        with tempfile.TemporaryDirectory() as d:
            paths = []
            for i, t in enumerate(texts):
                p = Path(d) / f"{i}.yaml"
                p.write_text(t, encoding="utf-8")
                paths.append(str(p))
            r = subprocess.run([system_python, "-c", _YAML_TO_JSON, *paths],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(
                    "PyYAML is needed (apt-get install python3-yaml); /usr/bin/python3 said:\n"
                    + r.stderr)
            docs = json.loads(r.stdout)
    return [[d for d in file_docs if d is not None] for file_docs in docs]


def yaml_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*") if p.suffix in (".yaml", ".yml"))


_PARSED: dict[Path, list] = {}


def documents(path: Path) -> list:
    if not _PARSED:
        files = yaml_files()
        for p, docs in zip(files, parse_yaml_texts([p.read_text(encoding="utf-8") for p in files])):
            _PARSED[p] = docs
    return _PARSED[path]


def manifests_in(folder: Path) -> list[dict]:
    """The Kubernetes objects of one folder's files (not its kustomization)."""
    out = []
    for p in yaml_files():
        if p.parent == folder and p.name != "kustomization.yaml":
            out += [d for d in documents(p) if isinstance(d, dict) and "kind" in d]
    return out


def kustomization_dirs() -> list[Path]:
    return sorted(p.parent for p in K8S.rglob("kustomization.yaml"))


def kubectl_kustomize(folder: Path) -> list[dict]:
    r = subprocess.run(["kubectl", "kustomize", str(folder)], capture_output=True, text=True,
                       timeout=120)
    if r.returncode != 0:
        raise AssertionError(f"kubectl kustomize {folder} failed:\n{r.stderr}")
    return [d for d in parse_yaml_texts([r.stdout])[0] if isinstance(d, dict)]


# --- Kubernetes helpers ----------------------------------------------------------------------

def pod_spec(obj: dict) -> dict:
    return obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]


def all_containers(spec: dict) -> list[tuple[str, dict]]:
    return ([("initContainers", c) for c in spec.get("initContainers", [])] +
            [("containers", c) for c in spec.get("containers", [])])


def container_port(container: dict, port) -> int:
    if isinstance(port, int):
        return port
    if isinstance(port, str) and port.isdigit():
        return int(port)
    for p in container.get("ports", []):
        if p.get("name") == port:
            return int(p["containerPort"])
    raise AssertionError(f"container {container['name']}: no port named {port!r}")


def is_regpin_server(container: dict) -> bool:
    argv = list(container.get("command", [])) + list(container.get("args", []))
    return "serve" in argv


def selector_matches(selector: dict, labels: dict) -> bool:
    """Whether a LabelSelector (matchLabels, matchExpressions) selects these labels."""
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def systemd_seconds(span: str) -> float:
    """A systemd time span ("30s", "1min 30s", "90", "infinity") in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "second": 1, "seconds": 1, "ms": 0.001, "msec": 0.001,
             "m": 60, "min": 60, "minute": 60, "minutes": 60, "h": 3600, "hr": 3600,
             "hour": 3600, "hours": 3600}
    span = span.strip()
    if span == "infinity":
        return float("inf")
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)\s*", span)
    assert parts and "".join(n + u for n, u in parts) == span.replace(" ", ""), \
        f"not a time span: {span!r}"
    total = 0.0
    for number, unit in parts:
        assert unit in units, f"unknown time unit in {span!r}"
        total += float(number) * units[unit]
    return total


def expand_k8s_vars(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion ($$ escapes; unknown references stay as written)."""
    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", sub, text)


def container_env(container: dict) -> dict[str, str]:
    """The container's environment as the kubelet would build it, with a made-up node IP."""
    fields = {"status.hostIP": FAKE_HOST_IP, "status.podIP": "10.244.0.9",
              "spec.nodeName": "node-1", "metadata.name": "pod-1",
              "metadata.namespace": "regpin"}
    env: dict[str, str] = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = expand_k8s_vars(str(e["value"]), env)
        elif "fieldRef" in e.get("valueFrom", {}):
            env[e["name"]] = fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def security_problems(where: str, spec: dict, container: dict) -> list[str]:
    """What is missing from a container's hardening. Root is allowed only for an init
    container that writes a node's folder (hostPath), and with no capability but CHOWN."""
    sc = container.get("securityContext", {})
    pod_sc = spec.get("securityContext", {})
    name = f"{where} {container['name']}"
    problems = []
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.append(f"{name}: readOnlyRootFilesystem is not true")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{name}: allowPrivilegeEscalation is not false")
    if sc.get("privileged"):
        problems.append(f"{name}: privileged")
    caps = sc.get("capabilities", {})
    if "ALL" not in caps.get("drop", []):
        problems.append(f"{name}: capabilities.drop lacks ALL")
    seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
    if seccomp.get("type") != "RuntimeDefault":
        problems.append(f"{name}: seccompProfile is not RuntimeDefault")
    if not container.get("resources", {}).get("requests"):
        problems.append(f"{name}: no resources.requests")
    run_as_non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
    uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
    if run_as_non_root is not True or uid == 0:
        host_paths = {v["name"] for v in spec.get("volumes", []) if "hostPath" in v}
        mounts_host = any(m["name"] in host_paths for m in container.get("volumeMounts", []))
        if where != "initContainers" or not mounts_host:
            problems.append(f"{name}: runs as root (runAsNonRoot is not true) but is not an "
                            "init container writing a hostPath")
        if set(caps.get("add", [])) - {"CHOWN"}:
            problems.append(f"{name}: root with capabilities {caps.get('add')}")
    elif uid is None:
        problems.append(f"{name}: no runAsUser (the image's USER is not checked here)")
    return problems


def probe_problems(container: dict, admin_port: int) -> list[str]:
    problems = []
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container.get(probe, {}).get("httpGet")
        if not get:
            problems.append(f"{container['name']}: no {probe} httpGet")
            continue
        if get.get("path") != path:
            problems.append(f"{container['name']}: {probe} path is {get.get('path')}, not {path}")
        if container_port(container, get.get("port")) != admin_port:
            problems.append(f"{container['name']}: {probe} port is not the admin port "
                            f"{admin_port}")
    return problems


def listen_port(hostport: str) -> int:
    return int(hostport.rsplit(":", 1)[1])


def listen_host(hostport: str) -> str:
    return hostport.rsplit(":", 1)[0].strip("[]")


# --- regpin configs and the files they name ---------------------------------------------------

def referenced_files(config, path="") -> list[tuple[str, str]]:
    """(json path, file path) of every *_file key."""
    out = []
    if isinstance(config, dict):
        for k, v in config.items():
            if k in FILE_KEYS and isinstance(v, str):
                out.append((f"{path}.{k}".lstrip("."), v))
            else:
                out += referenced_files(v, f"{path}.{k}")
    elif isinstance(config, list):
        for i, v in enumerate(config):
            out += referenced_files(v, f"{path}[{i}]")
    return out


def rewrite_files(config, mapping: dict[str, str]):
    config = copy.deepcopy(config)

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k in FILE_KEYS and isinstance(v, str):
                    node[k] = mapping[v]
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(config)
    return config


class DeployedConfig:
    """A regpin config.json as deployed, with the files its deployment provides."""

    def __init__(self, name: str, config: dict, provided: dict[str, bytes]):
        self.name = name
        self.config = config
        self.provided = provided  # path in the deployment -> content

    def materialize(self, directory: Path) -> tuple[dict, list[str]]:
        """The config with provided files written under directory; problems for the rest."""
        mapping, problems = {}, []
        for i, (key, path) in enumerate(referenced_files(self.config)):
            if path not in self.provided:
                problems.append(f"{self.name}: {key} = {path}, which nothing in the deployment "
                                "provides")
                continue
            local = directory / f"file-{i}"
            local.write_bytes(self.provided[path])
            local.chmod(0o600)
            mapping[path] = str(local)
        if problems:
            return self.config, problems
        return rewrite_files(self.config, mapping), []


def secret_contents(secret: dict) -> dict[str, bytes]:
    out = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
    out.update({k: v.encode() for k, v in (secret.get("stringData") or {}).items()})
    return out


def configs_from_manifests(objs: list[dict], label: str) -> list[tuple[DeployedConfig, dict, dict]]:
    """(config, workload, container) for every ConfigMap config.json a regpin container reads."""
    configmaps = {o["metadata"]["name"]: o for o in objs if o["kind"] == "ConfigMap"}
    secrets = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Secret"}
    out = []
    for w in objs:
        if w["kind"] not in WORKLOAD_KINDS:
            continue
        spec = pod_spec(w)
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for _, c in all_containers(spec):
            if not is_regpin_server(c):
                continue
            argv = list(c.get("command", [])) + list(c.get("args", []))
            config_path = argv[argv.index("--config") + 1]
            config, provided = None, {}
            for m in c.get("volumeMounts", []):
                v = volumes.get(m["name"], {})  # absent: a volumeClaimTemplate
                mount = m["mountPath"].rstrip("/")
                if "configMap" in v:
                    cm = configmaps.get(v["configMap"]["name"])
                    assert cm is not None, f"{label}: ConfigMap {v['configMap']['name']} missing"
                    for key, text in cm.get("data", {}).items():
                        if f"{mount}/{key}" == config_path:
                            config = json.loads(text)
                if "secret" in v:
                    sec = secrets.get(v["secret"]["secretName"])
                    assert sec is not None, f"{label}: Secret {v['secret']['secretName']} missing"
                    for key, content in secret_contents(sec).items():
                        provided[f"{mount}/{key}"] = content
            assert config is not None, (
                f"{label}: {w['kind']}/{w['metadata']['name']} reads --config {config_path}, "
                "which no mounted ConfigMap provides")
            out.append((DeployedConfig(f"{label} {w['kind']}/{w['metadata']['name']}", config,
                                       provided), w, c))
    return out


def systemd_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            sections.setdefault(current, [])
            continue
        assert current is not None, f"{path}: key outside a section: {line}"
        key, _, value = line.partition("=")
        sections[current].append((key.strip(), value.strip()))
    return sections


def systemd_config() -> DeployedConfig:
    service = systemd_unit(SYSTEMD_UNIT)["Service"]
    provided = {}
    for key, value in service:
        if key == "LoadCredential":
            cred_id, _, _source = value.partition(":")
            provided[f"/run/credentials/{SYSTEMD_UNIT.name}/{cred_id}"] = b"x" * 32 + b"\n"
    return DeployedConfig("deploy/systemd/config.json", json.loads(SYSTEMD_CONFIG.read_text()),
                          provided)


# --- running regpin ----------------------------------------------------------------------------

def check_config(config: dict, directory: Path) -> subprocess.CompletedProcess:
    f = directory / "config.json"
    f.write_text(json.dumps(config, indent=2))
    return subprocess.run([regpin_bin(), "serve", "--config", str(f), "--check-config"],
                          capture_output=True, text=True, timeout=30)


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def start_and_probe(config: dict, directory: Path, probe_paths: list[str]) -> dict[str, int]:
    """Starts regpin with config, moved to loopback ports, a temp data folder and offline;
    answers {path: status} of the admin listener's probe paths once /healthz answers."""
    config = copy.deepcopy(config)
    config["listen"] = f"127.0.0.1:{free_port()}"
    admin_port = free_port()
    config.setdefault("admin", {})["listen"] = f"127.0.0.1:{admin_port}"
    config["data_dir"] = str(directory / "data")
    config["offline"] = True
    f = directory / "run-config.json"
    f.write_text(json.dumps(config, indent=2))
    log = open(directory / "regpin.log", "wb")
    proc = subprocess.Popen([regpin_bin(), "serve", "--config", str(f)], stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"regpin exited with {proc.returncode}:\n"
                                     + (directory / "regpin.log").read_text(errors="replace"))
            try:
                if http_status(f"http://127.0.0.1:{admin_port}/healthz") == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("regpin's /healthz did not answer 200 within 20 s:\n"
                                     + (directory / "regpin.log").read_text(errors="replace"))
            time.sleep(0.05)
        return {p: http_status(f"http://127.0.0.1:{admin_port}{p}") for p in probe_paths}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


# --- node configuration ------------------------------------------------------------------

def run_hosts_toml(tc: unittest.TestCase, spec: dict, expect_mirror: str | None = None,
                   expect_fail_closed: bool = False) -> int:
    """Runs every `regpin hosts-toml` container of spec against a temp folder."""
    host_paths = {v["name"]: v["hostPath"]["path"] for v in spec.get("volumes", [])
                  if "hostPath" in v}
    runs = 0
    for _, c in all_containers(spec):
        argv = list(c.get("command", [])) + list(c.get("args", []))
        if "hosts-toml" not in argv:
            continue
        runs += 1
        env = container_env(c)
        argv = [expand_k8s_vars(a, env) for a in argv]
        out = argv[argv.index("-o") + 1]
        mounts = {m["mountPath"].rstrip("/"): host_paths.get(m["name"])
                  for m in c.get("volumeMounts", [])}
        tc.assertEqual(mounts.get(out.rstrip("/")), "/etc/containerd/certs.d",
                       f"-o {out} is not the node's /etc/containerd/certs.d (hostPath)")
        registries = [argv[i + 1] for i, a in enumerate(argv) if a == "--registry"]
        tc.assertEqual(sorted(registries), sorted(PUBLIC_REGISTRIES))
        mirror = argv[argv.index("--mirror") + 1]
        tc.assertNotIn("$(", mirror, "an undefined variable in --mirror")
        if expect_mirror:
            tc.assertEqual(mirror, expect_mirror)
        tc.assertEqual("--fail-closed" in argv, expect_fail_closed)
        with tempfile.TemporaryDirectory() as d:
            i = argv.index("hosts-toml")
            args = argv[i:]
            args[args.index("-o") + 1] = d
            r = subprocess.run([regpin_bin(), *args], capture_output=True, text=True,
                               timeout=30)
            tc.assertEqual(r.returncode, 0, r.stderr)
            for reg in registries:
                text = (Path(d) / reg / "hosts.toml").read_text()
                tc.assertIn(f'[host."{mirror}"]', text)
                # the pull audit names the node (downward API spec.nodeName)
                tc.assertIn(f'[host."{mirror}".header]', text)
                tc.assertIn('X-Regpin-Node = ["node-1"]', text)
                server = re.search(r'^server = "([^"]+)"', text, re.M).group(1)
                if expect_fail_closed:
                    tc.assertEqual(server, mirror)
                else:
                    tc.assertNotEqual(server, mirror)
    return runs


def with_patched_config(base: str, patch_folder: str) -> list[dict]:
    """The base folder's objects, its ConfigMap replaced by the shape's config patch."""
    (patch,) = [o for o in manifests_in(K8S / patch_folder) if o["kind"] == "ConfigMap"]
    objs = [o for o in manifests_in(K8S / base)
            if not (o["kind"] == "ConfigMap" and o["metadata"]["name"] == patch["metadata"]["name"])]
    return objs + [patch]


def shutdown_grace_s(config: dict) -> int:
    return int(config.get("shutdown_grace_s", DEFAULT_SHUTDOWN_GRACE_S))


class TempDirTest(unittest.TestCase):
    def tmpdir(self) -> Path:
        d = Path(tempfile.mkdtemp(prefix="regpin-deploy-"))
        self.addCleanup(shutil.rmtree, d, ignore_errors=True)
        return d


# --- tests ---------------------------------------------------------------------------------

class ManifestFilesTest(unittest.TestCase):
    def test_every_yaml_file_parses_into_named_objects(self):
        files = yaml_files()
        self.assertGreaterEqual(len(files), 10, files)
        for p in files:
            docs = documents(p)
            with self.subTest(file=str(p.relative_to(REPO_ROOT))):
                self.assertTrue(docs, "no YAML document")
                for d in docs:
                    self.assertIsInstance(d, dict)
                    self.assertIn("apiVersion", d)
                    self.assertIn("kind", d)
                    if d["kind"] not in ("Kustomization", "Component"):
                        self.assertTrue(d.get("metadata", {}).get("name"), d)

    def test_kustomizations_list_files_that_exist_and_every_file_is_listed(self):
        dirs = kustomization_dirs()
        self.assertLessEqual(
            {".", "central", "node-local", "node-config", "components/fail-closed"},
            {str(d.relative_to(K8S)) for d in dirs})
        for d in dirs:
            (k,) = documents(d / "kustomization.yaml")
            with self.subTest(kustomization=str(d.relative_to(REPO_ROOT))):
                listed = list(k.get("resources", [])) + list(k.get("components", []))
                listed += [p["path"] for p in k.get("patches", []) if "path" in p]
                listed += list(k.get("patchesStrategicMerge", []))
                for entry in listed:
                    target = (d / entry).resolve()
                    self.assertTrue(target.exists(), f"{entry} does not exist")
                    if target.is_dir():
                        self.assertTrue((target / "kustomization.yaml").is_file(),
                                        f"{entry} is a folder without kustomization.yaml")
                for p in d.iterdir():
                    if p.suffix in (".yaml", ".yml") and p.name != "kustomization.yaml":
                        self.assertIn(p.name, listed, f"{p.name} is in the folder but not listed")
                if k["kind"] == "Kustomization":
                    images = {i["name"] for i in k.get("images", [])}
                    self.assertIn("regpin", images, "no images: entry to override regpin's image")


class WorkloadTest(unittest.TestCase):
    def workloads(self, folder: str, kind: str) -> list[dict]:
        return [o for o in manifests_in(K8S / folder) if o["kind"] == kind]

    def test_every_container_is_hardened_and_has_requests(self):
        found = 0
        for folder in ("central", "node-local", "node-config", "tools", "components/etcd"):
            for w in manifests_in(K8S / folder):
                if w["kind"] not in WORKLOAD_KINDS:
                    continue
                spec = pod_spec(w)
                self.assertIs(spec.get("automountServiceAccountToken"), False,
                              f"{folder}: {w['metadata']['name']} mounts an API token")
                for where, c in all_containers(spec):
                    found += 1
                    self.assertEqual(security_problems(where, spec, c), [], f"{folder}")
        self.assertGreaterEqual(found, 6)

    def test_import_pod_mounts_what_the_central_statefulset_mounts(self):
        (sts,) = [o for o in manifests_in(K8S / "central") if o["kind"] == "StatefulSet"]
        (pod,) = [o for o in manifests_in(K8S / "tools") if o["kind"] == "Pod"]
        ((_, server),) = [x for x in all_containers(pod_spec(sts)) if is_regpin_server(x[1])]
        ((_, importer),) = all_containers(pod_spec(pod))

        def sources(obj, container):
            volumes = {v["name"]: v for v in pod_spec(obj)["volumes"]}
            claims = {t["metadata"]["name"]: f"{t['metadata']['name']}-{obj['metadata']['name']}-0"
                      for t in obj["spec"].get("volumeClaimTemplates", [])}
            out = {}
            for m in container["volumeMounts"]:
                v = volumes.get(m["name"])
                if v is None:
                    out[m["mountPath"]] = ("claim", claims[m["name"]])
                elif "persistentVolumeClaim" in v:
                    out[m["mountPath"]] = ("claim", v["persistentVolumeClaim"]["claimName"])
                elif "configMap" in v:
                    out[m["mountPath"]] = ("configMap", v["configMap"]["name"])
                elif "secret" in v:
                    out[m["mountPath"]] = ("secret", v["secret"]["secretName"])
            return out

        want, got = sources(sts, server), sources(pod, importer)
        self.assertEqual({k: got.get(k) for k in want}, want)
        self.assertEqual(pod["metadata"]["namespace"], "regpin")

    def test_central_is_one_statefulset_with_a_volume_claim_probes_and_a_private_admin_port(self):
        objs = manifests_in(K8S / "central")
        (sts,) = [o for o in objs if o["kind"] == "StatefulSet"]
        self.assertEqual(sts["spec"]["replicas"], 1, "pins need one writer")
        claims = {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
        ((_, c),) = [x for x in all_containers(pod_spec(sts)) if is_regpin_server(x[1])]
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        self.assertIn(mounts.get("/var/lib/regpin"), claims, "/var/lib/regpin is not the PVC")
        self.assertEqual(probe_problems(c, 5001), [])
        self.assertEqual(c["resources"]["requests"]["memory"], "256Mi")
        self.assertTrue(c["resources"].get("limits", {}).get("memory"))
        self.assertFalse(any("hostPort" in p for p in c.get("ports", [])))
        self.assertFalse(pod_spec(sts).get("hostNetwork", False))

        services = [o for o in objs if o["kind"] == "Service"]
        exposed = [(s, p) for s in services for p in s["spec"]["ports"]]
        registry = [(s, p) for s, p in exposed if container_port(c, p["targetPort"]) == 5000]
        admin = [(s, p) for s, p in exposed if container_port(c, p["targetPort"]) == 5001]
        self.assertTrue(registry and admin)
        self.assertTrue(any(s["spec"].get("type") == "NodePort" and p.get("nodePort")
                            for s, p in registry), "containerd needs a node-reachable port")
        for s, _ in admin:
            self.assertEqual(s["spec"].get("type", "ClusterIP"), "ClusterIP",
                             f"the admin port is exposed by {s['metadata']['name']}")
        (ns,) = [o for o in objs if o["kind"] == "Namespace"]
        self.assertEqual(ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
                         "restricted")

    def test_node_local_binds_the_node_loopback_through_hostnetwork(self):
        (ds,) = self.workloads("node-local", "DaemonSet")
        spec = pod_spec(ds)
        ((_, c),) = [x for x in all_containers(spec) if is_regpin_server(x[1])]
        host_ports = {p.get("hostPort") for p in c.get("ports", [])}
        self.assertTrue(spec.get("hostNetwork") or 5000 in host_ports)
        self.assertEqual(probe_problems(c, 5001), [])
        volumes = {v["name"]: v for v in spec["volumes"]}
        data = volumes[{m["mountPath"]: m["name"] for m in c["volumeMounts"]}["/var/lib/regpin"]]
        self.assertTrue("hostPath" in data or "emptyDir" in data)
        rolling = ds["spec"]["updateStrategy"]["rollingUpdate"]
        self.assertEqual(rolling.get("maxSurge", 0), 0, "two regpins would share a data folder")
        if spec.get("hostNetwork"):
            # the node's network: both listeners must stay on its loopback, and so must the
            # probes (the kubelet would otherwise probe the node IP)
            ((cfg, _, _),) = configs_from_manifests(manifests_in(K8S / "node-local"), "node-local")
            self.assertEqual(listen_host(cfg.config["listen"]), "127.0.0.1")
            self.assertEqual(listen_host(cfg.config["admin"]["listen"]), "127.0.0.1")
            for probe in ("livenessProbe", "readinessProbe"):
                self.assertEqual(c[probe]["httpGet"].get("host"), "127.0.0.1")

    def test_node_config_writes_hosts_toml_into_the_node_folder(self):
        (ds,) = self.workloads("node-config", "DaemonSet")
        spec = pod_spec(ds)
        self.assertEqual(run_hosts_toml(self, spec), 1)
        self.assertIn({"operator": "Exists"}, spec.get("tolerations", []))

class ConfigCheckTest(TempDirTest):
    """Every regpin config in deploy/ passes --check-config and starts."""

    def deployed_configs(self) -> list[tuple[DeployedConfig, list[str]]]:
        out = []
        for folder in ("central", "node-local"):
            objs = manifests_in(K8S / folder)
            for cfg, _, c in configs_from_manifests(objs, folder):
                probes = [c[p]["httpGet"]["path"] for p in ("livenessProbe", "readinessProbe")]
                out.append((cfg, probes))
        out.append((systemd_config(), ["/healthz", "/readyz"]))
        out.append((DeployedConfig("deploy/container/config.json",
                                   json.loads(CONTAINER_CONFIG.read_text()), {}),
                    ["/healthz", "/readyz"]))
        return out

    def test_every_config_passes_check_config_with_the_files_its_deployment_provides(self):
        configs = self.deployed_configs()
        self.assertEqual(len(configs), 4)
        for cfg, _ in configs:
            with self.subTest(config=cfg.name):
                d = self.tmpdir()
                config, problems = cfg.materialize(d)
                self.assertEqual(problems, [])
                r = check_config(config, d)
                self.assertEqual(r.returncode, 0, f"{cfg.name}:\n{r.stdout}{r.stderr}")

    def test_every_config_starts_and_answers_its_probes(self):
        for cfg, probes in self.deployed_configs():
            with self.subTest(config=cfg.name):
                d = self.tmpdir()
                config, problems = cfg.materialize(d)
                self.assertEqual(problems, [])
                statuses = start_and_probe(config, d, probes)
                self.assertEqual(statuses, {p: 200 for p in probes})

    def test_central_config_matches_its_pod(self):
        objs = manifests_in(K8S / "central")
        ((cfg, sts, c),) = configs_from_manifests(objs, "central")
        config = cfg.config
        self.assertEqual(config["listen"], "0.0.0.0:5000")
        self.assertEqual(config["admin"]["listen"], "0.0.0.0:5001")
        self.assertEqual(config["data_dir"], "/var/lib/regpin")
        self.assertEqual(listen_port(config["listen"]), container_port(c, "registry"))
        self.assertEqual(listen_port(config["admin"]["listen"]), container_port(c, "admin"))
        registries = [u["registry"] for u in config["upstreams"]]
        for reg in PUBLIC_REGISTRIES:
            self.assertIn(reg, registries)
        self.assertTrue(config.get("policies"))
        self.assertTrue(config["admin"].get("tokens"))
        self.assertTrue(any("password_file" in u for u in config["upstreams"]),
                        "no example upstream credential")
        self.assertNotIn("webhooks", config)
        for _, path in referenced_files(config):
            self.assertFalse(path.startswith("/etc/regpin/"),
                             f"{path}: a Secret cannot be mounted inside the ConfigMap's folder")

    def test_systemd_config_matches_the_unit(self):
        service = dict(systemd_unit(SYSTEMD_UNIT)["Service"])
        config = json.loads(SYSTEMD_CONFIG.read_text())
        self.assertEqual(config["data_dir"], "/var/lib/" + service["StateDirectory"])
        self.assertIn(f"/etc/{service['ConfigurationDirectory']}/config.json",
                      service["ExecStart"])
        self.assertEqual(listen_host(config["admin"]["listen"]), "127.0.0.1")


class SharedPinsShapesTest(TempDirTest):
    """central-ha and node-local-shared (issue 13): regpin replicas sharing pins through the
    3-member etcd of components/etcd."""

    def etcd_objects(self) -> list[dict]:
        return manifests_in(K8S / "components" / "etcd")

    def with_patched_config(self, base: str, patch_folder: str) -> list[dict]:
        return with_patched_config(base, patch_folder)

    def test_etcd_is_three_members_one_per_node_with_a_budget_of_one(self):
        objs = self.etcd_objects()
        (sts,) = [o for o in objs if o["kind"] == "StatefulSet"]
        (svc,) = [o for o in objs if o["kind"] == "Service"]
        (pdb,) = [o for o in objs if o["kind"] == "PodDisruptionBudget"]
        self.assertEqual(sts["spec"]["replicas"], 3)
        self.assertEqual(sts["spec"]["serviceName"], svc["metadata"]["name"])
        self.assertEqual(svc["spec"]["clusterIP"], "None", "headless: one DNS name per member")
        self.assertTrue(svc["spec"]["publishNotReadyAddresses"])
        self.assertEqual(pdb["spec"]["minAvailable"], 2)
        spec = pod_spec(sts)
        self.assertIn("requiredDuringSchedulingIgnoredDuringExecution", spec["affinity"]["podAntiAffinity"])
        ((_, etcd),) = all_containers(spec)
        args = " ".join(etcd["args"])
        for i in range(3):
            self.assertIn(f"regpin-etcd-{i}=http://regpin-etcd-{i}.regpin-etcd:2380", args)
        self.assertIn("--auto-compaction-retention", args)

    def test_each_shape_points_its_regpins_at_every_etcd_member_and_passes_check_config(self):
        for base, shape, namespace, replicas in (("central", "central-ha", "regpin", 3),
                                                 ("node-local", "node-local-shared", "regpin-node", None)):
            with self.subTest(shape=shape):
                (k,) = documents(K8S / shape / "kustomization.yaml")
                self.assertEqual(k["namespace"], namespace)
                self.assertIn("../components/etcd", k["components"])
                ((cfg, _, _),) = configs_from_manifests(self.with_patched_config(base, shape), shape)
                ps = cfg.config["pin_store"]
                self.assertEqual(ps["backend"], "etcd")
                self.assertEqual(len(ps["endpoints"]), 3)
                for i, e in enumerate(ps["endpoints"]):
                    self.assertTrue(e.startswith(f"http://regpin-etcd-{i}.regpin-etcd"), e)
                    host = e.split("//")[1].split(":")[0]
                    if host.count(".") > 1:
                        self.assertEqual(host.split(".")[2], namespace, "the etcd Service's namespace")
                d = self.tmpdir()
                config, problems = cfg.materialize(d)
                self.assertEqual(problems, [])
                r = check_config(config, d)
                self.assertEqual(r.returncode, 0, f"{shape}:\n{r.stdout}{r.stderr}")
                self.assertIn("pins on etcd", r.stdout)
                if replicas:
                    (patch,) = [o for o in manifests_in(K8S / shape) if o["kind"] == "StatefulSet"]
                    self.assertEqual(patch["spec"]["replicas"], replicas)


class ShutdownGraceTest(unittest.TestCase):
    """On SIGTERM regpin turns /readyz to 503, stops accepting and lets transfers in progress
    finish for up to shutdown_grace_s (default 25), then exits 0. The kubelet
    (terminationGracePeriodSeconds) and systemd (TimeoutStopSec) must wait longer, or they
    kill it mid-transfer."""

    def test_the_default_checked_here_is_the_documented_one(self):
        text = (REPO_ROOT / "config" / "README.md").read_text(encoding="utf-8")
        m = re.search(r"^\| `shutdown_grace_s` \| integer \| (\d+) \|", text, re.M)
        self.assertIsNotNone(m, "config/README.md documents no shutdown_grace_s")
        self.assertEqual(int(m.group(1)), DEFAULT_SHUTDOWN_GRACE_S)

    def test_kubernetes_grace_periods_exceed_shutdown_grace(self):
        for base, kind, shape in (("central", "StatefulSet", "central-ha"),
                                  ("node-local", "DaemonSet", "node-local-shared")):
            for folder, objs in ((base, manifests_in(K8S / base)),
                                 (shape, with_patched_config(base, shape))):
                with self.subTest(stack=folder):
                    (w,) = [o for o in manifests_in(K8S / base) if o["kind"] == kind]
                    spec = pod_spec(w)
                    self.assertIn("terminationGracePeriodSeconds", spec,
                                  f"{base}: set it explicitly, next to its comment")
                    period = spec["terminationGracePeriodSeconds"]
                    # a shape's own patch of the workload may change it
                    for patch in manifests_in(K8S / folder):
                        if patch["kind"] == kind and folder != base:
                            period = pod_spec(patch).get("terminationGracePeriodSeconds", period)
                    cfgs = configs_from_manifests(objs, folder)
                    self.assertTrue(cfgs)
                    for cfg, _, _ in cfgs:
                        self.assertGreater(period, shutdown_grace_s(cfg.config),
                                           f"{cfg.name}: terminationGracePeriodSeconds")

    def test_systemd_stop_timeout_exceeds_shutdown_grace(self):
        service = dict(systemd_unit(SYSTEMD_UNIT)["Service"])
        self.assertIn("TimeoutStopSec", service, "set it explicitly, next to its comment")
        config = json.loads(SYSTEMD_CONFIG.read_text())
        self.assertGreater(systemd_seconds(service["TimeoutStopSec"]), shutdown_grace_s(config))


class KustomizeBuildTest(TempDirTest):
    """The stacks as `kubectl apply -k` would send them (kubectl carries kustomize)."""

    def setUp(self):
        if shutil.which("kubectl") is None:
            self.skipTest("kubectl is not installed: the kustomize builds are not checked")
        # components, labels and inline patches need kustomize 4 or later (kubectl 1.21+);
        # Debian 12's kubernetes-client (1.20) carries kustomize 2
        r = subprocess.run(["kubectl", "version", "--client"], capture_output=True, text=True)
        m = re.search(r"Kustomize Version: v(\d+)", r.stdout)
        if not m or int(m.group(1)) < 4:
            self.skipTest("kubectl's kustomize is older than v4: the builds are not checked")

    def test_every_kustomization_builds_and_sets_image_and_namespace(self):
        for d in kustomization_dirs():
            if documents(d / "kustomization.yaml")[0]["kind"] != "Kustomization":
                continue
            with self.subTest(kustomization=str(d.relative_to(REPO_ROOT))):
                objs = kubectl_kustomize(d)
                self.assertTrue(objs)
                for o in objs:
                    if o["kind"] != "Namespace":
                        self.assertIn(o["metadata"].get("namespace"), ("regpin", "regpin-node"),
                                      f"{o['kind']}/{o['metadata']['name']}")
                    if o["kind"] in WORKLOAD_KINDS:
                        for _, c in all_containers(pod_spec(o)):
                            self.assertRegex(c["image"],
                                             r"^(regpin:|registry\.k8s\.io/(pause|etcd):)")

    def test_default_stack_is_central_and_node_config_through_the_node_port(self):
        objs = kubectl_kustomize(K8S)
        kinds = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in objs)
        self.assertIn("StatefulSet/regpin", kinds)
        self.assertIn("DaemonSet/regpin-node-config", kinds)
        self.assertNotIn("DaemonSet/regpin-node-local", kinds)
        (svc,) = [o for o in objs if o["kind"] == "Service" and o["spec"].get("type") == "NodePort"]
        (node_port,) = [p["nodePort"] for p in svc["spec"]["ports"]]
        (ds,) = [o for o in objs if o["kind"] == "DaemonSet"]
        self.assertEqual(run_hosts_toml(
            self, pod_spec(ds), expect_mirror=f"http://{FAKE_HOST_IP}:{node_port}"), 1)
        names = {(o["kind"], o["metadata"]["name"]) for o in objs}
        self.assertEqual(len(names), len(objs), "duplicate objects")
        cfgs = configs_from_manifests(objs, "default stack")
        self.assertEqual(len(cfgs), 1)

    def test_node_local_stack_points_containerd_at_the_node_loopback(self):
        objs = kubectl_kustomize(K8S / "node-local")
        (ds,) = [o for o in objs if o["kind"] == "DaemonSet"
                 and o["metadata"]["name"] == "regpin-node-config"]
        self.assertEqual(run_hosts_toml(
            self, pod_spec(ds), expect_mirror="http://127.0.0.1:5000"), 1)
        self.assertFalse([o for o in objs if o["kind"] in ("StatefulSet", "Service")])

    def with_component(self, stack: str, component: str) -> list[dict]:
        """The objects of deploy/kubernetes/<stack> with components/<component> added."""
        overlay = self.tmpdir()
        (overlay / "kustomization.yaml").write_text(
            "apiVersion: kustomize.config.k8s.io/v1beta1\n"
            "kind: Kustomization\n"
            f"resources:\n  - {os.path.relpath(K8S / stack, overlay)}\n"
            "components:\n"
            f"  - {os.path.relpath(K8S / 'components' / component, overlay)}\n")
        return kubectl_kustomize(overlay)

    def test_fail_closed_component_makes_regpin_the_server(self):
        for stack, mirror in (("", f"http://{FAKE_HOST_IP}:30500"),
                              ("node-local", "http://127.0.0.1:5000")):
            with self.subTest(stack=stack or "default"):
                objs = self.with_component(stack, "fail-closed")
                (ds,) = [o for o in objs if o["kind"] == "DaemonSet"
                         and o["metadata"]["name"] == "regpin-node-config"]
                self.assertEqual(run_hosts_toml(
                    self, pod_spec(ds), expect_mirror=mirror, expect_fail_closed=True), 1)

    def with_components(self, stack: str, *components: str) -> list[dict]:
        overlay = self.tmpdir()
        (overlay / "kustomization.yaml").write_text(
            "apiVersion: kustomize.config.k8s.io/v1beta1\n"
            "kind: Kustomization\n"
            f"resources:\n  - {os.path.relpath(K8S / stack, overlay)}\n"
            "components:\n" + "".join(
                f"  - {os.path.relpath(K8S / 'components' / c, overlay)}\n" for c in components))
        return kubectl_kustomize(overlay)

    def test_admission_component_wires_the_webhook_to_regpins_listener_and_certificate(self):
        for stack in ("central", "central-ha"):
            with self.subTest(stack=stack):
                objs = self.with_components(stack, "admission", "admission-cert-manager")
                (hook_cfg,) = [o for o in objs if o["kind"] == "MutatingWebhookConfiguration"]
                (hook,) = hook_cfg["webhooks"]
                # Never block the cluster on regpin: Ignore, a timeout above regpin's own 4 s,
                # no side effects on dry runs, and regpin's own namespaces left alone.
                self.assertEqual((hook["failurePolicy"], hook["sideEffects"], hook["admissionReviewVersions"]),
                                 ("Ignore", "NoneOnDryRun", ["v1"]))
                self.assertGreater(hook["timeoutSeconds"], 4)
                self.assertLessEqual(hook["timeoutSeconds"], 30)
                excluded = [e for e in hook["namespaceSelector"]["matchExpressions"]
                            if e["key"] == "kubernetes.io/metadata.name"]
                self.assertEqual(excluded[0]["operator"], "NotIn")
                for ns in ("kube-system", "regpin", "regpin-node"):
                    self.assertIn(ns, excluded[0]["values"])
                resources = {r for rule in hook["rules"] for r in rule["resources"]}
                for r in ("pods", "deployments", "statefulsets", "daemonsets", "replicasets", "jobs", "cronjobs"):
                    self.assertIn(r, resources)
                # The Service it calls reaches the StatefulSet's admission port.
                svc_ref = hook["clientConfig"]["service"]
                self.assertEqual((svc_ref["namespace"], svc_ref["path"]), ("regpin", "/mutate"))
                (svc,) = [o for o in objs if o["kind"] == "Service" and o["metadata"]["name"] == svc_ref["name"]]
                (port,) = [p for p in svc["spec"]["ports"] if p["port"] == svc_ref["port"]]
                (sts,) = [o for o in objs if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "regpin"]
                labels = sts["spec"]["template"]["metadata"]["labels"]
                self.assertTrue(all(labels.get(k) == v for k, v in svc["spec"]["selector"].items()))
                (c,) = sts["spec"]["template"]["spec"]["containers"]
                (cport,) = [p for p in c["ports"] if p["name"] == port["targetPort"]]
                args = c["args"]
                self.assertEqual(args[:3], ["serve", "--config", "/etc/regpin/config.json"], "the stack's args stay")
                self.assertIn(f"--admission-listen=0.0.0.0:{cport['containerPort']}", args)
                # The certificate: cert-manager's Secret, mounted where --admission-tls reads it,
                # for the Service's name, and its CA injected into the webhook.
                (tls_arg,) = [a for a in args if a.startswith("--admission-tls=")]
                (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == tls_arg.split("=", 1)[1]]
                (vol,) = [v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
                (cert,) = [o for o in objs if o["kind"] == "Certificate"]
                self.assertEqual(vol["secret"]["secretName"], cert["spec"]["secretName"])
                self.assertIn(f"{svc['metadata']['name']}.regpin.svc", cert["spec"]["dnsNames"])
                self.assertEqual(hook_cfg["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
                                 f"regpin/{cert['metadata']['name']}")
                # Without cert-manager, make-cert.sh makes the same Secret and patches the same
                # webhook.
                script = (K8S / "components" / "admission" / "make-cert.sh").read_text()
                self.assertIn(f"create secret tls {vol['secret']['secretName']}", script)
                self.assertIn(f"mutatingwebhookconfiguration {hook_cfg['metadata']['name']}", script)

    def test_network_policy_component_admits_only_nodes_operators_and_prometheus(self):
        for stack in ("central", "central-ha"):
            with self.subTest(stack=stack):
                objs = self.with_component(stack, "network-policy")
                (policy,) = [o for o in objs if o["kind"] == "NetworkPolicy"]
                (sts,) = [o for o in objs if o["kind"] == "StatefulSet"
                          and o["metadata"]["name"] == "regpin"]
                ((_, c),) = [x for x in all_containers(pod_spec(sts)) if is_regpin_server(x[1])]
                spec = policy["spec"]

                # it selects the regpin pods, in their namespace, and no other workload's
                self.assertEqual(policy["metadata"].get("namespace"),
                                 sts["metadata"]["namespace"])
                self.assertTrue(spec["podSelector"], "an empty podSelector selects every pod")
                self.assertTrue(selector_matches(spec["podSelector"],
                                                 sts["spec"]["template"]["metadata"]["labels"]))
                for w in objs:
                    if w["kind"] in WORKLOAD_KINDS and w is not sts:
                        labels = (w["metadata"] if w["kind"] == "Pod"
                                  else w["spec"]["template"]["metadata"]).get("labels", {})
                        self.assertFalse(selector_matches(spec["podSelector"], labels),
                                         f"{w['kind']}/{w['metadata']['name']} is selected "
                                         "(etcd must keep its traffic)")
                self.assertEqual(spec["policyTypes"], ["Ingress"])

                # every rule names its ports and its sources: no rule admits all of either
                by_port: dict[int, list[dict]] = {}
                for rule in spec.get("ingress", []):
                    self.assertTrue(rule.get("from"), f"a rule admits every source: {rule}")
                    self.assertTrue(rule.get("ports"), f"a rule admits every port: {rule}")
                    for peer in rule["from"]:
                        if "ipBlock" in peer:
                            self.assertNotIn(peer["ipBlock"]["cidr"], ("0.0.0.0/0", "::/0"))
                        if "namespaceSelector" in peer:
                            self.assertTrue(peer["namespaceSelector"].get("matchLabels") or
                                            peer["namespaceSelector"].get("matchExpressions"),
                                            "an empty namespaceSelector admits every namespace")
                        if "podSelector" in peer and "namespaceSelector" not in peer:
                            self.fail(f"a podSelector alone admits pods of regpin's namespace: {peer}")
                    for p in rule["ports"]:
                        self.assertEqual(p.get("protocol", "TCP"), "TCP")
                        by_port.setdefault(container_port(c, p["port"]), []).append(rule)
                self.assertEqual(sorted(by_port), [5000, 5001])

                # registry: the nodes' CIDR (containerd via the NodePort) and labelled clients
                (registry,) = by_port[5000]
                self.assertEqual([container_port(c, p["port"]) for p in registry["ports"]],
                                 [5000], "the registry rule must not open the admin port")
                self.assertTrue(any("ipBlock" in peer for peer in registry["from"]))
                self.assertIn({"namespaceSelector": {"matchLabels": {
                    "regpin.io/registry-client": "true"}}}, registry["from"])

                # admin: namespaces only, the operators' and Prometheus's
                (admin,) = by_port[5001]
                self.assertEqual([container_port(c, p["port"]) for p in admin["ports"]], [5001])
                for peer in admin["from"]:
                    self.assertEqual(list(peer), ["namespaceSelector"], peer)
                selectors = [peer["namespaceSelector"].get("matchLabels", {})
                             for peer in admin["from"]]
                self.assertIn({"regpin.io/operators": "true"}, selectors)
                self.assertTrue(any("kubernetes.io/metadata.name" in m for m in selectors),
                                "no Prometheus namespace")
                self.assertEqual(len(selectors), 2)


class ContainerfileTest(unittest.TestCase):
    def setUp(self):
        self.text = CONTAINERFILE.read_text(encoding="utf-8")
        # instructions, with continuation lines joined and comments dropped
        joined, cur = [], ""
        for line in self.text.splitlines():
            if not cur and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if line.rstrip().endswith("\\"):
                cur += line.rstrip()[:-1] + " "
                continue
            joined.append((cur + line).strip())
            cur = ""
        self.instructions = joined
        stages, current = [], None
        for ins in joined:
            if ins.upper().startswith("FROM "):
                current = [ins]
                stages.append(current)
            elif current is not None:
                current.append(ins)
        self.stages = stages

    def runtime_packages(self) -> list[str]:
        runs = " ".join(i for i in self.stages[-1] if i.upper().startswith("RUN "))
        m = re.search(r"apt-get install ((?:\S+ +)+?)&&", runs + " &&")
        self.assertIsNotNone(m, "the runtime stage installs nothing with apt-get")
        return [w for w in m.group(1).split() if not w.startswith("-")]

    def test_never_libboost_dev(self):
        pattern = re.compile(r"(?<![\w.+-])libboost-dev(?![\w.+-])")
        for line in self.instructions:
            self.assertIsNone(pattern.search(line), line)
        deps = (DEPLOY / "debian-deps.sh").read_text()
        if "debian-deps.sh" in self.text:
            code = "\n".join(l for l in deps.splitlines() if not l.lstrip().startswith("#"))
            self.assertIsNone(pattern.search(code), "debian-deps.sh installs libboost-dev")

    def test_two_stages_debian_12_build_and_slim_runtime(self):
        self.assertEqual(len(self.stages), 2)
        self.assertRegex(self.stages[0][0], r"^FROM debian:12 AS \w+$")
        self.assertEqual(self.stages[-1][0], "FROM debian:12-slim")
        build = " ".join(self.stages[0])
        for flag in ("-G Ninja", "-DCMAKE_BUILD_TYPE=Release", "-DREGPIN_BUILD_TESTS=OFF",
                     "-DREGPIN_BUILD_BENCH=OFF", "cmake --build build"):
            self.assertIn(flag, build)
        for ins in self.instructions:
            if ins.startswith("COPY ") and "--from=" not in ins:
                for src in ins.split()[1:-1]:
                    self.assertTrue((REPO_ROOT / src).exists(), f"{ins}: no {src}")

    def test_runtime_is_non_root_with_ports_volume_and_entrypoint(self):
        runtime = self.stages[-1]
        users = [i.split()[1] for i in runtime if i.startswith("USER ")]
        self.assertTrue(users, "no USER in the runtime stage")
        uid = users[-1].split(":")[0]
        self.assertTrue(uid.isdigit() and int(uid) != 0, f"USER {users[-1]}")
        self.assertEqual(uid, "65532")
        exposed = {p for i in runtime if i.startswith("EXPOSE ") for p in i.split()[1:]}
        self.assertEqual(exposed, {"5000", "5001"})
        self.assertIn("VOLUME /var/lib/regpin", runtime)
        self.assertIn('ENTRYPOINT ["/usr/local/bin/regpin"]', runtime)
        self.assertIn('CMD ["serve", "--config", "/etc/regpin/config.json"]', runtime)
        for p in self.runtime_packages():
            self.assertFalse(p.endswith("-dev"), f"{p} in the runtime image")

    def test_runtime_packages_provide_every_library_regpin_links(self):
        for tool in ("ldd", "dpkg-query", "apt-cache"):
            if shutil.which(tool) is None:
                self.skipTest(f"{tool} is not installed")
        packages = self.runtime_packages()
        r = subprocess.run(["apt-cache", "depends", "--recurse", "--no-recommends",
                            "--no-suggests", "--no-conflicts", "--no-breaks", "--no-replaces",
                            "--no-enhances", *packages], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, f"apt-cache does not know {packages}: {r.stderr}")
        available = set(packages)
        for line in r.stdout.splitlines():
            m = re.match(r"^\s+(?:Pre)?Depends: <?([^\s>]+)>?", line)
            if m:
                available.add(m.group(1).split(":")[0])
        ldd = subprocess.run(["ldd", regpin_bin()], capture_output=True, text=True, check=True)
        for line in ldd.stdout.splitlines():
            m = re.search(r"(/\S+) \(0x", line)
            if not m:
                continue
            path = m.group(1)
            if re.search(r"/lib(asan|ubsan|tsan|lsan)\.so", path):
                continue  # the sanitizer build's runtime; the release image has none
            owner = None
            for candidate in (path, os.path.realpath(path), "/usr" + path):
                q = subprocess.run(["dpkg-query", "-S", candidate], capture_output=True,
                                   text=True)
                if q.returncode == 0:
                    owner = q.stdout.split(":")[0].strip()
                    break
            self.assertIsNotNone(owner, f"no Debian package owns {path}")
            self.assertIn(owner, available,
                          f"{path} ({owner}) is not installed by the runtime stage")


class SystemdUnitTest(TempDirTest):
    REQUIRED = {
        "ExecStart": "/usr/local/bin/regpin serve --config /etc/regpin/config.json",
        "DynamicUser": "yes",
        "StateDirectory": "regpin",
        "ConfigurationDirectory": "regpin",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "NoNewPrivileges": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "SystemCallFilter": "@system-service",
        "CapabilityBoundingSet": "",
        "LimitNOFILE": "65536",
        "Restart": "on-failure",
    }

    def test_unit_has_the_sandboxing_keys(self):
        unit = systemd_unit(SYSTEMD_UNIT)
        service = unit["Service"]
        for key, want in self.REQUIRED.items():
            with self.subTest(key=key):
                self.assertIn((key, want), service)
        self.assertIn(("WantedBy", "multi-user.target"), unit["Install"])

    def test_systemd_analyze_verify(self):
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            self.skipTest("systemd-analyze is not installed")
        d = self.tmpdir()
        unit = d / SYSTEMD_UNIT.name
        # verify checks that ExecStart's binary exists: use the one under test
        unit.write_text(SYSTEMD_UNIT.read_text().replace("/usr/local/bin/regpin", regpin_bin()))
        r = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True,
                           text=True, cwd=d, timeout=60)
        output = r.stdout + r.stderr
        self.assertEqual(r.returncode, 0, output)
        self.assertEqual([l for l in output.splitlines() if SYSTEMD_UNIT.name in l], [], output)


if __name__ == "__main__":
    unittest.main()

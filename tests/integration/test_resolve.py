"""Pin at deploy time (issue 17): the resolve API, `regpin resolve` and the admission webhook.

One docker-registry upstream, one regpin in front of it with three tokens (ops: admin, ci:
resolve, viewer: read), a `reject` policy for `strict/**`, and the admission webhook on its own
TLS listener (`unpinned: deny`). A containerd node pulls through the same regpin, so every
digest the pipeline records is compared with the one the node really gets.

Run with, e.g.: cd tests/integration && /usr/bin/python3 -m unittest test_resolve -v
"""

from __future__ import annotations

import base64
import copy
import json
import os
import ssl
import urllib.parse

import jsonpatch  # python3-jsonpatch: RFC 6902, applied as the API server applies it
import yaml

import harness as h
from test_pin_lifecycle import PinLifecycleTestCase

OPS = "resolve-ops-token-0123456789"
CI = "resolve-ci-token-0123456789"
VIEWER = "resolve-viewer-token-0123456789"

# Real-world shapes: helm template output (Source comments, a ConfigMap whose block scalar holds
# an image line that is not a container), quoting of each kind, anchors and aliases, flow style,
# init and ephemeral containers, a CronJob and a List. {host} is the upstream.
MANIFESTS = """\
---
# Source: web/templates/configmap.yaml
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config  # not a workload
data:
  sidecar.yaml: |
    containers:
      - image: {host}/app/web:v1
---
# Source: web/templates/deployment.yaml
x-images:
  web: &web "{host}/app/web:v1"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  template:
    spec:
      initContainers:
        - name: migrate
          image: '{host}/app/tools:v1'   # runs first
      containers:
        - name: web
          image: *web
        - {{name: sidecar, image: {host}/app/tools:v1}}
---
apiVersion: batch/v1
kind: CronJob
metadata: {{name: nightly}}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
          - name: job
            image: {host}/app/web:v1
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata:
    name: debug
  spec:
    containers:
    - name: main
      image: "{host}/app/tools:v1"
    ephemeralContainers:
    - name: dbg
      image: {host}/app/tools:v1
"""


class ResolveTestCase(PinLifecycleTestCase):
    SECRET = "resolve-webhook-secret"

    @classmethod
    def setUpClass(cls):
        cls.ca = h.CertificateAuthority()
        cls.addClassCleanup(cls.ca.close)
        cls.cert = cls.ca.issue("admission", ips=("127.0.0.1",), dns_names=("regpin-admission.regpin.svc",))
        cls.admission_port = h.free_port()
        # A second upstream that accepts connections and never answers: a hung registry.
        cls.hung = h.SilentServer(h.free_port())
        cls.addClassCleanup(cls.hung.close)
        cls.hung_host = f"127.0.0.1:{cls.hung.port}"
        cls.start_class_servers("resolve-upstream", lambda host: dict(
            admin_tokens=[h.AdminToken("ops", OPS), {"name": "ci", "token": CI, "scope": "resolve"},
                          {"name": "viewer", "token": VIEWER, "scope": "read"}],
            policies=[h.PolicyRule(f"{host}/strict/**", "reject"), h.PolicyRule(f"{host}/**", "pin")],
            settings={
                "upstreams": [{"registry": host, "url": f"http://{host}"},
                              {"registry": cls.hung_host, "url": f"http://{cls.hung_host}"}],
                "admission": {"listen": f"127.0.0.1:{cls.admission_port}", "unpinned": "deny",
                              "timeout_ms": 1500,
                              "tls": {"cert_file": cls.cert.cert_path, "key_file": cls.cert.key_path}}},
        ))

    def resolve(self, ref: str, token: str = CI, expect: int = 200, **query: str) -> dict:
        q = urllib.parse.urlencode({"ref": ref, **query})
        return self.api("GET", f"/api/v1/resolve?{q}", token=token, expect=expect).json()

    def cli(self, *args: str, token: str = CI) -> "h.subprocess.CompletedProcess":
        env = {**os.environ, "REGPIN_ADMIN_TOKEN": token}
        return h.regpin_command("resolve", "--admin", self.regpin.admin_url, *args, env=env)

    def tmp_file(self, name: str, text: str) -> str:
        d = h.make_temp_dir("resolve")
        self.addCleanup(h.remove_temp_dir, d)
        path = os.path.join(d, name)
        with open(path, "w") as f:
            f.write(text)
        return path


class ResolveApiTest(ResolveTestCase):
    def test_resolve_pins_on_first_sight_like_a_pull_and_nodes_get_that_digest(self):
        repo = "api/web"
        first = self.image("api-web-1", seed="api-web-1", platforms=("linux/amd64", "linux/arm64"))
        self.push(first, repo)
        doc = self.resolve(self.ref(repo))
        self.assertEqual((doc["digest"], doc["state"], doc["media_type"], doc["policy"]),
                         (first.digest, "pinned", h.MEDIA_OCI_INDEX, "pin"), doc)
        self.assertEqual(doc["pinned_reference"], f"{self.ref(repo)}@{first.digest}")
        self.assertEqual({p["platform"]: p["digest"] for p in doc["platforms"]}, first.platform_manifests)
        arm = self.resolve(self.ref(repo), platform="linux/arm64")
        self.assertEqual(arm["platform"]["digest"], first.platform_manifests["linux/arm64"], arm)
        self.resolve(self.ref(repo), expect=404, platform="linux/s390x")

        # Pinned by the resolve: the history says so, the audit names the resolving token, and a
        # node pulling now gets exactly that digest.
        history = self.pin_doc(repo)["history"]
        self.assertEqual([(e["type"], e["actor"]) for e in history], [("pinned", "resolve:token:ci")], history)
        audit = self.api("GET", "/api/v1/audit?" + urllib.parse.urlencode({"digest": first.digest})).json()
        self.assertIn("resolve:ci", audit["clients"], audit)
        self.assertEqual(self.ctr_pull(repo), first.digest)

        # The upstream re-points the tag: the resolve keeps answering the pin and says what the
        # upstream moved to once a check has seen it.
        second = self.image("api-web-2", seed="api-web-2")
        self.push(second, repo)
        self.assertEqual(self.resolve(self.ref(repo))["digest"], first.digest)
        self.assertEqual(self.check(repo)["outcome"], "repointed")
        doc = self.resolve(self.ref(repo))
        self.assertEqual((doc["digest"], doc["state"], doc["upstream_digest"]),
                         (first.digest, "pending", second.digest), doc)
        self.assertEqual(self.ctr_pull(repo), first.digest)

    def test_a_rejected_tag_is_refused_with_the_reason(self):
        repo = "strict/app"
        self.push(self.image("strict-1", seed="strict-1"), repo)
        pinned = self.resolve(self.ref(repo))["digest"]
        second = self.image("strict-2", seed="strict-2")
        self.push(second, repo)
        self.assertEqual(self.check(repo)["outcome"], "repointed")
        doc = self.resolve(self.ref(repo), expect=403)
        (err,) = doc["errors"]
        self.assertEqual(err["code"], "DENIED")
        self.assertIn("rejected by policy", err["message"])
        self.assertEqual((err["detail"]["state"], err["detail"]["digest"], err["detail"]["pending_digest"]),
                         ("rejected", pinned, second.digest), err)

    def test_bad_and_unknown_references_get_clear_errors(self):
        self.assertIn("no upstream is configured", self.resolve("other.example/x:v1", expect=404)["errors"][0]["message"])
        self.assertIn("ref is required", self.resolve("", expect=400)["errors"][0]["message"])
        self.resolve(f"{self.upstream.host}/app/x@sha256:{'0' * 64}", expect=400)
        self.resolve("UPPER/case:v1", expect=400)
        self.resolve(self.ref("api/web"), expect=400, platform="linux")
        self.assertEqual(self.resolve(self.ref("never/pushed"), expect=404)["errors"][0]["code"], "MANIFEST_UNKNOWN")

    def test_token_scopes_are_enforced_on_every_endpoint(self):
        repo = "scopes/app"
        self.push(self.image("scopes-1", seed="scopes-1"), repo)
        target = self.target(repo)
        calls = [("GET", f"/api/v1/resolve?ref={self.ref(repo)}", None, {"ops": 200, "ci": 200, "viewer": 403}),
                 ("GET", "/api/v1/pins", None, {"ops": 200, "ci": 403, "viewer": 200}),
                 ("GET", "/api/v1/events?last=5", None, {"ops": 200, "ci": 403, "viewer": 200}),
                 ("GET", "/api/v1/audit", None, {"ops": 200, "ci": 403, "viewer": 200}),
                 ("GET", "/api/v1/cache", None, {"ops": 200, "ci": 403, "viewer": 200}),
                 ("POST", "/api/v1/pin/check", target, {"ops": 200, "ci": 403, "viewer": 403}),
                 ("POST", "/api/v1/pin/unpin", target, {"ops": 200, "ci": 403, "viewer": 403}),
                 ("POST", "/api/v1/verify", {}, {"ops": 202, "ci": 403, "viewer": 403})]
        tokens = {"ci": CI, "viewer": VIEWER, "ops": OPS}
        for method, path, body, want in calls:
            for name in ("ci", "viewer", "ops"):
                with self.subTest(method=method, path=path, token=name):
                    resp = self.api(method, path, body, token=tokens[name], expect=None)
                    self.assertIn(resp.status, (want[name], 200) if want[name] == 202 else (want[name],),
                                  resp.body[:300])
                    if want[name] == 403:
                        self.assertIn(f"has scope", resp.json()["errors"][0]["message"])

        # The console: a resolve token cannot log in; a read session sees but cannot change.
        login = h.http_request(self.regpin.admin_host, "POST", "/ui/login", {"Content-Type": "application/json"},
                               json.dumps({"token": CI}).encode())
        self.assertEqual(login.status, 403, login.body)
        login = h.http_request(self.regpin.admin_host, "POST", "/ui/login", {"Content-Type": "application/json"},
                               json.dumps({"token": VIEWER}).encode())
        self.assertEqual(login.status, 200, login.body)
        self.assertEqual(login.json()["scope"], "read")
        cookie = login.header("Set-Cookie").split(";")[0]
        session = {"Cookie": cookie, "X-CSRF-Token": login.json()["csrf"], "Content-Type": "application/json"}
        self.assertEqual(h.http_request(self.regpin.admin_host, "GET", "/api/v1/pins", session).status, 200)
        changed = h.http_request(self.regpin.admin_host, "POST", "/api/v1/pin/check", session,
                                 json.dumps(target).encode())
        self.assertEqual(changed.status, 403, changed.body)
        me = h.http_request(self.regpin.admin_host, "GET", "/ui/session", {"Cookie": cookie})
        self.assertEqual(me.json()["scope"], "read")


class ResolveCliTest(ResolveTestCase):
    def expected(self, text: str, digests: dict[str, str]) -> str:
        """`text` with each container image value followed by @digest, as regpin resolve must
        write it: the ConfigMap's block scalar and everything else unchanged."""
        out = text
        host = self.upstream.host
        for old, new in ((f'&web "{host}/app/web:v1"', f'&web "{host}/app/web:v1@{digests["web"]}"'),
                         (f"'{host}/app/tools:v1'", f"'{host}/app/tools:v1@{digests['tools']}'"),
                         (f"image: {host}/app/tools:v1}}", f"image: {host}/app/tools:v1@{digests['tools']}}}"),
                         (f"    image: {host}/app/web:v1\n---", f"    image: {host}/app/web:v1@{digests['web']}\n---"),
                         (f'"{host}/app/tools:v1"\n', f'"{host}/app/tools:v1@{digests["tools"]}"\n'),
                         (f"image: {host}/app/tools:v1\n", f"image: {host}/app/tools:v1@{digests['tools']}\n")):
            self.assertEqual(out.count(old), 1, old)
            out = out.replace(old, new)
        return out

    def test_rewrites_kubernetes_yaml_byte_for_byte_and_writes_a_lock(self):
        web = self.image("cli-web", seed="cli-web", platforms=("linux/amd64", "linux/arm64"))
        tools = self.image("cli-tools", seed="cli-tools")
        self.push(web, "app/web")
        self.push(tools, "app/tools")
        text = MANIFESTS.format(host=self.upstream.host)
        path = self.tmp_file("app.yaml", text)
        lock = os.path.join(os.path.dirname(path), "images.lock.json")
        out = self.cli(path, "--lock", lock)
        self.assertEqual(out.returncode, 0, out.stderr)
        want = self.expected(text, {"web": web.digest, "tools": tools.digest})
        self.assertEqual(out.stdout, want)
        # Still the same objects, with the pinned images (the YAML parses as it did).
        docs = [d for d in yaml.safe_load_all(out.stdout) if d]
        self.assertEqual([d["kind"] for d in docs], ["ConfigMap", "Deployment", "CronJob", "List"])
        self.assertEqual(docs[1]["spec"]["template"]["spec"]["containers"][0]["image"],
                         f"{self.ref('app/web')}@{web.digest}")
        self.assertEqual(docs[0]["data"]["sidecar.yaml"], f"containers:\n  - image: {self.ref('app/web')}\n")

        with open(lock) as f:
            entries = {e["image"]: e for e in json.load(f)["images"]}
        self.assertEqual(sorted(entries), [self.ref("app/tools"), self.ref("app/web")])
        e = entries[self.ref("app/web")]
        self.assertEqual((e["digest"], e["state"], e["reference"]), (web.digest, "pinned", self.ref("app/web")), e)
        self.assertTrue(e["resolved_at"].endswith("Z"), e)

        # The node gets what the manifests now say.
        self.assertEqual(self.ctr_pull("app/web"), web.digest)

        # In place, and idempotent: a second run finds the pinned images and changes nothing.
        self.assertEqual(self.cli("--in-place", path).returncode, 0)
        with open(path) as f:
            self.assertEqual(f.read(), want)
        again = self.cli(path)
        self.assertEqual((again.returncode, again.stdout), (0, want), again.stderr)

        # --check: no drift now; after the upstream moves app/web and an operator approves it,
        # the lock and the rewritten file have drifted from the pins: exit 1, naming the image.
        ok = self.cli("--check", "--lock", lock, path)
        self.assertEqual(ok.returncode, 0, ok.stdout + ok.stderr)
        moved = self.image("cli-web-2", seed="cli-web-2")
        self.push(moved, "app/web")
        self.assertEqual(self.check("app/web")["outcome"], "repointed")
        pending = self.cli("--check", "--lock", lock, token=CI)
        self.assertEqual(pending.returncode, 0, pending.stdout + pending.stderr)
        self.assertIn("not approved", pending.stdout)
        self.api("POST", "/api/v1/pin/approve", self.target("app/web"), token=OPS)
        drift = self.cli("--check", "--lock", lock, path)
        self.assertEqual(drift.returncode, 1, drift.stdout + drift.stderr)
        self.assertIn(f"DRIFT    {self.ref('app/web')}: locked {web.digest}, pinned now {moved.digest}", drift.stdout)

    def test_refuses_what_it_cannot_pin_unless_allowed(self):
        self.push(self.image("cli-ok", seed="cli-ok"), "app/ok")
        text = ("kind: Pod\nspec:\n  containers:\n"
                f"  - image: {self.ref('app/ok')}\n"
                "  - image: other.example/team/app:v1   # no upstream for it\n"
                f"  - image: {self.ref('app/never-pushed')}\n")
        path = self.tmp_file("pod.yaml", text)
        out = self.cli(path)
        self.assertEqual((out.returncode, out.stdout), (1, ""), out.stderr)
        self.assertIn("line 5: cannot pin other.example/team/app:v1: no upstream is configured", out.stderr)
        self.assertIn(f"line 6: cannot pin {self.ref('app/never-pushed')}", out.stderr)
        lock = os.path.join(os.path.dirname(path), "lock.json")
        allowed = self.cli(path, "--allow-unpinned", "--lock", lock)
        self.assertEqual(allowed.returncode, 0, allowed.stderr)
        self.assertIn("other.example/team/app:v1   # no upstream", allowed.stdout)
        self.assertIn(f"{self.ref('app/ok')}@sha256:", allowed.stdout)
        with open(lock) as f:
            entries = {e["image"]: e for e in json.load(f)["images"]}
        self.assertEqual(entries["other.example/team/app:v1"]["state"], "unpinned")
        self.assertIn("no upstream", entries["other.example/team/app:v1"]["reason"])
        # A read token cannot resolve: a clear refusal, not "unpinned".
        denied = self.cli(path, token=VIEWER)
        self.assertEqual(denied.returncode, 1)
        self.assertIn("has scope 'read'", denied.stderr)
        bad = self.cli(self.tmp_file("bad.yaml", "kind: Pod\nspec: [unclosed\n"))
        self.assertEqual(bad.returncode, 1)
        self.assertIn("not YAML: line", bad.stderr)

    def test_offline_with_data_gives_the_same_answer(self):
        web = self.image("offline-web", seed="offline-web", platforms=("linux/amd64", "linux/arm64"))
        self.push(web, "offline/web")
        text = f"kind: Pod\nspec:\n  containers:\n  - name: a\n    image: {self.ref('offline/web')}  # ok\n"
        path = self.tmp_file("pod.yaml", text)
        online = self.cli(path)
        self.assertEqual(online.returncode, 0, online.stderr)
        unknown = self.tmp_file("unknown.yaml", text.replace("offline/web", "offline/never"))
        lock = os.path.join(os.path.dirname(path), "lock.json")
        self.regpin.stop()
        try:
            offline = h.regpin_command("resolve", "--data", self.regpin.data_dir, path, "--lock", lock)
            self.assertEqual((offline.returncode, offline.stdout), (0, online.stdout), offline.stderr)
            self.assertIn(f"{self.ref('offline/web')}@{web.digest}  # ok", offline.stdout)
            check = h.regpin_command("resolve", "--data", self.regpin.data_dir, "--check", "--lock", lock)
            self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
            missing = h.regpin_command("resolve", "--data", self.regpin.data_dir, unknown)
            self.assertEqual(missing.returncode, 1)
            self.assertIn("not pinned in", missing.stderr)
        finally:
            self.regpin.start()


class AdmissionTest(ResolveTestCase):
    def review(self, kind: str, obj: dict, *, dry_run: bool = False, uid: str = "b6d1c3f0-0000-4000-8000-000000000001") -> dict:
        """An AdmissionReview as the API server sends it (admission.k8s.io/v1)."""
        group, version, resource = {"Pod": ("", "v1", "pods"), "Deployment": ("apps", "v1", "deployments"),
                                    "CronJob": ("batch", "v1", "cronjobs")}[kind]
        return {
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": uid,
                "kind": {"group": group, "version": version, "kind": kind},
                "resource": {"group": group, "version": version, "resource": resource},
                "requestKind": {"group": group, "version": version, "kind": kind},
                "requestResource": {"group": group, "version": version, "resource": resource},
                "name": obj["metadata"]["name"], "namespace": "team", "operation": "CREATE",
                "userInfo": {"username": "system:serviceaccount:ci:deployer", "groups": ["system:authenticated"]},
                "object": obj, "oldObject": None, "dryRun": dry_run,
                "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
            },
        }

    def post(self, review: dict, content_type: str = "application/json") -> h.Response:
        context = ssl.create_default_context(cafile=self.ca.cert_path)
        return h.http_request(f"127.0.0.1:{self.admission_port}", "POST", "/mutate?timeout=10s",
                              {"Content-Type": content_type}, json.dumps(review).encode(), ssl_context=context)

    def admit(self, review: dict) -> dict:
        resp = self.post(review)
        self.assertEqual(resp.status, 200, resp.body[:500])
        out = resp.json()
        self.assertEqual((out["apiVersion"], out["kind"]), ("admission.k8s.io/v1", "AdmissionReview"))
        self.assertEqual(out["response"]["uid"], review["request"]["uid"])
        return out["response"]

    def patched(self, obj: dict, response: dict) -> dict:
        self.assertEqual(response["patchType"], "JSONPatch")
        patch = json.loads(base64.b64decode(response["patch"]))
        return jsonpatch.apply_patch(copy.deepcopy(obj), patch)

    def test_pods_and_pod_templates_get_the_pinned_digests(self):
        web = self.image("adm-web", seed="adm-web", platforms=("linux/amd64", "linux/arm64"))
        tools = self.image("adm-tools", seed="adm-tools")
        self.push(web, "adm/web")
        self.push(tools, "adm/tools")
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "team"},
               "spec": {"initContainers": [{"name": "i", "image": self.ref("adm/tools")}],
                        "containers": [{"name": "a", "image": self.ref("adm/web")},
                                       {"name": "b", "image": f"{self.ref('adm/tools')}@{tools.digest}"}],
                        "ephemeralContainers": [{"name": "d", "image": self.ref("adm/tools")}]}}
        response = self.admit(self.review("Pod", pod))
        self.assertTrue(response["allowed"], response)
        got = self.patched(pod, response)["spec"]
        self.assertEqual(got["initContainers"][0]["image"], f"{self.ref('adm/tools')}@{tools.digest}")
        self.assertEqual(got["containers"][0]["image"], f"{self.ref('adm/web')}@{web.digest}")
        self.assertEqual(got["containers"][1]["image"], f"{self.ref('adm/tools')}@{tools.digest}")
        self.assertEqual(got["ephemeralContainers"][0]["image"], f"{self.ref('adm/tools')}@{tools.digest}")
        self.assertEqual(self.ctr_pull("adm/web"), web.digest)

        deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                      "spec": {"template": {"spec": {"containers": [{"name": "w", "image": self.ref("adm/web")}]}}}}
        got = self.patched(deployment, self.admit(self.review("Deployment", deployment)))
        self.assertEqual(got["spec"]["template"]["spec"]["containers"][0]["image"], f"{self.ref('adm/web')}@{web.digest}")
        cron = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"},
                "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [
                    {"name": "j", "image": self.ref("adm/tools")}]}}}}}}
        got = self.patched(cron, self.admit(self.review("CronJob", cron)))
        self.assertEqual(got["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"],
                         f"{self.ref('adm/tools')}@{tools.digest}")

    def test_a_pod_of_a_repointed_tag_gets_the_pinned_digest_not_the_new_one(self):
        first = self.image("adm-moved-1", seed="adm-moved-1")
        self.push(first, "adm/moved")
        self.assertEqual(self.ctr_pull("adm/moved"), first.digest)  # pinned by a node's pull
        second = self.image("adm-moved-2", seed="adm-moved-2")
        self.push(second, "adm/moved")
        self.assertEqual(self.check("adm/moved")["outcome"], "repointed")
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "m"},
               "spec": {"containers": [{"name": "a", "image": self.ref("adm/moved")}]}}
        response = self.admit(self.review("Pod", pod))
        got = self.patched(pod, response)
        self.assertEqual(got["spec"]["containers"][0]["image"], f"{self.ref('adm/moved')}@{first.digest}")
        self.assertNotIn(second.digest, got["spec"]["containers"][0]["image"])
        (warning,) = response["warnings"]
        self.assertIn(second.digest, warning)

    def test_images_it_cannot_pin_are_refused_by_policy_and_a_dry_run_pins_nothing(self):
        self.push(self.image("adm-ok", seed="adm-ok"), "adm/ok")
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
               "spec": {"containers": [{"name": "a", "image": self.ref("adm/ok")},
                                       {"name": "b", "image": "other.example/team/app:v1"}]}}
        response = self.admit(self.review("Pod", pod))
        self.assertFalse(response["allowed"], response)
        self.assertEqual(response["status"]["code"], 403)
        self.assertIn("other.example/team/app:v1", response["status"]["message"])
        self.assertNotIn("patch", response)

        # A dry run never pins: a tag regpin has not seen stays unpinned (refused here).
        self.push(self.image("adm-dry", seed="adm-dry"), "adm/dry")
        dry = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "d"},
               "spec": {"containers": [{"name": "a", "image": self.ref("adm/dry")}]}}
        response = self.admit(self.review("Pod", dry, dry_run=True))
        self.assertFalse(response["allowed"], response)
        self.assertIn("dry run", response["status"]["message"])
        self.api("GET", "/api/v1/pin?" + urllib.parse.urlencode(self.target("adm/dry")), token=OPS, expect=404)
        # The same review for real pins it.
        self.assertTrue(self.admit(self.review("Pod", dry))["allowed"])
        self.assertEqual(self.the_pin("adm/dry")["state"], "pinned")

    def test_an_upstream_that_never_answers_gets_an_answer_within_regpins_deadline(self):
        # The hung upstream holds the first sight far longer than timeout_ms (its own read
        # timeout); the review is answered at regpin's deadline, by policy, and the API server
        # (timeoutSeconds 10) never has to give up on regpin.
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "h"},
               "spec": {"containers": [{"name": "a", "image": f"{self.hung_host}/team/app:v1"}]}}
        response = self.admit(self.review("Pod", pod))
        self.assertFalse(response["allowed"], response)
        self.assertIn("not resolved within 1500 ms", response["status"]["message"])
        self.assertGreaterEqual(self.hung.accepted, 1, "regpin asked the hung upstream")
        # Meanwhile every other image is answered as before.
        self.push(self.image("adm-after-hung", seed="adm-after-hung"), "adm/after")
        ok = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "o"},
              "spec": {"containers": [{"name": "a", "image": self.ref("adm/after")}]}}
        self.assertTrue(self.admit(self.review("Pod", ok))["allowed"])

    def test_what_is_not_an_admission_review_gets_a_clear_error(self):
        self.assertEqual(self.post({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview",
                                    "request": {"uid": "x"}}).status, 400)
        self.assertEqual(self.post({"kind": "AdmissionReview"}, content_type="text/plain").status, 415)
        context = ssl.create_default_context(cafile=self.ca.cert_path)
        other = h.http_request(f"127.0.0.1:{self.admission_port}", "POST", "/api/v1/pins",
                               {"Content-Type": "application/json"}, b"{}", ssl_context=context)
        self.assertEqual(other.status, 404)
        # An object without containers (a Service): allowed, nothing to patch.
        response = self.admit({**self.review("Pod", {"metadata": {"name": "s"}}),
                               "request": {**self.review("Pod", {"metadata": {"name": "s"}})["request"],
                                           "kind": {"group": "", "version": "v1", "kind": "Service"}}})
        self.assertTrue(response["allowed"])
        self.assertNotIn("patch", response)


if __name__ == "__main__":
    import unittest
    unittest.main()

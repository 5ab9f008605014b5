"""TEST-ONLY stand-in for the Kubernetes control plane in kubelab's test image.

The Kubernetes server binaries cannot be installed where kubelab's tests run (no
internet, QEMU without KVM), so the test image carries small stand-ins for kubeadm,
kubectl, the kubelet and containerd that follow the observable contract kubelab relies on
(kubeadm reference: https://kubernetes.io/docs/reference/setup-tools/kubeadm/):

- `kubeadm init --config` refuses a missing CA or a bad v1beta4 config, signs an API
  server certificate and admin.conf with the given CA for the advertise address, and
  starts this module's API server on :6443 (TLS, /healthz, /readyz, a minimal
  /api/v1/nodes and kube-system pods);
- `kubeadm join --config` fetches the CA from the control plane's `cluster-info`
  ConfigMap, checks it with the token (a signature keyed by the token, like kubeadm's JWS;
  expired tokens are gone from it) and against the CA hash pin, and registers the node;
- nodes are Ready once a CNI DaemonSet has been applied whose pod network is the
  cluster's podSubnet and whose interface choice reaches the control plane
  (`--iface-can-reach=<its address>`, or `--iface=` naming the NIC that holds it);
- pods (`kubectl run`) are scheduled on a Ready, schedulable node whose taints they
  tolerate (none), else stay Pending (Unschedulable), like the scheduler; a pod annotated
  `kubelab.io/never-terminates` blocks a drain of its node until the drain's timeout.
- container images: an image store standing in for containerd's (a JSON file of
  reference -> digest, outside kubeadm reset's reach like /var/lib/containerd). A pull
  resolves the registry the way containerd does with `config_path`: the first
  `[host."URL"]` of /etc/containerd/certs.d/<registry>/hosts.toml, else
  https://<registry>; it GETs <host>/v2/<repository>/manifests/<tag> and records the
  body's sha256 as the digest, so a node that cannot reach a registry cannot pull.
Not modelled: containers (no pod ever runs a process; the kubelet never pulls the
images of the pods it would run), Services, DNS, watches, RBAC, image layers.

It never runs in a real cluster. KUBELAB_STANDIN_ROOT prefixes every path (tests on a
host).
"""
import hashlib
import hmac
import ipaddress
import json
import os
import re
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.environ.get("KUBELAB_STANDIN_ROOT", "")
VERSION = "v1.34.2"
K8S = ROOT + "/etc/kubernetes"
PKI = K8S + "/pki"
STATE_DIR = ROOT + "/var/lib/kubelab-standin"
STATE = STATE_DIR + "/state.json"
PORT = int(os.environ.get("KUBELAB_STANDIN_PORT", "6443"))
IMAGE_STORE = ROOT + "/var/lib/kubelab-standin-images/images.json"
CERTS_D = ROOT + "/etc/containerd/certs.d"
PULL_TIMEOUT = 10
TOKEN_RE = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")
LOCK = threading.Lock()


def die(msg, code=1):
    print("error: " + msg, file=sys.stderr)
    sys.exit(code)


def openssl(*args, stdin=None):
    out = subprocess.run(["openssl", *args], input=stdin, capture_output=True)
    if out.returncode != 0:
        die("openssl %s: %s" % (args[0], out.stderr.decode(errors="replace").strip()))
    return out.stdout


def spki_hash(cert_pem):
    """sha256:<hex> of the certificate's DER SubjectPublicKeyInfo (kubeadm's pin)."""
    pub = openssl("x509", "-pubkey", "-noout", stdin=cert_pem)
    der = openssl("pkey", "-pubin", "-outform", "der", stdin=pub)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def sign_cert(ca_crt, ca_key, out_crt, out_key, subject, sans=None, client=False):
    """A key and a certificate for `subject`, signed by the CA."""
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", out_key)
    os.chmod(out_key, 0o600)
    csr = openssl("req", "-new", "-key", out_key, "-subj", subject)
    with tempfile.NamedTemporaryFile("w", suffix=".ext", delete=False) as ext:
        ext.write("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n")
        ext.write("extendedKeyUsage=%s\n" % ("clientAuth" if client else "serverAuth"))
        if sans:
            ext.write("subjectAltName=%s\n" % ",".join(sans))
    try:
        openssl("x509", "-req", "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial", "-days", "365",
                "-extfile", ext.name, "-out", out_crt, stdin=csr)
    finally:
        os.unlink(ext.name)


def b64(data):
    import base64
    return base64.b64encode(data).decode()


def pause_image():
    return "registry.k8s.io/pause:3.10.1"


def images(version):
    """What `kubeadm config images list` names for `version`."""
    return ["registry.k8s.io/%s:%s" % (c, version) for c in
            ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")] + [
        "registry.k8s.io/coredns/coredns:v1.12.1", pause_image(), "registry.k8s.io/etcd:3.6.5-0"]


def load_images():
    try:
        with open(IMAGE_STORE) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def save_images(store):
    os.makedirs(os.path.dirname(IMAGE_STORE), exist_ok=True)
    tmp = IMAGE_STORE + ".tmp"
    with open(tmp, "w") as f:
        json.dump(store, f, indent=1, sort_keys=True)
    os.replace(tmp, IMAGE_STORE)


def split_ref(ref):
    """registry, repository, tag of `ref` (registry.k8s.io/pause:3.10.1)."""
    m = re.fullmatch(r"([a-z0-9.-]+(?::\d+)?)/([a-z0-9._/-]+):([A-Za-z0-9._-]+)", ref)
    if not m:
        die("invalid image reference %r" % ref)
    return m.groups()


def registry_hosts(registry):
    """The endpoints containerd would try for `registry`: hosts.toml's hosts, then the server."""
    hosts, server = [], "https://" + registry
    try:
        with open(os.path.join(CERTS_D, registry, "hosts.toml")) as f:
            for line in f:
                m = re.match(r'\s*\[host\."([^"]+)"\]', line)
                if m:
                    hosts.append(m.group(1).rstrip("/"))
                m = re.match(r'\s*server\s*=\s*"([^"]+)"', line)
                if m:
                    server = m.group(1).rstrip("/")
    except FileNotFoundError:
        pass
    return hosts + [server]


class PullError(Exception):
    """A pull that reached no registry, as containerd's error says it."""


def pull(ref):
    """Pulls `ref` into the store unless it is there; returns its digest."""
    import urllib.request
    store = load_images()
    if ref in store:
        return store[ref]
    registry, repo, tag = split_ref(ref)
    errors = []
    for host in registry_hosts(registry):
        url = "%s/v2/%s/manifests/%s" % (host, repo, tag)
        try:
            with urllib.request.urlopen(url, timeout=PULL_TIMEOUT) as r:
                body = r.read(1 << 20)
        except Exception as e:  # noqa: BLE001 (any failure is a failed attempt, like containerd's)
            errors.append("%s: %s" % (url, e))
            continue
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        store = load_images()
        store[ref] = digest
        save_images(store)
        return digest
    raise PullError("failed to pull image %s: %s" % (ref, "; ".join(errors)))


def load_state():
    try:
        with open(STATE) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def save_state(state):
    os.makedirs(STATE_DIR, exist_ok=True)
    tmp = STATE + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f, indent=1)
    os.replace(tmp, STATE)


def live_tokens(state):
    """The bootstrap tokens not yet past their TTL."""
    now = time.time()
    return [t["token"] for t in state.get("tokens", []) if t["expires"] > now]


def token_valid(state, token):
    return any(hmac.compare_digest(t, token or "") for t in live_tokens(state))


def minor(version):
    """The minor number of vMAJOR.MINOR.PATCH (major 1), or None."""
    m = re.fullmatch(r"v1\.(\d+)\.\d+", version or "")
    return int(m.group(1)) if m else None


def cluster_info_kubeconfig(state):
    ca = open(PKI + "/ca.crt", "rb").read()
    return ("apiVersion: v1\nkind: Config\nclusters:\n- name: \"\"\n  cluster:\n"
            "    certificate-authority-data: %s\n    server: https://%s:%d\n"
            "contexts: null\ncurrent-context: \"\"\nusers: null\n"
            % (b64(ca), state["advertise"], PORT))


def jws(kubeconfig, token):
    """The signature of cluster-info for one token: HMAC-SHA256 keyed by the token's
    secret (kubeadm signs a detached JWS with it; the stand-in keeps the idea)."""
    m = TOKEN_RE.match(token)
    return hmac.new(m.group(2).encode(), kubeconfig.encode(), hashlib.sha256).hexdigest()


def cni_problem(state):
    """Why the CNI does not work yet (None: it does)."""
    cni = state.get("cni")
    if not cni:
        return "cni plugin not initialized"
    if cni["network"] != state.get("pod_subnet"):
        return "flannel's Network %s is not the cluster's podSubnet %s" % (cni["network"], state.get("pod_subnet"))
    if cni["iface_can_reach"] not in (None, state["advertise"]) or cni["iface"] not in (None, "eth1"):
        return "flannel's interface choice (%s) does not reach the control plane %s" % (
            cni["iface_can_reach"] or cni["iface"], state["advertise"])
    if cni["iface_can_reach"] is None and cni["iface"] is None:
        return "flannel picked the NAT interface: no --iface or --iface-can-reach"
    return None


def node_object(name, node, cni_error):
    cni = cni_error is None
    ready = "True" if cni else "False"
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(
            {"node-role.kubernetes.io/control-plane": ""} if node.get("control_plane") else {})}},
        "spec": {"unschedulable": node.get("unschedulable", False), "taints": node.get("taints") or []},
        "status": {
            "addresses": [{"type": "InternalIP", "address": node["ip"]},
                          {"type": "Hostname", "address": name}],
            "conditions": [{"type": "Ready", "status": ready,
                            "reason": "KubeletReady" if cni else "KubeletNotReady",
                            "message": "kubelet is posting ready status" if cni else
                            "container runtime network not ready: " + cni_error}],
            "nodeInfo": {"kubeletVersion": VERSION},
        },
    }


def flannel_settings(objs, daemonset):
    """What the applied flannel manifest says: its Network and its interface choice."""
    network = None
    for obj in objs:
        if obj.get("kind") == "ConfigMap" and "net-conf.json" in (obj.get("data") or {}):
            network = json.loads(obj["data"]["net-conf.json"]).get("Network")
    args = [a for c in daemonset["spec"]["template"]["spec"]["containers"] for a in c.get("args") or []]
    value = lambda flag: next((a.split("=", 1)[1] for a in args if a.startswith(flag + "=")), None)
    return {"network": network, "iface": value("--iface"), "iface_can_reach": value("--iface-can-reach")}


def schedule(state, pod):
    """The scheduler's decision for `pod`: a Ready, schedulable node without taints."""
    if cni_problem(state) is None:
        for name in sorted(state["nodes"]):
            node = state["nodes"][name]
            if not node.get("unschedulable") and not node.get("taints"):
                pod["node"] = name
                return
    pod["node"] = None


def user_pod(name, pod):
    scheduled = pod.get("node") is not None
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "annotations": pod.get("annotations", {})},
            "spec": {"nodeName": pod.get("node") or "", "containers": [{"name": name, "image": pod["image"]}]},
            "status": {"phase": "Running" if scheduled else "Pending",
                       "conditions": [{"type": "PodScheduled", "status": "True" if scheduled else "False",
                                       "reason": "" if scheduled else "Unschedulable"}]}}


def pods(state):
    cni = cni_problem(state) is None
    def pod(name, running=True, node=None):
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "kube-system"},
                "spec": {"nodeName": node or ""},
                "status": {"phase": "Running" if running else "Pending",
                           "containerStatuses": [{"name": name.split("-")[0], "ready": running}]}}
    cp = state["cluster_name_node"]
    items = [pod("%s-%s" % (c, cp), node=cp) for c in
             ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")]
    items += [pod("coredns-standin-%d" % i, running=cni) for i in (1, 2)]
    items += [pod("kube-proxy-%s" % n, node=n) for n in sorted(state["nodes"])]
    return items


def table(objs, columns):
    """A meta.k8s.io/v1 Table, what kubectl asks for (`Accept: ...;as=Table`) to print
    `get` output: columns as (name, priority, cell function)."""
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {},
            "columnDefinitions": [{"name": n, "type": "string", "format": "name" if n == "Name" else "",
                                   "description": n, "priority": prio} for n, prio, _ in columns],
            "rows": [{"cells": [cell(o) for _, _, cell in columns],
                      "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                 "metadata": o["metadata"]}} for o in objs]}


def node_columns():
    def ready(n):
        status = next(c["status"] for c in n["status"]["conditions"] if c["type"] == "Ready")
        text = "Ready" if status == "True" else "NotReady"
        return text + (",SchedulingDisabled" if n["spec"].get("unschedulable") else "")
    role = lambda n: "control-plane" if "node-role.kubernetes.io/control-plane" in n["metadata"]["labels"] else "<none>"
    ip = lambda n: next(a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP")
    return [("Name", 0, lambda n: n["metadata"]["name"]), ("Status", 0, ready), ("Roles", 0, role),
            ("Age", 0, lambda n: "<unknown>"), ("Version", 0, lambda n: VERSION), ("Internal-IP", 1, ip),
            ("External-IP", 1, lambda n: "<none>"), ("OS-Image", 1, lambda n: "kubelab test stand-in"),
            ("Container-Runtime", 1, lambda n: "containerd://stand-in")]


def pod_columns():
    return [("Name", 0, lambda p: p["metadata"]["name"]),
            ("Status", 0, lambda p: p["status"]["phase"]),
            ("Node", 1, lambda p: p["spec"].get("nodeName") or "<none>")]


class Api(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("api: %s %s\n" % (self.address_string(), fmt % args))

    def send_objects(self, kind, items, columns, single=False):
        """A list (or one object), as a Table when the client asks for one."""
        if "as=Table" in self.headers.get("Accept", ""):
            return self.send(200, table(items, columns))
        if single:
            return self.send(200, items[0])
        return self.send(200, {"kind": kind, "apiVersion": "v1", "metadata": {}, "items": items})

    def send(self, code, body, ctype="application/json"):
        data = body if isinstance(body, bytes) else (
            json.dumps(body).encode() if not isinstance(body, str) else body.encode())
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def status(self, code, reason, message):
        self.send(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                         "message": message, "reason": reason, "code": code})

    def admin(self):
        cert = self.connection.getpeercert()
        if not cert:
            self.status(401, "Unauthorized", "Unauthorized")
            return False
        return True

    def bearer(self):
        auth = self.headers.get("Authorization", "")
        return auth[len("Bearer "):] if auth.startswith("Bearer ") else None

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"null")

    def do_GET(self):
        path = self.path.split("?")[0]
        with LOCK:
            state = load_state()
        if path in ("/healthz", "/readyz", "/livez"):
            return self.send(200, "ok", "text/plain")
        if path == "/version":
            return self.send(200, {"major": "1", "minor": "34", "gitVersion": VERSION,
                                   "platform": "linux/amd64"})
        if path == "/api/v1/namespaces/kube-public/configmaps/cluster-info":
            kubeconfig = cluster_info_kubeconfig(state)
            data = {"kubeconfig": kubeconfig}
            for token in live_tokens(state):
                data["jws-kubeconfig-" + token.split(".")[0]] = jws(kubeconfig, token)
            return self.send(200, {"apiVersion": "v1", "kind": "ConfigMap", "data": data,
                                   "metadata": {"name": "cluster-info", "namespace": "kube-public"}})
        if not self.admin():
            return None
        if path == "/api":
            return self.send(200, {"kind": "APIVersions", "versions": ["v1"],
                                   "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                   "serverAddress": "%s:%d" % (state["advertise"], PORT)}]})
        if path == "/apis":
            return self.send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": []})
        if path == "/api/v1":
            res = lambda name, kind, ns: {"name": name, "singularName": kind.lower(), "namespaced": ns,
                                          "kind": kind, "verbs": ["create", "get", "list", "delete", "patch"]}
            return self.send(200, {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
                res("nodes", "Node", False), res("pods", "Pod", True)]})
        cni = cni_problem(state)
        if path == "/api/v1/nodes":
            items = [node_object(n, v, cni) for n, v in sorted(state["nodes"].items())]
            return self.send_objects("NodeList", items, node_columns())
        if path.startswith("/api/v1/nodes/"):
            name = path.rsplit("/", 1)[1]
            if name not in state["nodes"]:
                return self.status(404, "NotFound", 'nodes "%s" not found' % name)
            return self.send_objects("Node", [node_object(name, state["nodes"][name], cni)],
                                     node_columns(), single=True)
        if path == "/api/v1/namespaces/kube-system/pods":
            return self.send(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": pods(state)})
        if path == "/api/v1/namespaces/default/pods":
            items = [user_pod(n, p) for n, p in sorted(state.get("pods", {}).items())]
            return self.send_objects("PodList", items, pod_columns())
        if path.startswith("/api/v1/namespaces/default/pods/"):
            name = path.rsplit("/", 1)[1]
            if name not in state.get("pods", {}):
                return self.status(404, "NotFound", 'pods "%s" not found' % name)
            return self.send_objects("Pod", [user_pod(name, state["pods"][name])], pod_columns(), single=True)
        return self.status(404, "NotFound", "the server could not find the requested resource")

    def do_POST(self):
        path = self.path.split("?")[0]
        if path == "/api/v1/nodes":
            with LOCK:
                state = load_state()
                if not token_valid(state, self.bearer()):
                    return self.status(401, "Unauthorized", "invalid bootstrap token")
                node = self.body()
                state["nodes"][node["name"]] = {"ip": node["ip"]}
                save_state(state)
            return self.send(201, {"kind": "Node", "metadata": {"name": node["name"]}})
        if not self.admin():
            return None
        if path == "/standin/apply":
            results = []
            objs = self.body()
            self.body_cache = objs
            with LOCK:
                state = load_state()
                for obj in objs:
                    key = "%s/%s" % (obj.get("kind", "?").lower(), obj.get("metadata", {}).get("name", "?"))
                    verb = "configured" if key in state.setdefault("applied", []) else "created"
                    if verb == "created":
                        state["applied"].append(key)
                    if obj.get("kind") == "DaemonSet":
                        state["cni"] = flannel_settings(self.body_cache, obj)
                    results.append("%s %s" % (key, verb))
                save_state(state)
            return self.send(200, results)
        if path == "/api/v1/namespaces/default/pods":
            with LOCK:
                state = load_state()
                pod = self.body()
                name = pod["metadata"]["name"]
                if name in state.setdefault("pods", {}):
                    return self.status(409, "AlreadyExists", 'pods "%s" already exists' % name)
                entry = {"image": pod["spec"]["containers"][0]["image"],
                         "annotations": pod["metadata"].get("annotations") or {}}
                schedule(state, entry)
                state["pods"][name] = entry
                save_state(state)
            return self.send(201, user_pod(name, entry))
        if path.startswith("/standin/evict/"):
            # A drain's eviction of every pod on the node: one that never terminates
            # keeps it waiting (the client gives up at its --timeout).
            node = path.rsplit("/", 1)[1]
            with LOCK:
                state = load_state()
                stuck = [n for n, p in state.get("pods", {}).items() if p.get("node") == node
                         and p.get("annotations", {}).get("kubelab.io/never-terminates")]
                for n in [n for n, p in state.get("pods", {}).items() if p.get("node") == node and n not in stuck]:
                    del state["pods"][n]
                save_state(state)
            return self.send(200, {"stuck": stuck})
        return self.status(404, "NotFound", "the server could not find the requested resource")

    def do_PATCH(self):
        if not self.admin():
            return None
        name = self.path.split("?")[0].rsplit("/", 1)[1]
        with LOCK:
            state = load_state()
            if name not in state["nodes"]:
                return self.status(404, "NotFound", 'nodes "%s" not found' % name)
            state["nodes"][name]["unschedulable"] = bool(self.body().get("spec", {}).get("unschedulable"))
            save_state(state)
        return self.send(200, {"kind": "Node", "metadata": {"name": name}})

    def do_DELETE(self):
        if not self.admin():
            return None
        name = self.path.split("?")[0].rsplit("/", 1)[1]
        with LOCK:
            state = load_state()
            if state["nodes"].pop(name, None) is None:
                return self.status(404, "NotFound", 'nodes "%s" not found' % name)
            save_state(state)
        return self.send(200, {"kind": "Status", "status": "Success"})


def serve():
    state = load_state()
    if state is None:
        die("no cluster state: run kubeadm init first")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(PKI + "/apiserver.crt", PKI + "/apiserver.key")
    ctx.load_verify_locations(PKI + "/ca.crt")
    ctx.verify_mode = ssl.CERT_OPTIONAL
    server = ThreadingHTTPServer((state.get("bind", "0.0.0.0"), PORT), Api)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print("api: serving on :%d" % PORT, file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    serve()

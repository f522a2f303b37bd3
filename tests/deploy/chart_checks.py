"""Assertions on one rendering of charts/berth.

Usage: chart_checks.py CASE RENDERED.yaml CHART_DIR NAMESPACE [VALUES.yaml ...]

The expected values are the chart's values.yaml merged with the given values
files, in order, as helm merges them. Prints one line per check,
"ok - CASE: what" or "not ok - CASE: what" followed by "#" lines with details;
the exit status is 0 even when checks fail (the caller counts the lines), and
non-zero only when the rendering cannot be read at all.
"""

import base64
import sys

import yaml

# The environment berth reads; anything else starting with BERTH_ is a typo.
BERTH_ENV = {
    "BERTH_DATA_DIR", "BERTH_LISTEN", "BERTH_PEER_LISTEN", "BERTH_ADVERTISE",
    "BERTH_PEERS", "BERTH_BOOTSTRAP_EXPECT", "BERTH_CLUSTER_SECRET_FILE",
    "BERTH_REPLICATION_FACTOR", "BERTH_REMOVE_AFTER", "BERTH_LOG",
    "BERTH_LOG_FORMAT", "BERTH_TLS_CERT", "BERTH_TLS_KEY", "BERTH_PLAIN_HTTP", "BERTH_HTPASSWD",
    "BERTH_AUTH", "BERTH_ADMINS",
    "BERTH_PEER_TLS_CA", "BERTH_PEER_TLS_CERT", "BERTH_PEER_TLS_KEY",
    "BERTH_REPAIR_BANDWIDTH", "BERTH_REPAIR_INTERVAL", "BERTH_WRITE_TIMEOUT",
    "BERTH_UPLOAD_TTL", "BERTH_MAX_MANIFEST_SIZE",
    "BERTH_GC_INTERVAL", "BERTH_GC_GRACE", "BERTH_GC_UNTAGGED", "BERTH_METRICS_PUBLIC",
}


class Checks:
    def __init__(self, case):
        self.case = case

    def check(self, what, condition, detail=""):
        if condition:
            print(f"ok - {self.case}: {what}")
        else:
            print(f"not ok - {self.case}: {what}")
            if detail:
                for line in str(detail).splitlines():
                    print(f"#   {line}")


def merge(base, override):
    """helm's merge of values files: maps merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_values(chart_dir, files):
    with open(f"{chart_dir}/values.yaml") as f:
        values = yaml.safe_load(f)
    for name in files:
        with open(name) as f:
            values = merge(values, yaml.safe_load(f) or {})
    return values


def load_chart(chart_dir):
    with open(f"{chart_dir}/Chart.yaml") as f:
        return yaml.safe_load(f)


def selects(selector, labels):
    """A non-empty label selector (a plain map) that the labels satisfy."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def env_map(container):
    return {e["name"]: e for e in container.get("env", [])}


def resolve_port(container, port):
    """A probe or Service target port, named or numbered, to a container port number."""
    for p in container.get("ports", []):
        if port in (p.get("name"), p.get("containerPort")):
            return p["containerPort"]
    return None


def main():
    case, rendered, chart_dir, namespace, *value_files = sys.argv[1:]
    values = load_values(chart_dir, value_files)
    chart = load_chart(chart_dir)
    with open(rendered) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    c = Checks(case)

    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)

    replicas = values["replicas"]
    tls = values["tls"]["enabled"]
    htpasswd = values["auth"]["htpasswd"]["enabled"]
    peer_tls = values["peerTls"]["enabled"]
    host_port = values["hostPort"]["enabled"]
    domain = values["clusterDomain"]

    sts_list = by_kind.get("StatefulSet", [])
    c.check("exactly one StatefulSet", len(sts_list) == 1, f"found {len(sts_list)}")
    if len(sts_list) != 1:
        return
    sts = sts_list[0]
    name = sts["metadata"]["name"]
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    pod_labels = spec["template"]["metadata"]["labels"]
    containers = pod["containers"]
    c.check("one container", len(containers) == 1, f"found {len(containers)}")
    ctr = containers[0]
    env = env_map(ctr)
    services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
    peers_name = f"{name}-peers"

    # Names and namespace.
    if values.get("fullnameOverride"):
        c.check("fullnameOverride names the StatefulSet", name == values["fullnameOverride"], name)
    too_long = [d["metadata"]["name"] for d in docs if len(d["metadata"]["name"]) > 63]
    c.check("every name fits in 63 characters", not too_long, too_long)
    wrong_ns = [d["metadata"]["name"] for d in docs if d["metadata"].get("namespace") != namespace]
    c.check(f"every object is in namespace {namespace}", not wrong_ns, wrong_ns)

    # The StatefulSet itself.
    c.check(f"StatefulSet has {replicas} replicas", spec.get("replicas") == replicas, spec.get("replicas"))
    c.check("serviceName is the headless peers Service",
            spec.get("serviceName") == peers_name and peers_name in services, spec.get("serviceName"))
    c.check("podManagementPolicy is Parallel", spec.get("podManagementPolicy") == "Parallel")
    c.check("updateStrategy is RollingUpdate", spec.get("updateStrategy", {}).get("type") == "RollingUpdate")
    image = f"{values['image']['repository']}:{values['image']['tag'] or chart['appVersion']}"
    c.check(f"image is {image}", ctr.get("image") == image, ctr.get("image"))
    c.check("args are serve", ctr.get("args") == ["serve"], ctr.get("args"))

    # Selectors all pick the pod template's labels.
    c.check("StatefulSet selector matches the pod labels",
            selects(spec["selector"].get("matchLabels"), pod_labels), spec["selector"])
    for sname, svc in services.items():
        c.check(f"Service {sname} selector matches the pod labels",
                selects(svc["spec"].get("selector"), pod_labels), svc["spec"].get("selector"))
    pdbs = by_kind.get("PodDisruptionBudget", [])
    want_pdb = values["podDisruptionBudget"]["enabled"] and replicas > 1
    c.check("PodDisruptionBudget " + ("present" if want_pdb else "absent"), len(pdbs) == int(want_pdb), len(pdbs))
    for pdb in pdbs:
        mu = pdb["spec"].get("maxUnavailable")
        c.check(f"PDB maxUnavailable {mu} is below replicas {replicas}",
                isinstance(mu, int) and 1 <= mu < replicas, mu)
        c.check("PDB selector matches the pod labels",
                selects(pdb["spec"]["selector"].get("matchLabels"), pod_labels), pdb["spec"]["selector"])

    # Peers: every member's stable name, once each, in order.
    want_peers = [f"{name}-{i}.{peers_name}.{namespace}.svc.{domain}:5001" for i in range(replicas)]
    got_peers = env.get("BERTH_PEERS", {}).get("value", "").split(",")
    c.check(f"BERTH_PEERS lists the {replicas} pod DNS names",
            got_peers == want_peers, f"got  {got_peers}\nwant {want_peers}")
    c.check(f"BERTH_BOOTSTRAP_EXPECT is {replicas}",
            env.get("BERTH_BOOTSTRAP_EXPECT", {}).get("value") == str(replicas),
            env.get("BERTH_BOOTSTRAP_EXPECT"))
    names = [e["name"] for e in ctr.get("env", [])]
    adv = env.get("BERTH_ADVERTISE", {}).get("value")
    c.check("BERTH_ADVERTISE is the pod's stable name on port 5001",
            adv == f"$(POD_NAME).{peers_name}.$(POD_NAMESPACE).svc.{domain}:5001", adv)
    downward_ok = all(
        n in env and names.index(n) < names.index("BERTH_ADVERTISE")
        and env[n].get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == path
        for n, path in (("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace"))
    ) if "BERTH_ADVERTISE" in names else False
    c.check("POD_NAME and POD_NAMESPACE come from the downward API before BERTH_ADVERTISE", downward_ok, names)
    unknown = sorted(n for n in names if n.startswith("BERTH_") and n not in BERTH_ENV)
    c.check("every BERTH_ variable is one berth reads", not unknown, unknown)
    dupes = sorted({n for n in names if names.count(n) > 1})
    c.check("no variable is set twice", not dupes, dupes)
    fixed = {
        "BERTH_DATA_DIR": "/var/lib/berth",
        "BERTH_LISTEN": "0.0.0.0:5000",
        "BERTH_PEER_LISTEN": "0.0.0.0:5001",
        "BERTH_CLUSTER_SECRET_FILE": "/etc/berth/cluster/secret",
        "BERTH_REPLICATION_FACTOR": str(values["replicationFactor"]),
        "BERTH_REMOVE_AFTER": str(values["cluster"]["removeAfter"]),
        "BERTH_LOG": values["log"]["level"],
        "BERTH_LOG_FORMAT": values["log"]["format"],
        "BERTH_GC_INTERVAL": str(values["gc"]["interval"]),
        "BERTH_GC_GRACE": str(values["gc"]["grace"]),
    }
    wrong = {k: env.get(k, {}).get("value") for k, v in fixed.items() if env.get(k, {}).get("value") != v}
    c.check("data dir, listen addresses, secret file, replication, removal, collection and log settings",
            not wrong, wrong)
    untagged = env.get("BERTH_GC_UNTAGGED", {}).get("value")
    c.check("BERTH_GC_UNTAGGED is set exactly when gc.untagged is",
            untagged == ("true" if values["gc"]["untagged"] else None), untagged)
    c.check("service links are off (no injected BERTH_* variables)", pod.get("enableServiceLinks") is False)
    c.check("no service account token is mounted", pod.get("automountServiceAccountToken") is False)

    # Ports and probes.
    ports = {p["name"]: p for p in ctr.get("ports", [])}
    c.check("container ports registry=5000 and peer=5001",
            ports.get("registry", {}).get("containerPort") == 5000
            and ports.get("peer", {}).get("containerPort") == 5001, ctr.get("ports"))
    scheme = "HTTPS" if tls else "HTTP"
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = ctr.get(probe, {}).get("httpGet", {})
        c.check(f"{probe} is GET {path} on port 5000 over {scheme}",
                get.get("path") == path and resolve_port(ctr, get.get("port")) == 5000
                and get.get("scheme", "HTTP") == scheme, get)
    pre_stop = int(values["preStopSeconds"])
    command = ctr.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
    c.check(f"a stopping pod keeps serving {pre_stop} s before SIGTERM",
            command == (["sleep", str(pre_stop)] if pre_stop > 0 else None), command)
    c.check("the grace period covers the pause and berth's 30 s drain",
            int(pod.get("terminationGracePeriodSeconds", 30)) >= pre_stop + 30,
            pod.get("terminationGracePeriodSeconds"))
    host_ports = [(p.get("containerPort"), p["hostPort"]) for p in ctr.get("ports", []) if "hostPort" in p]
    want_hp = [(5000, 5000)] if host_port else []
    c.check("hostPort 5000 " + ("published" if host_port else "not published"), host_ports == want_hp, host_ports)

    # Services.
    peers = services.get(peers_name, {}).get("spec", {})
    c.check("peers Service is headless and publishes not-ready pods",
            peers.get("clusterIP") == "None" and peers.get("publishNotReadyAddresses") is True, peers)
    peer_ports = sorted((p["port"], resolve_port(ctr, p.get("targetPort", p["port"]))) for p in peers.get("ports", []))
    c.check("peers Service ports 5000 and 5001 reach the same container ports",
            peer_ports == [(5000, 5000), (5001, 5001)], peer_ports)
    client = services.get(name, {}).get("spec", {})
    c.check(f"client Service is {values['service']['type']}", client.get("type") == values["service"]["type"], client.get("type"))
    cports = client.get("ports", [])
    c.check(f"client Service port {values['service']['port']} reaches container port 5000",
            len(cports) == 1 and cports[0]["port"] == values["service"]["port"]
            and resolve_port(ctr, cports[0].get("targetPort")) == 5000, cports)
    want_np = values["service"].get("nodePort")
    c.check(f"client Service nodePort is {want_np}" if want_np else "client Service has no fixed nodePort", all(p.get("nodePort") == want_np for p in cports), cports)
    c.check("only the two Services", sorted(services) == sorted([name, peers_name]), sorted(services))

    # Volumes and secrets.
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    claims = {t["metadata"]["name"]: t for t in spec.get("volumeClaimTemplates", [])}
    mounts = {m["mountPath"]: m for m in ctr.get("volumeMounts", [])}
    undefined = [m["name"] for m in ctr.get("volumeMounts", []) if m["name"] not in volumes and m["name"] not in claims]
    c.check("every volume mount has a volume", not undefined, undefined)

    data = mounts.get("/var/lib/berth", {}).get("name")
    if values["persistence"]["enabled"]:
        claim = claims.get(data, {}).get("spec", {})
        size = claim.get("resources", {}).get("requests", {}).get("storage")
        c.check(f"data is a {values['persistence']['size']} claim per pod at /var/lib/berth",
                data in claims and data not in volumes and size == values["persistence"]["size"], claim)
        sc = values["persistence"]["storageClass"]
        want_sc = None if sc == "" else ("" if sc == "-" else sc)
        c.check(f"storageClassName is {want_sc!r}" if want_sc is not None else "claims use the default StorageClass", claim.get("storageClassName") == want_sc, claim.get("storageClassName"))
    else:
        c.check("data is an emptyDir at /var/lib/berth",
                not claims and "emptyDir" in volumes.get(data, {}), volumes.get(data))

    def secret_mount(path):
        m = mounts.get(path)
        if not m or not m.get("readOnly"):
            return None
        return volumes.get(m["name"], {}).get("secret")

    secrets = {s["metadata"]["name"]: s for s in by_kind.get("Secret", [])}
    cs = secret_mount("/etc/berth/cluster")
    existing = values["cluster"]["existingSecret"]
    if existing:
        c.check(f"cluster secret comes from Secret {existing} key {values['cluster']['existingSecretKey']}",
                cs and cs.get("secretName") == existing
                and cs.get("items") == [{"key": values["cluster"]["existingSecretKey"], "path": "secret"}]
                and not secrets, cs)
    else:
        gen = secrets.get(f"{name}-cluster", {})
        raw = gen.get("data", {}).get("secret", "")
        try:
            value = base64.b64decode(raw).decode()
        except Exception:  # noqa: BLE001 - any decoding failure is a failed check
            value = ""
        c.check("generated cluster secret has at least 16 characters", len(value) >= 16, len(value))
        c.check("generated cluster secret is mounted read-only at /etc/berth/cluster/secret",
                cs and cs.get("secretName") == f"{name}-cluster"
                and cs.get("items") == [{"key": "secret", "path": "secret"}], cs)
        c.check("generated cluster secret is kept on uninstall",
                gen.get("metadata", {}).get("annotations", {}).get("helm.sh/resource-policy") == "keep")

    ts = secret_mount("/etc/berth/tls")
    if tls:
        c.check(f"TLS Secret {values['tls']['secretName']} mounted read-only at /etc/berth/tls",
                ts and ts.get("secretName") == values["tls"]["secretName"], ts)
        c.check("BERTH_TLS_CERT and BERTH_TLS_KEY point into the mount",
                env.get("BERTH_TLS_CERT", {}).get("value") == "/etc/berth/tls/tls.crt"
                and env.get("BERTH_TLS_KEY", {}).get("value") == "/etc/berth/tls/tls.key")
        c.check("no BERTH_PLAIN_HTTP with TLS (berth refuses both)", "BERTH_PLAIN_HTTP" not in env)
    else:
        c.check("no TLS mount or variables",
                "/etc/berth/tls" not in mounts and "BERTH_TLS_CERT" not in env and "BERTH_TLS_KEY" not in env)
        c.check("plain HTTP asked for explicitly",
                env.get("BERTH_PLAIN_HTTP", {}).get("value") == "true")

    hs = secret_mount("/etc/berth/auth")
    if htpasswd:
        c.check(f"htpasswd Secret {values['auth']['htpasswd']['secretName']} mounted read-only at /etc/berth/auth",
                hs and hs.get("secretName") == values["auth"]["htpasswd"]["secretName"]
                and {"key": "htpasswd", "path": "htpasswd"} in hs.get("items", []), hs)
        c.check("BERTH_HTPASSWD points into the mount",
                env.get("BERTH_HTPASSWD", {}).get("value") == "/etc/berth/auth/htpasswd")
    else:
        c.check("no htpasswd mount or variable", "/etc/berth/auth" not in mounts and "BERTH_HTPASSWD" not in env)
    if values["auth"]["enabled"]:
        c.check("BERTH_AUTH turns sign-in on", env.get("BERTH_AUTH", {}).get("value") == "true")
    else:
        c.check("no BERTH_AUTH", "BERTH_AUTH" not in env)
    admins = values["auth"]["admins"]
    c.check("BERTH_ADMINS lists the administrators",
            env.get("BERTH_ADMINS", {}).get("value") == ",".join(admins) if admins else "BERTH_ADMINS" not in env)

    ps = secret_mount("/etc/berth/peer-tls")
    peer_env = {"BERTH_PEER_TLS_CA": "ca.crt", "BERTH_PEER_TLS_CERT": "tls.crt", "BERTH_PEER_TLS_KEY": "tls.key"}
    if peer_tls:
        c.check(f"peer TLS Secret {values['peerTls']['secretName']} mounted read-only at /etc/berth/peer-tls",
                ps and ps.get("secretName") == values["peerTls"]["secretName"]
                and all({"key": f, "path": f} in ps.get("items", []) for f in peer_env.values()), ps)
        c.check("BERTH_PEER_TLS_* point into the mount",
                all(env.get(k, {}).get("value") == f"/etc/berth/peer-tls/{f}" for k, f in peer_env.items()))
    else:
        c.check("no peer TLS mount or variables",
                "/etc/berth/peer-tls" not in mounts and not any(k in env for k in peer_env))

    # Security.
    psc = pod.get("securityContext", {})
    csc = ctr.get("securityContext", {})
    c.check("pod runs as non-root 10001:10001 with fsGroup 10001 and RuntimeDefault seccomp",
            psc.get("runAsNonRoot") is True and psc.get("runAsUser") == 10001
            and psc.get("runAsGroup") == 10001 and psc.get("fsGroup") == 10001
            and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", psc)
    c.check("container: non-root, read-only root, no privilege escalation, all capabilities dropped",
            csc.get("runAsNonRoot") is True and csc.get("readOnlyRootFilesystem") is True
            and csc.get("allowPrivilegeEscalation") is False
            and csc.get("capabilities", {}).get("drop") == ["ALL"]
            and not csc.get("capabilities", {}).get("add")
            and csc.get("privileged") is not True, csc)
    c.check("/tmp is writable (an emptyDir)", "emptyDir" in volumes.get(mounts.get("/tmp", {}).get("name"), {}))
    c.check("resources are set", bool(ctr.get("resources")), ctr.get("resources"))

    # Spreading.
    anti = pod.get("affinity", {}).get("podAntiAffinity", {})
    if values["affinity"]["podAntiAffinity"] == "hard":
        terms = anti.get("requiredDuringSchedulingIgnoredDuringExecution", [])
        ok = len(terms) == 1 and "preferredDuringSchedulingIgnoredDuringExecution" not in anti
    else:
        terms = [t.get("podAffinityTerm", {}) for t in anti.get("preferredDuringSchedulingIgnoredDuringExecution", [])]
        ok = len(terms) == 1 and "requiredDuringSchedulingIgnoredDuringExecution" not in anti
    ok = ok and all(selects(t.get("labelSelector", {}).get("matchLabels"), pod_labels)
                    and t.get("topologyKey") == values["affinity"]["topologyKey"] for t in terms)
    c.check(f"pod anti-affinity is {values['affinity']['podAntiAffinity']} and selects the members", ok, anti)


if __name__ == "__main__":
    main()

"""Checks on a stack file as `docker stack config` renders it: what that
command does not verify itself. Prints one line per problem; exits 1 if any.

    python3 stack_checks.py RENDERED.yml
"""
import sys

import yaml

MODES = {"global", "replicated", "replicated-job", "global-job"}
CONDITIONS = {"none", "on-failure", "any"}
ORDERS = {"stop-first", "start-first"}
FAILURE_ACTIONS = {"continue", "pause", "rollback"}
ENDPOINT_MODES = {"vip", "dnsrr"}


def names(value):
    """Names referenced by a list of strings or of {source: ...} maps, or a map."""
    if isinstance(value, dict):
        return list(value)
    out = []
    for item in value or []:
        out.append(item["source"] if isinstance(item, dict) else item.split(":")[0])
    return out


def problems(stack):
    defined = {k: set(stack.get(k) or {}) for k in ("networks", "volumes", "secrets", "configs")}
    for name, svc in (stack.get("services") or {}).items():
        deploy = svc.get("deploy") or {}
        mode = deploy.get("mode", "replicated")
        if mode not in MODES:
            yield f"{name}: deploy.mode {mode!r} is not one of {sorted(MODES)}"
        condition = (deploy.get("restart_policy") or {}).get("condition", "any")
        if condition not in CONDITIONS:
            yield f"{name}: restart_policy.condition {condition!r} is not one of {sorted(CONDITIONS)}"
        for key in ("update_config", "rollback_config"):
            cfg = deploy.get(key) or {}
            if cfg.get("order", "stop-first") not in ORDERS:
                yield f"{name}: {key}.order {cfg['order']!r} is not one of {sorted(ORDERS)}"
            if key == "update_config" and cfg.get("failure_action", "pause") not in FAILURE_ACTIONS:
                yield f"{name}: {key}.failure_action {cfg['failure_action']!r} is not one of {sorted(FAILURE_ACTIONS)}"
        if deploy.get("endpoint_mode", "vip") not in ENDPOINT_MODES:
            yield f"{name}: endpoint_mode {deploy['endpoint_mode']!r} is not one of {sorted(ENDPOINT_MODES)}"
        for kind in ("networks", "secrets", "configs"):
            for ref in names(svc.get(kind)):
                if ref not in defined[kind]:
                    yield f"{name}: {kind[:-1]} {ref!r} is not defined at the top level"
        for vol in svc.get("volumes") or []:
            if isinstance(vol, dict) and vol.get("type") == "volume" and vol.get("source"):
                if vol["source"] not in defined["volumes"]:
                    yield f"{name}: volume {vol['source']!r} is not defined at the top level"


def berth_expectations(stack):
    """What berth itself needs from its stack file."""
    svc = (stack.get("services") or {}).get("berth")
    if svc is None:
        yield "no service named berth (peers find each other as tasks.berth)"
        return
    deploy = svc.get("deploy") or {}
    env = svc.get("environment") or {}
    if deploy.get("mode") != "global":
        yield "berth: deploy.mode must be global (one node per Swarm node)"
    if deploy.get("endpoint_mode") != "dnsrr":
        yield "berth: endpoint_mode must be dnsrr (peers need task addresses)"
    if not str(env.get("BERTH_PEERS", "")).startswith("dns:tasks.berth:"):
        yield "berth: BERTH_PEERS must list tasks.berth"
    if not any(p.get("mode") == "host" and p.get("target") == 5000 for p in svc.get("ports") or []):
        yield "berth: port 5000 must be published in host mode"
    if (deploy.get("update_config") or {}).get("parallelism") != 1:
        yield "berth: rolling updates must take one node at a time"
    test = (svc.get("healthcheck") or {}).get("test") or []
    if "--ready" not in test or "--or-joining" not in test:
        yield "berth: the health check must wait for readiness, and let joining nodes into DNS"
    granted = set(names(svc.get("secrets")))
    for key, value in env.items():
        secret = str(value).removeprefix("/run/secrets/")
        if secret != str(value) and secret not in granted:
            yield f"berth: {key} names secret {secret!r}, which the service is not given"
    tls = "BERTH_TLS_CERT" in env
    plain = str(env.get("BERTH_PLAIN_HTTP", "false")).lower() == "true"
    if tls == plain:
        yield "berth: exactly one of BERTH_TLS_CERT and BERTH_PLAIN_HTTP=true must be set"
    mounts = [v.get("target") for v in svc.get("volumes") or [] if isinstance(v, dict)]
    if "/var/lib/berth" not in mounts:
        yield "berth: /var/lib/berth must be a volume"


def main():
    with open(sys.argv[1]) as f:
        stack = yaml.safe_load(f)
    found = list(problems(stack)) + list(berth_expectations(stack))
    for p in found:
        print(p)
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()

"""Checks the monitoring objects of one rendering of charts/berth.

Usage: monitoring.py CASE RENDERED.yaml KUBE_OUT.yaml RULES_OUT.yaml METRICS_DOC

Writes the rendering without the Prometheus Operator's objects to KUBE_OUT (for
kubernetes-validate, which knows no custom resources) and the PrometheusRule's
groups to RULES_OUT (for `promtool check rules`; empty when there is none).
Prints "ok - CASE: what" / "not ok - CASE: what" lines:
- a ServiceMonitor selects the client Service and scrapes its registry port at /metrics;
- the dashboard ConfigMap holds valid JSON whose every query names only metrics
  that docs/metrics.md documents;
- every alert's expression names only documented metrics (or `up`).
"""

import json
import re
import sys

import yaml

case, rendered, kube_out, rules_out, doc = sys.argv[1:6]
docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
documented = set(re.findall(r"`(berth_[a-z_]+)", open(doc).read()))
failed = 0


def check(what, ok, detail=""):
    global failed
    print(("ok - " if ok else "not ok - ") + f"{case}: {what}")
    if not ok:
        failed += 1
        for line in str(detail).splitlines():
            print("#   " + line)


def unknown_metrics(expr):
    names = set(re.findall(r"\bberth_[a-z_]+", expr))
    base = {re.sub(r"_(bucket|count|sum)$", "", n) for n in names}
    return sorted(n for n in base if n not in documented and n + "_total" not in documented)


operator = [d for d in docs if d.get("apiVersion", "").startswith("monitoring.coreos.com/")]
with open(kube_out, "w") as f:
    yaml.safe_dump_all([d for d in docs if d not in operator], f)
rules = [d for d in operator if d["kind"] == "PrometheusRule"]
with open(rules_out, "w") as f:
    if rules:
        yaml.safe_dump({"groups": rules[0]["spec"]["groups"]}, f)

services = [d for d in docs if d["kind"] == "Service"]
for monitor in (d for d in operator if d["kind"] == "ServiceMonitor"):
    selector = monitor["spec"]["selector"]["matchLabels"]
    chosen = [s for s in services if all(s["metadata"]["labels"].get(k) == v for k, v in selector.items())]
    check("the ServiceMonitor selects the client Service", len(chosen) == 1, [s["metadata"]["name"] for s in chosen])
    endpoint = monitor["spec"]["endpoints"][0]
    ports = [p["name"] for s in chosen for p in s["spec"]["ports"]]
    check("the ServiceMonitor scrapes the registry port at /metrics",
          endpoint["port"] in ports and endpoint["path"] == "/metrics", endpoint)

for rule in rules:
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            bad = unknown_metrics(r["expr"])
            check(f"alert {r['alert']} names only documented metrics", not bad, bad)

for cm in (d for d in docs if d["kind"] == "ConfigMap" and "berth.json" in d.get("data", {})):
    try:
        dash = json.loads(cm["data"]["berth.json"])
        check("the dashboard is valid JSON", True)
    except ValueError as e:
        check("the dashboard is valid JSON", False, e)
        continue
    exprs = [t["expr"] for p in dash.get("panels", []) for t in p.get("targets", [])]
    check("the dashboard has queries", len(exprs) >= 10, len(exprs))
    bad = sorted({n for e in exprs for n in unknown_metrics(e)})
    check("the dashboard's queries name only documented metrics", not bad, bad)
    check("the dashboard is labelled for Grafana's sidecar",
          cm["metadata"]["labels"].get("grafana_dashboard") == "1")

sys.exit(0)

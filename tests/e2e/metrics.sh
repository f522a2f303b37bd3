#!/usr/bin/env bash
# End-to-end test of berth's metrics with a real Prometheus (Debian's package): it
# scrapes a three-node cluster; its query API shows every node up, exactly one leader
# and manifest pushes counted; `promtool check metrics` passes on every node's
# exposition; a killed node makes the under-replicated gauge rise, and it falls back to
# 0 once the node is back and repair has copied what it missed.
#
# Usage: tests/e2e/metrics.sh [SCENARIO...]   (default: all; see SCENARIOS below)
# Environment: see lib.sh.
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$E2E_DIR/lib.sh"
# shellcheck source=tests/e2e/cluster-lib.sh
source "$E2E_DIR/cluster-lib.sh"

SCENARIOS=(prometheus-scrape)
PROM_PORT=
PEERS=

# prom_start: Prometheus scraping the three nodes every second.
prom_start() {
    local dir=$SCENARIO_DIR/prometheus pid
    mkdir -p "$dir/data"
    PROM_PORT=$(free_port)
    cat >"$dir/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: berth
    static_configs:
      - targets: ['$(node_host 1)', '$(node_host 2)', '$(node_host 3)']
YAML
    prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
        --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn >"$dir/log" 2>&1 &
    pid=$!
    defer stop_pid "$pid"
    wait_until 60 "Prometheus ready" curl -fsS -o /dev/null "http://127.0.0.1:$PROM_PORT/-/ready"
}

# prom_value EXPR: the first value of an instant query, or nothing.
prom_value() {
    curl -fsS --max-time 5 "http://127.0.0.1:$PROM_PORT/api/v1/query" --data-urlencode "query=$1" |
        jq -r '.data.result[0].value[1] // empty'
}

prom_equals() { [[ $(prom_value "$1") == "$2" ]]; }

prom_above() {
    local v
    v=$(prom_value "$1")
    [[ -n $v ]] && awk -v v="$v" -v m="$2" 'BEGIN { exit !(v > m) }'
}

# push_small N NODE: a small image (its own config blob) as e2e/metrics:tN through NODE.
push_small() {
    local n=$1 node=$2 config digest manifest
    config=$(printf '{"architecture":"amd64","os":"linux","n":"%s-%s"}' "$E2E_SEED" "$n")
    digest=sha256:$(printf '%s' "$config" | sha256_hex)
    assert_eq "config blob $n" 201 "$(http_status POST \
        "http://$(node_host "$node")/v2/e2e/metrics/blobs/uploads/?digest=$digest" \
        -H 'Content-Type: application/octet-stream' --data-binary "$config")"
    manifest=$(jq -nc --arg d "$digest" --argjson s "${#config}" '{schemaVersion: 2,
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $d, size: $s},
        layers: []}')
    assert_eq "manifest $n" 201 "$(http_status PUT "http://$(node_host "$node")/v2/e2e/metrics/manifests/t$n" \
        -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary "$manifest")"
}

scenario_prometheus_scrape() {
    local n out
    prom_start
    wait_until 60 "every node up in Prometheus" prom_equals 'sum(up{job="berth"})' 3
    wait_until 30 "exactly one leader" prom_equals 'sum(berth_raft_is_leader)' 1
    prom_equals 'count(berth_raft_term)' 3 || die "not every node exposes its term"
    for n in 1 2 3 4 5 6; do
        push_small "$n" $(((n % 3) + 1))
    done
    wait_until 30 "six manifest pushes counted" \
        prom_equals 'sum(berth_http_requests_total{route="manifest",method="PUT",status="201"})' 6
    for n in 1 2 3; do
        out=$(curl -fsS "http://$(node_host "$n")/metrics" | promtool check metrics 2>&1) ||
            die "promtool check metrics on node $n: $out"
    done
    # A node lost: what it held is under-replicated until it is back and repaired.
    stop_pid "${NODE_PID[3]}" KILL
    NODE_PID[3]=
    for n in 7 8 9; do
        push_small "$n" 1
    done
    wait_until 60 "under-replicated blobs reported" \
        prom_above 'max(berth_replication_under_replicated_blobs)' 0
    node_launch 3 "$PEERS" --bootstrap-expect 3
    defer node_stop 3
    # Node 3 may repair before Prometheus's next scrape of it: both are waited for.
    wait_until 120 "no under-replicated blob after repair" \
        prom_equals 'max(berth_replication_under_replicated_blobs)' 0
    wait_until 30 "node 3 scraped again" prom_equals 'sum(up{job="berth"})' 3
}

main() {
    e2e_init
    if [[ $E2E_REGISTRY != berth ]]; then
        note "these metrics are berth's: nothing to run against $E2E_REGISTRY"
        summary metrics
        return 0
    fi
    command -v prometheus >/dev/null || die "prometheus is not installed (tests/run.sh installs it)"
    defer cluster_stop
    CLUSTER_ARGS=(--repair-interval 1)
    if ! cluster_start; then
        fail cluster "the cluster did not form"
        summary metrics
        return 1
    fi
    PEERS=$(cluster_peers 1 2 3)
    note "cluster at $(node_host 1) $(node_host 2) $(node_host 3)"
    run_scenarios "$@"
    summary metrics
}

main "$@"

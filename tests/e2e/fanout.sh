#!/usr/bin/env bash
# End-to-end test of blob fan-out across hosts: five berth nodes, each alone in a network
# namespace whose link is shaped with tc tbf (netns-lib.sh), one node holding a large
# blob, and the four others' own clients asking their own node for it at about the same
# time. A node that is still receiving the blob must already pass it on to a peer that
# asks, so the holder does not send one copy to every other node (a star around it).
#
# Usage: tests/e2e/fanout.sh [SCENARIO...]   (default: all; see SCENARIOS below)
# Environment: see lib.sh and netns-lib.sh (needs root), and
#   E2E_FANOUT_RATE     each node's link speed, in both directions (default 200mbit)
#   E2E_FANOUT_MIB      the blob's size in MiB (default 128)
#   E2E_FANOUT_TIMEOUT  seconds the four pulls may take together (default 300)
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$E2E_DIR/lib.sh"
# shellcheck source=tests/e2e/cluster-lib.sh
source "$E2E_DIR/cluster-lib.sh"
# shellcheck source=tests/e2e/netns-lib.sh
source "$E2E_DIR/netns-lib.sh"

SCENARIOS=(relay-from-a-receiver)

E2E_FANOUT_RATE=${E2E_FANOUT_RATE:-200mbit}
E2E_FANOUT_MIB=${E2E_FANOUT_MIB:-128}
E2E_FANOUT_TIMEOUT=${E2E_FANOUT_TIMEOUT:-300}

FANOUT_NODES=5
FANOUT_PORT=5000 # every node has an address of its own, so the ports are fixed
FANOUT_PEER_PORT=5001
FANOUT_REPO=e2e/fanout
FANOUT_SENT=berth_replication_fetch_sent_bytes_total

# node_host N: node N's client address. It replaces lib.sh's loopback one, so that
# cluster-lib.sh's status checks (cluster_agrees, node_status) reach the namespaces.
node_host() {
    printf '%s:%s\n' "$(netns_ip "$1")" "$FANOUT_PORT"
}

# ---------------------------------------------------------------- the cluster

# fanout_node_launch N PEERS: starts node N in its namespace, on its own address, with
# one copy of each blob (so a blob pushed to a node stays there alone).
fanout_node_launch() {
    local n=$1 peers=$2 ip
    ip=$(netns_ip "$n")
    mkdir -p "${NODE_DATA[n]}"
    netns_spawn "$n" "${NODE_DATA[n]}.log" "$BERTH_BIN" serve --plain-http \
        --data-dir "${NODE_DATA[n]}" --listen "$ip:$FANOUT_PORT" --peer-listen "$ip:$FANOUT_PEER_PORT" \
        --cluster-secret-file "$CLUSTER_SECRET" --peers "$peers" \
        --bootstrap-expect "$FANOUT_NODES" --replication-factor 1
    NODE_PID[n]=$NETNS_SPAWNED_PID
}

# fanout_settled: the nodes agree on five voters and a leader, or one of them has exited.
fanout_settled() {
    local n nodes
    for ((n = 1; n <= FANOUT_NODES; n++)); do
        pid_alive "${NODE_PID[n]}" || return 0
    done
    mapfile -t nodes < <(seq 1 "$FANOUT_NODES")
    cluster_agrees "$FANOUT_NODES" "" -- "${nodes[@]}"
}

# fanout_cluster_stop: SIGTERM to every node at once (each takes its shutdown delay, and
# a node that stops last, without a quorum, may take longer), then each is waited for.
fanout_cluster_stop() {
    local n
    for n in "${!NODE_PID[@]}"; do
        [[ -z ${NODE_PID[n]} ]] || kill -TERM "${NODE_PID[n]}" 2>/dev/null || true
    done
    cluster_stop
}

fanout_all_alive() {
    local n
    for ((n = 1; n <= FANOUT_NODES; n++)); do
        pid_alive "${NODE_PID[n]}" || return 1
    done
}

# fanout_cluster_start: five nodes, node N in namespace N, that form one cluster.
fanout_cluster_start() {
    local n peers=() list
    CLUSTER_DIR=$E2E_WORK/cluster
    CLUSTER_SECRET=$CLUSTER_DIR/secret
    mkdir -p "$CLUSTER_DIR"
    (umask 077 && printf 'berth-e2e-%s\n' "$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')" >"$CLUSTER_SECRET")
    for ((n = 1; n <= FANOUT_NODES; n++)); do
        NODE_DATA[n]=$CLUSTER_DIR/node$n
        peers+=("$(netns_ip "$n"):$FANOUT_PEER_PORT")
    done
    list=$(IFS=, && printf '%s' "${peers[*]}")
    for ((n = 1; n <= FANOUT_NODES; n++)); do
        fanout_node_launch "$n" "$list"
    done
    if wait_until $((2 * E2E_STARTUP_TIMEOUT)) "five nodes to form a cluster" fanout_settled &&
        fanout_all_alive; then
        return 0
    fi
    for ((n = 1; n <= FANOUT_NODES; n++)); do
        echo "node $n log tail:" >&2
        tail -n 5 "${NODE_DATA[n]}.log" >&2 || true
    done
    return 1
}

# ---------------------------------------------------------------- blobs and figures

# fanout_blob_path N HEX: where node N keeps the verified blob.
fanout_blob_path() {
    printf '%s/blobs/sha256/%s/%s\n' "${NODE_DATA[$1]}" "${2:0:2}" "$2"
}

# fanout_push N FILE DIGEST: a monolithic upload (POST, then one PUT with the whole body
# and ?digest=) to node N, from a client in node N's namespace.
fanout_push() {
    local n=$1 file=$2 digest=$3 code location
    REGISTRY_HOST=$(node_host "$n")
    code=$(netns_exec "$n" curl -sS --max-time 30 -X POST -D "$SCENARIO_DIR/response.headers" \
        -o /dev/null -w '%{http_code}' "http://$REGISTRY_HOST/v2/$FANOUT_REPO/blobs/uploads/")
    assert_eq "POST of an upload to node $n" 202 "$code"
    location=$(registry_url "$(response_header Location)")
    if [[ $location == *\?* ]]; then location+="&digest=$digest"; else location+="?digest=$digest"; fi
    code=$(netns_exec "$n" curl -sS --max-time "$E2E_CLIENT_TIMEOUT" -X PUT -T "$file" \
        -H 'Content-Type: application/octet-stream' -H 'Expect:' -o /dev/null -w '%{http_code}' "$location")
    assert_eq "PUT of the blob to node $n" 201 "$code"
}

# fanout_sent N FROM: the sum of node N's $FANOUT_SENT samples labelled from="FROM"
# (any label when FROM is empty); 0 when it has none.
fanout_sent() {
    curl -fsS --max-time 10 "http://$(node_host "$1")/metrics" |
        awk -v name="$FANOUT_SENT" -v from="$2" '
            ($1 == name || index($1, name "{") == 1) && (from == "" || index($1, "from=\"" from "\"")) { sum += $2 }
            END { printf "%.0f\n", sum }'
}

# fanout_labelled N: node N exposes $FANOUT_SENT with a `from` label.
fanout_labelled() {
    local metrics
    metrics=$(curl -fsS --max-time 10 "http://$(node_host "$1")/metrics") || return 1
    grep -q "^$FANOUT_SENT{.*from=\"" <<<"$metrics"
}

# fanout_pull N URL OUT: node N's own client GETs URL in the background; the body's sha256
# goes to OUT, curl's time and size to OUT.log. Sets NETNS_SPAWNED_PID.
fanout_pull() {
    local n=$1 url=$2 out=$3
    # shellcheck disable=SC2016 # expanded by the inner shell
    netns_spawn "$n" "$out.log" bash -c 'set -o pipefail
        curl -fsS --max-time "$1" -w "%{stderr}%{time_total} s, %{size_download} bytes\n" "$2" |
            sha256sum | cut -c1-64 >"$3"' pull "$E2E_FANOUT_TIMEOUT" "$url" "$out"
}

fanout_all_gone() {
    local pid
    for pid in "$@"; do
        pid_gone "$pid" || return 1
    done
}

# fanout_fetch_lines: the lines each node logged about fetching a blob from a peer.
fanout_fetch_lines() {
    local n
    for ((n = 1; n <= FANOUT_NODES; n++)); do
        grep -h fetching "${NODE_DATA[n]}.log" 2>/dev/null | head -n 5 | cut -c1-300 | sed "s/^/node $n: /" || true
    done
}

# ---------------------------------------------------------------- scenarios

scenario_relay_from_a_receiver() {
    local blob=$SCENARIO_DIR/blob size hex digest n pids=() status flight=0 store1 sent flights=() stores=() reason lines
    size=$((E2E_FANOUT_MIB * 1024 * 1024))
    random_bytes "$size" fanout >"$blob"
    hex=$(sha256_hex <"$blob")
    digest=sha256:$hex
    fanout_push 1 "$blob" "$digest"
    [[ -f $(fanout_blob_path 1 "$hex") ]] || die "node 1 took the upload but keeps no $digest"
    for ((n = 2; n <= FANOUT_NODES; n++)); do
        [[ ! -e $(fanout_blob_path "$n" "$hex") ]] ||
            die "with --replication-factor 1, node $n holds a copy of $digest right after its upload to node 1"
    done
    rm -f "$blob"
    for ((n = 1; n <= FANOUT_NODES; n++)); do
        flights[n]=$(fanout_sent "$n" flight)
        stores[n]=$(fanout_sent "$n" store)
    done
    # Node N's own client asks node N, the next one half a second later.
    for ((n = 2; n <= FANOUT_NODES; n++)); do
        fanout_pull "$n" "http://$(node_host "$n")/v2/$FANOUT_REPO/blobs/$digest" "$SCENARIO_DIR/pull$n"
        pids+=("$NETNS_SPAWNED_PID")
        defer stop_pid "$NETNS_SPAWNED_PID"
        ((n == FANOUT_NODES)) || sleep 0.5
    done
    wait_until "$((E2E_FANOUT_TIMEOUT + 15))" "the pulls of nodes 2 to $FANOUT_NODES" fanout_all_gone "${pids[@]}" ||
        die "the pulls did not end within $((E2E_FANOUT_TIMEOUT + 15))s"
    for ((n = 2; n <= FANOUT_NODES; n++)); do
        status=0
        wait "${pids[n - 2]}" || status=$?
        ((status == 0)) || die "node $n's pull failed (exit $status): $(tail -n 2 "$SCENARIO_DIR/pull$n.log")"
        assert_eq "sha256 of the body node $n served" "$hex" "$(<"$SCENARIO_DIR/pull$n")"
        scenario_note "node $n's pull: $(tail -n 1 "$SCENARIO_DIR/pull$n.log")"
    done
    for ((n = 1; n <= FANOUT_NODES; n++)); do
        flights[n]=$(($(fanout_sent "$n" flight) - flights[n]))
        stores[n]=$(($(fanout_sent "$n" store) - stores[n]))
        sent=$(fanout_sent "$n" "")
        flight=$((flight + flights[n]))
        scenario_note "node $n sent to peers: ${flights[n]} bytes while receiving (from=\"flight\"), ${stores[n]} from its store (from=\"store\"); $sent in all"
    done
    store1=${stores[1]}
    reason=
    if ((flight <= 0)); then
        reason="no node passed on the blob while it was still receiving it: $FANOUT_SENT{from=\"flight\"} grew by 0 on all $FANOUT_NODES nodes"
        fanout_labelled 1 || reason+=" (this berth exposes no $FANOUT_SENT{from=...} samples)"
    elif ((store1 >= 4 * size)); then
        reason="node 1 sent $store1 bytes from its store, $(awk -v s="$store1" -v b="$size" 'BEGIN { printf "%.1f", s / b }') copies of the blob: a star around the holder (must be under 4)"
    fi
    if [[ -n $reason ]]; then
        mapfile -t lines < <(fanout_fetch_lines)
        ((${#lines[@]} > 0)) || lines=("no node logged a line with \"fetching\"")
        for sent in "${lines[@]}"; do
            scenario_note "$sent"
        done
        die "$reason"
    fi
    scenario_note "copies of the blob sent: $flight bytes by receivers, $store1 by node 1 from its store ($(awk -v s="$store1" -v b="$size" 'BEGIN { printf "%.2f", s / b }') blob sizes)"
}

# ---------------------------------------------------------------- main

main() {
    local n
    e2e_init
    if [[ $E2E_REGISTRY != berth ]]; then
        note "fan-out between berth nodes: nothing to run against $E2E_REGISTRY"
        summary fanout
        return 0
    fi
    if [[ $(id -u) != 0 ]]; then
        fail fanout "network namespaces need root"
        summary fanout
        return 1
    fi
    if [[ ! -x $BERTH_BIN ]]; then
        fail fanout "berth binary not found: $BERTH_BIN"
        summary fanout
        return 1
    fi
    defer netns_down
    if ! netns_up "$FANOUT_NODES" "$E2E_FANOUT_RATE"; then
        fail fanout "could not build $FANOUT_NODES network namespaces shaped at $E2E_FANOUT_RATE"
        summary fanout
        return 1
    fi
    defer fanout_cluster_stop
    if ! fanout_cluster_start; then
        fail fanout "the $FANOUT_NODES nodes did not form a cluster"
        summary fanout
        return 1
    fi
    for ((n = 1; n <= FANOUT_NODES; n++)); do
        note "node $n at $(node_host "$n") in $(netns_name "$n") (pid ${NODE_PID[n]}), link $E2E_FANOUT_RATE"
    done
    (($# > 0)) || set -- "${SCENARIOS[@]}"
    for n in "$@"; do
        run_scenarios "$n"
        show_notes "$n"
    done
    summary fanout
}

main "$@"

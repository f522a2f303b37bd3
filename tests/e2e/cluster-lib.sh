# Three berth processes on loopback that form a cluster, for the end-to-end scripts.
# Source after lib.sh; do not run it.

CLUSTER_DIR=    # $E2E_WORK/cluster: secret, node data directories and logs
CLUSTER_SECRET= # the secret file every node and `berth cluster` get
NODE_PID=()     # indexed by node number (1, 2, 3; 4 for a replacement)
NODE_PORT=()    # client API port
NODE_PEER_PORT=()
NODE_DATA=()
USED_PORTS=() # ports handed out here, not listening yet
NEW_PORT=
CLUSTER_ARGS=() # more `berth serve` options for every node

# node_ports N: chooses node N's client and peer ports and its data directory.
node_ports() {
    local n=$1
    new_port || return 1
    NODE_PORT[n]=$NEW_PORT
    new_port || return 1
    NODE_PEER_PORT[n]=$NEW_PORT
    NODE_DATA[n]=$CLUSTER_DIR/node$n
}

# node_launch N PEERS [SERVE OPTIONS...]: starts node N in the background.
node_launch() {
    local n=$1 peers=$2
    shift 2
    mkdir -p "${NODE_DATA[n]}" || return 1
    "$BERTH_BIN" serve --plain-http --data-dir "${NODE_DATA[n]}" --listen "$(node_host "$n")" \
        --peer-listen "127.0.0.1:${NODE_PEER_PORT[n]}" --cluster-secret-file "$CLUSTER_SECRET" \
        --peers "$peers" "${CLUSTER_ARGS[@]}" "$@" >>"${NODE_DATA[n]}.log" 2>&1 &
    NODE_PID[n]=$!
    # A scenario runs in a subshell: its caller learns a restarted node's PID here.
    printf '%s\n' "$!" >"${NODE_DATA[n]}.pid"
}

# cluster_peers N...: the peer addresses of nodes N, comma-separated, for --peers.
cluster_peers() {
    local n list=()
    for n in "$@"; do
        list+=("127.0.0.1:${NODE_PEER_PORT[n]}")
    done
    (IFS=,; printf '%s\n' "${list[*]}")
}

node_stop() {
    [[ -n ${NODE_PID[$1]:-} ]] || return 0
    stop_pid "${NODE_PID[$1]}"
    NODE_PID[$1]=
}

cluster_stop() {
    local n
    for n in "${!NODE_PID[@]}"; do
        node_stop "$n"
    done
}

# node_status N: node N's /_berth/cluster/status JSON. Node ids exceed 2^53, which jq
# rounds, so nodes are told apart by their api_addr here, and removal reads the id from
# the node's data directory.
node_status() {
    curl -fsS --max-time 5 "http://$(node_host "$1")/_berth/cluster/status"
}

# node_leader N: the api_addr of the leader as node N sees it (empty without one).
node_leader() {
    node_status "$1" | jq -r '.members[] | select(.leader) | .api_addr'
}

# node_sees_voters N COUNT [API_ADDR]: node N knows a leader and COUNT voters (API_ADDR among them).
node_sees_voters() {
    local status
    status=$(node_status "$1" 2>/dev/null) || return 1
    jq -e --argjson count "$2" --arg api "${3:-}" \
        '.leader_id != null and ([.members[] | select(.voter)] | length) == $count
         and ($api == "" or any(.members[]; .voter and .api_addr == $api))' \
        <<<"$status" >/dev/null
}

# cluster_agrees COUNT [API_ADDR] -- N...: every node N answers /v2/ (200, or 401 with
# sign-in on), sees COUNT voters
# (API_ADDR among them) and they all name the same leader.
cluster_agrees() {
    local count=$1 api=$2 n leaders=()
    shift 3
    for n in "$@"; do
        # 401 counts: with sign-in on, /v2/ refuses an anonymous caller.
        [[ $(http_status GET "http://$(node_host "$n")/v2/" --max-time 2 2>/dev/null) =~ ^(200|401)$ ]] ||
            return 1
        node_sees_voters "$n" "$count" "$api" || return 1
        leaders+=("$(node_leader "$n")")
    done
    [[ -n ${leaders[0]} ]] && [[ $(printf '%s\n' "${leaders[@]}" | sort -u | wc -l) == 1 ]]
}

# cluster_start: three nodes that form a cluster (--bootstrap-expect 3).
cluster_start() {
    local n peers=
    CLUSTER_DIR=$E2E_WORK/cluster
    CLUSTER_SECRET=$CLUSTER_DIR/secret
    mkdir -p "$CLUSTER_DIR"
    (umask 077 && printf 'berth-e2e-%s\n' "$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')" >"$CLUSTER_SECRET")
    for n in 1 2 3; do
        node_ports "$n" || return 1
        peers+=${peers:+,}127.0.0.1:${NODE_PEER_PORT[n]}
    done
    for n in 1 2 3; do
        node_launch "$n" "$peers" --bootstrap-expect 3 || return 1
    done
    if ! wait_until $((2 * E2E_STARTUP_TIMEOUT)) "three nodes to form a cluster" \
        cluster_agrees 3 "" -- 1 2 3; then
        for n in 1 2 3; do
            echo "node $n log tail:" >&2
            tail -n 5 "${NODE_DATA[n]}.log" >&2
        done
        return 1
    fi
}

# pull_check N REPO TAG DIGEST: node N, asked directly, names REPO:TAG's manifest DIGEST,
# and a skopeo pull from it gives the same manifest bytes and verified blobs.
pull_check() {
    local n=$1 repo=$2 tag=$3 digest=$4 host dir
    host=$(node_host "$n")
    dir=pulled/node$n/${repo//\//_}-$tag
    assert_eq "node $n: digest of $repo:$tag" "$digest" \
        "$(REGISTRY_HOST=$host manifest_digest "$repo" "$tag")"
    rm -rf "$dir"
    mkdir -p "${dir%/*}"
    REGISTRY_HOST=$host skopeo_pull "$repo:$tag" "dir:$dir"
    dir_check_image "$dir" "$digest"
    rm -rf "$dir"
}

# pull_check_all FILE N...: pull_check on every node N for every `REPO TAG DIGEST` line.
pull_check_all() {
    local file=$1 repo tag digest n
    shift
    while read -r repo tag digest; do
        for n in "$@"; do
            pull_check "$n" "$repo" "$tag" "$digest" </dev/null
        done
    done <"$file"
}

# data_dir_blobs N FILE: how many digests of FILE node N's data directory holds, intact.
data_dir_blobs() {
    local data=${NODE_DATA[$1]} file=$2 digest hex count=0
    while read -r digest; do
        hex=${digest#sha256:}
        if [[ -f $data/blobs/sha256/${hex:0:2}/$hex &&
            $(sha256_hex <"$data/blobs/sha256/${hex:0:2}/$hex") == "$hex" ]]; then
            count=$((count + 1))
        fi
    done <"$file"
    printf '%s\n' "$count"
}

# cli_status N: `berth cluster status --json` of node N.
cli_status() {
    bounded "$BERTH_BIN" cluster status --node "http://$(node_host "$1")" --json 2>/dev/null
}

# push_image N LAYOUT TAG REPO [LIST]: pushes LAYOUT:TAG to node N and records it in LIST
# (default images) and its blobs in LIST.blobs.
push_image() {
    local n=$1 layout=$2 tag=$3 repo=$4 list=${5:-images} digest
    REGISTRY_HOST=$(node_host "$n") skopeo_push "oci:$layout:$tag" "$repo:$tag" >/dev/null
    digest=$(layout_digest "$layout" "$tag")
    printf '%s %s %s\n' "$repo" "$tag" "$digest" >>"$CLUSTER_DIR/$list"
    layout_blob "$layout" "$digest" | jq -r '.config.digest, .layers[].digest' >>"$CLUSTER_DIR/$list.blobs"
    sort -u -o "$CLUSTER_DIR/$list.blobs" "$CLUSTER_DIR/$list.blobs"
}

# replicated N...: every node N holds every blob of the recorded images, and reports
# (through `berth cluster status`) no under-replicated and no unavailable blob.
replicated() {
    local total n status
    total=$(wc -l <"$CLUSTER_DIR/images.blobs")
    for n in "$@"; do
        (($(data_dir_blobs "$n" "$CLUSTER_DIR/images.blobs") == total)) || return 1
        status=$(cli_status "$n") || return 1
        jq -e '.repair != null and .repair.under_replicated == 0 and .repair.unavailable == 0' \
            <<<"$status" >/dev/null || return 1
    done
}

# replication_figures N...: what each node N holds of those blobs, and its repair report.
replication_figures() {
    local n
    for n in "$@"; do
        printf 'node %s: %s of %s blobs, repair %s; ' "$n" \
            "$(data_dir_blobs "$n" "$CLUSTER_DIR/images.blobs")" \
            "$(wc -l <"$CLUSTER_DIR/images.blobs")" "$(cli_status "$n" | jq -c .repair)"
    done
}

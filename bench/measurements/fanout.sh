# shellcheck shell=bash
# fanout: five hosts, each a network namespace whose link is shaped to BENCH_FANOUT_RATE
# in both directions with tc tbf (tests/e2e/netns-lib.sh), all pull one image of
# BENCH_FANOUT_MIB MiB at once. berth side: a 5-node cluster, one node per host, with its
# default replication factor (3), and every host pulls from its own node, so the two
# nodes without the layer fetch it from their peers. Reference side: one CNCF
# Distribution, filesystem storage, in a sixth host shaped the same, that all five pull
# from. A pull is GET of the manifest by tag, then of the config and the layer. The
# figure is the time from the start until the last of the five pulls has completed.
#
# Each run pushes a fresh image to both (so no berth node has it from an earlier run),
# lets berth's third copy land, then times both sides, in alternating order. The second
# row sets berth's time against the link-speed limit: a node without the layer has to
# receive it once at the link's rate; Distribution's own limit, five layers out of one
# link, is in the row's name.

: "${BENCH_FANOUT_RATE:=1gbit}"
: "${BENCH_FANOUT_MIB:=1024}"
: "${BENCH_FANOUT_TIMEOUT:=900}"

# shellcheck source=tests/e2e/netns-lib.sh
source "$BENCH_DIR/../tests/e2e/netns-lib.sh"

FANOUT_NODES=5
FANOUT_REF_HOST=6 # the namespace Distribution runs in
FANOUT_PORT=5000  # every host has an address of its own, so the ports are fixed
FANOUT_PEER_PORT=5001
FANOUT_REPO=bench/fanout
FANOUT_REF_URL=''
FANOUT_REF_PID=''
FANOUT_EXIT_TRAP=''

measure_fanout() {
    # cluster.sh's helpers (await_cluster, count_holders, cluster_stop, ...) see five nodes.
    # shellcheck disable=SC2034 # read by those helpers
    local CLUSTER_NODES=$FANOUT_NODES
    local run side dir layer digest bytes seconds rate_bits ideal_cand ideal_ref
    rate_bits=$(netns_rate_bits "$BENCH_FANOUT_RATE") ||
        die "BENCH_FANOUT_RATE must be a whole number of bit, kbit, mbit or gbit, not '$BENCH_FANOUT_RATE'"
    require_free_space "$WORK_DIR" "$(fanout_space_gib)"
    for ((run = 1; run <= BENCH_REPEAT; run++)); do
        fanout_image "$run" >/dev/null
    done
    samples_reset
    sync
    fanout_trap_set
    netns_up $((FANOUT_NODES + 1)) "$BENCH_FANOUT_RATE" || die "could not build $((FANOUT_NODES + 1)) network namespaces"
    fanout_cluster_start
    fanout_ref_start
    for ((run = 1; run <= BENCH_REPEAT; run++)); do
        dir=$(fanout_image "$run")
        layer=$(blob_file "$BENCH_FANOUT_MIB" "fanout$run")
        digest=$(digest_of "$layer")
        bytes=$(size_of "$layer")
        fanout_push "${CLUSTER_URL[run % FANOUT_NODES]}" "$dir" "$layer"
        await_copies "$digest" 3 >/dev/null ||
            log "warning: $digest is on $(count_holders "$digest") of $FANOUT_NODES nodes ${BENCH_CLUSTER_TIMEOUT}s after its push"
        log "run $run: the layer is on nodes $(fanout_holders "$digest") of berth"
        fanout_push "$FANOUT_REF_URL" "$dir" "$layer"
        sync
        for side in $(sides_in_turn "$run"); do
            seconds=$(fanout_pulls "$side" "$dir" "$layer")
            samples_add last "$side" "$seconds"
            log "run $run, $(side_label "$side"): 5 pulls at once, the last done after $(fmt "$seconds") s ($(fmt "$(mb_per_s $((bytes * FANOUT_NODES)) "$seconds")") MB/s of layers in all)"
        done
        sync
    done
    fanout_cluster_stop
    fanout_ref_stop
    netns_down
    fanout_trap_restore
    ideal_cand=$(calc "$bytes * 8 / $rate_bits")
    ideal_ref=$(calc "$FANOUT_NODES * $bytes * 8 / $rate_bits")
    record_samples "fan-out: 5 hosts at $BENCH_FANOUT_RATE each pull one $(size_label "$BENCH_FANOUT_MIB") image at once, all from one Distribution vs each from its own berth node: seconds until the last pull completed" s last 'ratio<=0.334'
    record "fan-out: the link-speed limit (a node without the layer receives it once at $BENCH_FANOUT_RATE) vs berth's time; Distribution's limit, 5 layers out of one link: $(fmt "$ideal_ref") s, it took $(fmt "$(samples_median last ref)") s" s \
        "$ideal_cand" "$(samples_median last cand)" report
}

# fanout_space_gib : a bound on the disk fanout takes: per run the layer's input file,
# one copy on every berth node and one in Distribution.
fanout_space_gib() {
    printf '%s\n' $(((BENCH_REPEAT * (1 + FANOUT_NODES + 1)) * BENCH_FANOUT_MIB / 1024 + 2))
}

# --- the exit trap

# fanout_trap_set : the run's exit trap also removes the namespaces (netns_down stops
# whatever still runs in them, all of it started here), before its own cleanup.
fanout_trap_set() {
    local previous
    FANOUT_EXIT_TRAP=$(trap -p EXIT)
    previous=${FANOUT_EXIT_TRAP#"trap -- "}
    previous=${previous% EXIT}
    eval "previous=${previous:-''}"
    # shellcheck disable=SC2064 # the previous command is fixed now, on purpose
    trap "netns_down; ${previous:-:}" EXIT
}

fanout_trap_restore() {
    if [[ -n $FANOUT_EXIT_TRAP ]]; then eval "$FANOUT_EXIT_TRAP"; else trap - EXIT; fi
}

# --- the image

# fanout_image RUN : a one-layer OCI image (the layer is blob_file's "fanout<RUN>", a
# config naming it and the manifest) in DATA_DIR/fanout-<MIB>m-<RUN>; prints that
# directory.
fanout_image() {
    local run=$1 dir="$DATA_DIR/fanout-${BENCH_FANOUT_MIB}m-$1" layer layer_digest config_digest
    if [[ ! -s $dir/manifest.json ]]; then
        layer=$(blob_file "$BENCH_FANOUT_MIB" "fanout$run")
        layer_digest=$(digest_of "$layer")
        mkdir -p "$dir"
        jq -cn --arg diff "$layer_digest" --arg run "$run" \
            '{architecture: "amd64", os: "linux", config: {Labels: {"bench.fanout.run": $run}},
              rootfs: {type: "layers", diff_ids: [$diff]}}' >"$dir/config.json"
        config_digest=$(sha256_of "$dir/config.json")
        jq -cn --arg mt "$OCI_MANIFEST" \
            --arg cmt "$OCI_CONFIG" --arg cd "$config_digest" --argjson cs "$(size_of "$dir/config.json")" \
            --arg lmt "$OCI_LAYER" --arg ld "$layer_digest" --argjson ls "$(size_of "$layer")" \
            '{schemaVersion: 2, mediaType: $mt,
              config: {mediaType: $cmt, digest: $cd, size: $cs},
              layers: [{mediaType: $lmt, digest: $ld, size: $ls}]}' >"$dir/manifest.json"
    fi
    printf '%s\n' "$dir"
}

# fanout_push BASE_URL DIR LAYER : config, layer and manifest (tag "latest"), from this
# machine over the bridge.
fanout_push() {
    local base=$1 dir=$2 layer=$3
    put_blob "$base" "$FANOUT_REPO" "$dir/config.json" >/dev/null
    put_blob "$base" "$FANOUT_REPO" "$layer" >/dev/null
    curl_expect 201 -X PUT -H "Content-Type: $OCI_MANIFEST" --data-binary "@$dir/manifest.json" \
        "$base/v2/$FANOUT_REPO/manifests/latest" >/dev/null
}

# fanout_holders DIGEST : the numbers of the berth nodes that hold the blob.
fanout_holders() {
    local i holders=()
    for ((i = 0; i < FANOUT_NODES; i++)); do
        [[ -e $(blob_path "$i" "$1") ]] && holders+=("$((i + 1))")
    done
    printf '%s\n' "${holders[*]:-none}"
}

# --- the pulls

# fanout_pulls SIDE DIR LAYER : host I (1..5) pulls the image, all at once, from its own
# berth node (cand) or from Distribution (ref). Every response must bring the expected
# bytes. Prints the seconds from the start until the last pull completed.
fanout_pulls() {
    local side=$1 dir=$2 layer=$3 i url start pids=() expected out last=0 end got
    expected="$(size_of "$dir/manifest.json") $(size_of "$dir/config.json") $(size_of "$layer")"
    out="$WORK_DIR/fanout-pull"
    rm -f "$out".*
    start=$(now)
    for ((i = 1; i <= FANOUT_NODES; i++)); do
        if [[ $side == ref ]]; then url=$FANOUT_REF_URL; else url=${CLUSTER_URL[i - 1]}; fi
        # shellcheck disable=SC2016 # expanded by the inner shell
        netns_spawn "$i" "$out.$i.log" bash -c '
            get() { curl -fsS --max-time "$2" -o /dev/null -w "%{size_download}" "${@:3}" "$1"; }
            m=$(get "$1/v2/$2/manifests/latest" "$5" -H "Accept: $6") &&
                c=$(get "$1/v2/$2/blobs/$3" "$5") && l=$(get "$1/v2/$2/blobs/$4" "$5") &&
                printf "%s %s %s %s\n" "$m" "$c" "$l" "$EPOCHREALTIME" >"$7"' \
            pull "$url" "$FANOUT_REPO" "$(digest_of "$dir/config.json")" "$(digest_of "$layer")" \
            "$BENCH_FANOUT_TIMEOUT" "$OCI_MANIFEST" "$out.$i"
        # This runs in $(...): a run cut short leaves these to netns_down, in the exit trap.
        pids+=("$NETNS_SPAWNED_PID")
    done
    for ((i = 1; i <= FANOUT_NODES; i++)); do
        wait "${pids[i - 1]}" || die "$(side_label "$side"): host $i's pull failed: $(tail -n 2 "$out.$i.log")"
        read -r -a got <"$out.$i" || die "$(side_label "$side"): host $i's pull reported nothing"
        [[ "${got[*]:0:3}" == "$expected" ]] ||
            die "$(side_label "$side"): host $i's pull brought ${got[*]:0:3} bytes (manifest, config, layer), not $expected"
        end=$(calc "${got[3]} - $start")
        last=$(awk -v a="$last" -v b="$end" 'BEGIN { print (b > a) ? b : a }')
    done
    printf '%s\n' "$last"
}

# --- berth: five nodes, one per host

# fanout_cluster_start : node I+1 in host I+1, on its own address, the default
# replication factor; up once every node sees five voters and a leader.
fanout_cluster_start() {
    local i ip peers=() secret="$WORK_DIR/cluster.secret"
    CLUSTER_COUNT=$((CLUSTER_COUNT + 1))
    [[ -s $secret ]] || (umask 077 && openssl rand -hex 24 >"$secret")
    for ((i = 0; i < FANOUT_NODES; i++)); do
        peers+=("$(netns_ip $((i + 1))):$FANOUT_PEER_PORT")
    done
    CLUSTER_PEERS=$(IFS=, && printf '%s' "${peers[*]}")
    for ((i = 0; i < FANOUT_NODES; i++)); do
        ip=$(netns_ip $((i + 1)))
        CLUSTER_URL[i]="http://$ip:$FANOUT_PORT"
        CLUSTER_DIR[i]="$WORK_DIR/cluster-$CLUSTER_COUNT-node$((i + 1))"
        rm -rf "${CLUSTER_DIR[i]}"
        mkdir -p "${CLUSTER_DIR[i]}/data"
        netns_spawn $((i + 1)) "${CLUSTER_DIR[i]}/server.log" env RUST_LOG="$BENCH_RUST_LOG" \
            "$BERTH_BIN" serve --plain-http --data-dir "${CLUSTER_DIR[i]}/data" \
            --listen "$ip:$FANOUT_PORT" --peer-listen "$ip:$FANOUT_PEER_PORT" \
            --cluster-secret-file "$secret" --peers "$CLUSTER_PEERS" --bootstrap-expect "$FANOUT_NODES"
        CLUSTER_PID[i]=$NETNS_SPAWNED_PID
        STARTED_PIDS+=("$NETNS_SPAWNED_PID")
    done
    if ! await_cluster; then
        cluster_logs >&2
        die "the $FANOUT_NODES berth nodes did not form a cluster"
    fi
    mark_node_logs
    log "berth up: ${CLUSTER_URL[*]} (pids ${CLUSTER_PID[*]}), links at $BENCH_FANOUT_RATE"
}

# fanout_cluster_stop : what the nodes logged while running, then SIGTERM to every node
# at once (each takes its shutdown delay, and the last ones, left without a quorum, would
# take longer), then cluster.sh's cluster_stop frees their storage.
fanout_cluster_stop() {
    local pid
    report_node_logs
    for pid in "${CLUSTER_PID[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${CLUSTER_PID[@]}"; do
        stop_pid "$pid"
    done
    mark_node_logs
    cluster_stop
}

# --- the reference: one Distribution in the sixth host

fanout_ref_start() {
    local dir="$WORK_DIR/fanout-distribution" ip tries
    ip=$(netns_ip "$FANOUT_REF_HOST")
    rm -rf "$dir"
    mkdir -p "$dir/data"
    write_distribution_config "$dir" "$FANOUT_PORT"
    sed -i "s/^  addr: .*/  addr: $ip:$FANOUT_PORT/" "$dir/config.yml"
    netns_spawn "$FANOUT_REF_HOST" "$dir/server.log" "$REFERENCE_BIN" serve "$dir/config.yml"
    FANOUT_REF_PID=$NETNS_SPAWNED_PID
    STARTED_PIDS+=("$FANOUT_REF_PID")
    FANOUT_REF_URL="http://$ip:$FANOUT_PORT"
    for ((tries = 0; tries < 300; tries++)); do
        pid_gone "$FANOUT_REF_PID" && break
        [[ $(curl -s -o /dev/null -m 2 -w '%{http_code}' "$FANOUT_REF_URL/v2/") == 200 ]] && {
            log "reference up: $FANOUT_REF_URL (pid $FANOUT_REF_PID), link at $BENCH_FANOUT_RATE"
            return 0
        }
        sleep 0.1
    done
    tail -n 5 "$dir/server.log" >&2 || true
    die "Distribution did not come up in host $FANOUT_REF_HOST"
}

fanout_ref_stop() {
    [[ -n $FANOUT_REF_PID ]] || return 0
    stop_pid "$FANOUT_REF_PID"
    FANOUT_REF_PID=''
    rm -rf "$WORK_DIR/fanout-distribution"
}

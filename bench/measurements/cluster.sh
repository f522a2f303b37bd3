# shellcheck shell=bash
# cluster-push, cluster-relay, cluster-spread: berth as a cluster of three processes on
# loopback. These rows compare berth with itself, so their "reference" column is berth's
# own baseline: one standalone node (cluster-push) or a read from the node that holds
# the blob (cluster-relay). Each measurement also reports the peak RSS of every node.
#
# The cluster's state: node i (0-based) keeps its pid, API URL, peer port and dir in
# CLUSTER_PID[i], CLUSTER_URL[i], CLUSTER_PEER_PORT[i] and CLUSTER_DIR[i]; LB_PID and
# LB_URL are the haproxy in front of it. Every pid is also in STARTED_PIDS.
# CLUSTER_LOG_FORMED[i] counts the lines node i had logged once the cluster formed.

CLUSTER_NODES=3
CLUSTER_PID=() CLUSTER_URL=() CLUSTER_PEER_PORT=() CLUSTER_DIR=() CLUSTER_LOG_FORMED=()
LB_PID='' LB_URL=''
CLUSTER_ARGS=()
CLUSTER_COUNT=0
CLUSTER_PEERS='' CLUSTER_FACTOR=default

measure_cluster_push() {
    local run side file url what seconds rate digest
    for ((run = 1; run <= BENCH_REPEAT; run++)); do
        blob_file "$BENCH_SIZE_MIB" "$run" >/dev/null
    done
    samples_reset
    sync
    start_side single berth
    cluster_start default
    lb_start
    for ((run = 1; run <= BENCH_REPEAT; run++)); do
        file=$(blob_file "$BENCH_SIZE_MIB" "$run")
        digest=$(digest_of "$file")
        for side in $(sides_in_turn "$run"); do
            if [[ $side == ref ]]; then url=${REG_URL[single]} what='1 node'; else url=$LB_URL what=cluster; fi
            seconds=$(put_blob "$url" bench/cluster-push "$file")
            rate=$(mb_per_s "$(size_of "$file")" "$seconds")
            samples_add push "$side" "$rate"
            log "run $run, $what: $(fmt "$rate") MB/s"
            # The third copy follows after the 201: let it land before the next timed
            # upload, so that no run pays for the one before.
            [[ $side == ref ]] || await_copies "$digest" "$CLUSTER_NODES" >/dev/null ||
                log "warning: $digest is on $(count_holders "$digest") of $CLUSTER_NODES nodes after ${BENCH_CLUSTER_TIMEOUT}s"
            sync
        done
    done
    samples_add rss ref "$(peak_rss_mib single)"
    cluster_rss_samples
    lb_stop
    cluster_stop
    stop_side single
    record_samples "cluster push $(size_label "$BENCH_SIZE_MIB") via haproxy, 3 nodes vs 1 node" MB/s push 'ratio>=0.6'
    record_cluster_rss push "$(samples_median rss ref)" "vs 1 node"
}

measure_cluster_relay() {
    local run fresh recycled
    for ((run = 1; run <= BENCH_REPEAT; run++)); do
        blob_file "$BENCH_SIZE_MIB" "$run" >/dev/null
    done
    samples_reset
    sync
    cluster_start 1
    relay_runs ''
    cluster_rss_samples
    cluster_stop
    # Again with the holders' read check off: the relaying node's check stays (a
    # relayed copy is always verified), so this shows the cost of the second pass.
    CLUSTER_ARGS=(--verify-reads false)
    cluster_start 1
    relay_runs unchecked-
    cluster_stop
    CLUSTER_ARGS=()
    read -r fresh recycled <<<"$(first_touch_cost "$BENCH_SIZE_MIB")"
    log "this machine: writing $(size_label "$BENCH_SIZE_MIB") into the page cache beside a cached file (fresh memory, while any is left untouched) took $fresh s of system time, into memory just freed $recycled s"
    record_samples "cluster GET $(size_label "$BENCH_SIZE_MIB"), relayed by a node without it vs local" MB/s get 'ratio>=0.7'
    record "cluster GET relayed vs min(local GET, one core's SHA-256 at $(fmt "$(samples_median sha ref)") MB/s)" MB/s \
        "$(awk -v a="$(samples_median get ref)" -v b="$(samples_median sha ref)" 'BEGIN { print (a < b) ? a : b }')" \
        "$(samples_median get cand)" 'ratio>=0.7'
    record_samples "cluster GET: CPU seconds per GiB, all nodes and the client, relayed vs local" s/GiB cpu report
    record_samples "cluster GET: CPU seconds per GiB of the node the client reads from, relayed vs local" s/GiB serving report
    record_samples "cluster GET: what $(nproc) cores move at that CPU cost, relayed vs local" MB/s ceiling report
    record "cluster GET with --verify-reads false (only the relaying node hashes) vs min(local GET, one core's SHA-256)" MB/s \
        "$(awk -v a="$(samples_median unchecked-get ref)" -v b="$(samples_median sha ref)" 'BEGIN { print (a < b) ? a : b }')" \
        "$(samples_median unchecked-get cand)" report
    record_samples "cluster GET with --verify-reads false: CPU seconds per GiB, all nodes and the client, relayed vs local" s/GiB unchecked-cpu report
    record_cluster_rss relay - ""
}

# relay_runs PREFIX : BENCH_REPEAT runs on the started cluster, each pushing a blob to
# one node and reading it from the next (relayed) and from its holder (local), in turn
# first; samples are named PREFIX + get, cpu, serving and ceiling (side cand: relayed).
relay_runs() {
    local prefix=$1 run holder reader file digest order what node side seconds rate cpu gib started serving me=$BASHPID
    for ((run = 1; run <= BENCH_REPEAT; run++)); do
        file=$(blob_file "$BENCH_SIZE_MIB" "$run")
        digest=$(digest_of "$file")
        holder=$(((run - 1) % CLUSTER_NODES))
        reader=$(((holder + 1) % CLUSTER_NODES))
        put_blob "${CLUSTER_URL[holder]}" bench/cluster-relay "$file" >/dev/null
        expect_only_holder "$digest" "$holder"
        sync
        gib=$(calc "$(size_of "$file") / 1073741824")
        # The relaying node's copy grows the page cache: into memory already backed.
        recycle_memory $((2 * BENCH_SIZE_MIB))
        if ((run % 2)); then order='relay local'; else order='local relay'; fi
        for what in $order; do
            if [[ $what == relay ]]; then node=$reader side=cand; else node=$holder side=ref; fi
            # The CPU every node and the client used for the read, and the serving node's.
            cpu=$(calc "$(cpu_seconds "${CLUSTER_PID[@]}") + $(children_cpu_seconds "$me")")
            serving=$(cpu_seconds "${CLUSTER_PID[node]}")
            seconds=$(get_blob "${CLUSTER_URL[node]}" bench/cluster-relay "$file")
            cpu=$(calc "($(cpu_seconds "${CLUSTER_PID[@]}") + $(children_cpu_seconds "$me") - $cpu) / $gib")
            serving=$(calc "($(cpu_seconds "${CLUSTER_PID[node]}") - $serving) / $gib")
            rate=$(mb_per_s "$(size_of "$file")" "$seconds")
            samples_add "${prefix}get" "$side" "$rate"
            samples_add "${prefix}cpu" "$side" "$cpu"
            samples_add "${prefix}serving" "$side" "$serving"
            # What two cores could move at that CPU cost, every process on this machine.
            samples_add "${prefix}ceiling" "$side" "$(calc "$(nproc) * 1073.741824 / $cpu")"
            log "run $run${prefix:+ ($prefix)}, $what read from node $((node + 1)) (node $((holder + 1)) holds the blob): $(fmt "$rate") MB/s, $(fmt "$cpu") CPU s/GiB in all, $(fmt "$serving") on node $((node + 1))"
            [[ $what == local ]] || expect_kept_copy "$digest" "$reader"
        done
        # One core's SHA-256 over the same bytes (SHA-NI through OpenSSL), from the page cache.
        started=$(now)
        openssl dgst -sha256 "$file" >/dev/null
        samples_add sha ref "$(mb_per_s "$(size_of "$file")" "$(calc "$(now) - $started")")"
        sync
    done
}

measure_cluster_spread() {
    local run file digest start at_201 seconds
    for ((run = 1; run <= BENCH_REPEAT; run++)); do
        blob_file "$BENCH_SIZE_MIB" "$run" >/dev/null
    done
    samples_reset
    sync
    cluster_start default
    lb_start
    for ((run = 1; run <= BENCH_REPEAT; run++)); do
        file=$(blob_file "$BENCH_SIZE_MIB" "$run")
        digest=$(digest_of "$file")
        put_blob "$LB_URL" bench/cluster-spread "$file" >/dev/null
        start=$(now)
        at_201=$(count_holders "$digest")
        ((at_201 >= 2)) || log "warning: the 201 for $digest came with only $at_201 verified copies on disk"
        seconds=$(await_copies "$digest" "$CLUSTER_NODES") ||
            die "$digest is on $(count_holders "$digest") of $CLUSTER_NODES nodes ${BENCH_CLUSTER_TIMEOUT}s after its 201"
        seconds=$(calc "$seconds - $start")
        log "run $run: $at_201 copies at the 201, all $CLUSTER_NODES after $(fmt "$seconds") s"
        samples_add spread cand "$seconds"
        sync
    done
    cluster_rss_samples
    lb_stop
    cluster_stop
    record "cluster spread $(size_label "$BENCH_SIZE_MIB"): 201 to a copy on all 3 nodes" s - \
        "$(samples_median spread cand)" report
    record_cluster_rss spread - ""
}

# cluster_space_gib : a bound on the disk cluster-push takes, its largest user: the
# inputs, the single node's copies and three copies of each blob in the cluster.
cluster_space_gib() {
    printf '%s\n' $(((BENCH_REPEAT * (1 + 1 + CLUSTER_NODES) + 1) * BENCH_SIZE_MIB / 1024 + 2))
}

# --- copies on disk

# blob_path INDEX DIGEST : where node INDEX keeps the verified blob.
blob_path() {
    local hex=${2#sha256:}
    printf '%s\n' "${CLUSTER_DIR[$1]}/data/blobs/sha256/${hex:0:2}/$hex"
}

# count_holders DIGEST : how many nodes hold a verified copy.
count_holders() {
    local i count=0
    for ((i = 0; i < CLUSTER_NODES; i++)); do
        [[ -e $(blob_path "$i" "$1") ]] && count=$((count + 1))
    done
    printf '%s\n' "$count"
}

# await_copies DIGEST N : polls every 20 ms, for at most BENCH_CLUSTER_TIMEOUT seconds,
# until N nodes hold the blob; prints the time (as now prints it) it saw the Nth.
await_copies() {
    local digest=$1 wanted=$2 paths=() i deadline held
    for ((i = 0; i < CLUSTER_NODES; i++)); do
        paths+=("$(blob_path "$i" "$digest")")
    done
    deadline=$((${EPOCHREALTIME/./} + BENCH_CLUSTER_TIMEOUT * 1000000))
    while :; do
        held=0
        for i in "${paths[@]}"; do
            [[ -e $i ]] && held=$((held + 1))
        done
        if ((held >= wanted)); then
            now
            return 0
        fi
        ((${EPOCHREALTIME/./} < deadline)) || return 1
        sleep 0.02
    done
}

# expect_only_holder DIGEST INDEX : with --replication-factor 1 the uploading node
# alone holds the blob; otherwise the relay figure would measure a local read.
expect_only_holder() {
    local digest=$1 holder=$2 held
    held=$(count_holders "$digest")
    [[ -e $(blob_path "$holder" "$digest") && $held == 1 ]] ||
        die "with --replication-factor 1, $digest is on $held nodes after its 201 (node $((holder + 1)) should hold the only copy)"
}

# expect_kept_copy DIGEST INDEX : the relaying node keeps a verified copy; it may
# finish writing it just after the response, so wait a little.
expect_kept_copy() {
    local digest=$1 reader=$2
    wait_until 10 "node $((reader + 1)) to keep its relayed copy" test -e "$(blob_path "$reader" "$digest")" ||
        log "warning: node $((reader + 1)) kept no copy of $digest after relaying it"
}

# --- memory

# cluster_rss_samples : adds each node's VmHWM as samples "rss<INDEX>" of side cand.
cluster_rss_samples() {
    local i
    for ((i = 0; i < CLUSTER_NODES; i++)); do
        samples_add "rss$i" cand "$(vm_hwm_mib "${CLUSTER_PID[i]}")"
    done
}

# record_cluster_rss WHAT REFERENCE NOTE : one row, the largest node's peak, with every
# node's peak in its name.
record_cluster_rss() {
    local what=$1 ref=$2 note=$3 i peaks=() max
    for ((i = 0; i < CLUSTER_NODES; i++)); do
        peaks+=("$(fmt "$(samples_median "rss$i" cand)")")
    done
    max=$(printf '%s\n' "${peaks[@]}" | sort -g | tail -n 1)
    record "cluster $what: peak RSS, largest of nodes $(
        IFS=/
        printf '%s' "${peaks[*]}"
    )${note:+ $note}" MiB "$ref" "$max" report
}

# --- the cluster

# cluster_start FACTOR : three fresh nodes (FACTOR is their --replication-factor, or
# "default"), up until every node sees three voters and a leader. A node that exits at
# startup (a port taken meanwhile) makes the whole cluster start again on new ports.
cluster_start() {
    local factor=$1 attempt
    CLUSTER_COUNT=$((CLUSTER_COUNT + 1))
    for attempt in 1 2 3; do
        cluster_launch "$factor"
        if await_cluster; then
            mark_node_logs
            log "cluster up (replication factor $factor): ${CLUSTER_URL[*]} (pids ${CLUSTER_PID[*]})"
            return 0
        fi
        log "cluster failed to form (attempt $attempt):"
        cluster_logs >&2
        cluster_stop
    done
    die "the cluster did not form"
}

# cluster_launch FACTOR : starts every node in the background, on fresh ports and dirs,
# from CLUSTER_BIN (default BERTH_BIN), with CLUSTER_ARGS added to each command line.
cluster_launch() {
    local factor=$1 ports i peers=() secret
    mapfile -t ports < <(pick_ports $((CLUSTER_NODES * 2)))
    secret="$WORK_DIR/cluster.secret"
    [[ -s $secret ]] || (umask 077 && openssl rand -hex 24 >"$secret")
    for ((i = 0; i < CLUSTER_NODES; i++)); do
        CLUSTER_URL[i]="http://127.0.0.1:${ports[i]}"
        CLUSTER_PEER_PORT[i]=${ports[CLUSTER_NODES + i]}
        CLUSTER_DIR[i]="$WORK_DIR/cluster-$CLUSTER_COUNT-node$((i + 1))"
        peers+=("127.0.0.1:${CLUSTER_PEER_PORT[i]}")
    done
    CLUSTER_PEERS=$(IFS=, && printf '%s' "${peers[*]}")
    CLUSTER_FACTOR=$factor
    for ((i = 0; i < CLUSTER_NODES; i++)); do
        rm -rf "${CLUSTER_DIR[i]}"
        mkdir -p "${CLUSTER_DIR[i]}/data"
        node_launch "$i"
    done
}

# node_launch INDEX : starts node INDEX of the launched cluster in the background, on
# its ports and data dir (again, after node_kill); its log grows.
node_launch() {
    local i=$1 extra=()
    [[ $CLUSTER_FACTOR == default ]] || extra=(--replication-factor "$CLUSTER_FACTOR")
    extra+=("${CLUSTER_ARGS[@]}")
    RUST_LOG=$BENCH_RUST_LOG "${CLUSTER_BIN:-$BERTH_BIN}" serve --plain-http --data-dir "${CLUSTER_DIR[i]}/data" \
        --listen "${CLUSTER_URL[i]#http://}" --peer-listen "127.0.0.1:${CLUSTER_PEER_PORT[i]}" \
        --cluster-secret-file "$WORK_DIR/cluster.secret" --peers "$CLUSTER_PEERS" \
        --bootstrap-expect "$CLUSTER_NODES" "${extra[@]}" >>"${CLUSTER_DIR[i]}/server.log" 2>&1 &
    CLUSTER_PID[i]=$!
    STARTED_PIDS+=("${CLUSTER_PID[i]}")
}

# cluster_leader : the index of the node the running nodes agree leads.
cluster_leader() {
    local i status ids=() leader=''
    for ((i = 0; i < CLUSTER_NODES; i++)); do
        ids[i]=''
        pid_gone "${CLUSTER_PID[i]}" && continue
        status=$(curl -sf -m 2 "${CLUSTER_URL[i]}/_berth/cluster/status") || continue
        ids[i]=$(jq -r '.node_id' <<<"$status")
        leader=$(jq -r '.leader_id // empty' <<<"$status")
    done
    [[ -n $leader ]] || return 1
    for ((i = 0; i < CLUSTER_NODES; i++)); do
        [[ ${ids[i]} == "$leader" ]] && { printf '%s\n' "$i"; return 0; }
    done
    return 1
}

# await_cluster : true once every node reports three voters and a leader, within 60 s;
# false at once if a node has exited.
await_cluster() {
    local tries i ready
    for ((tries = 0; tries < 600; tries++)); do
        ready=0
        for ((i = 0; i < CLUSTER_NODES; i++)); do
            pid_gone "${CLUSTER_PID[i]}" && return 1
            node_formed "$i" && ready=$((ready + 1))
        done
        ((ready == CLUSTER_NODES)) && return 0
        sleep 0.1
    done
    return 1
}

# node_formed INDEX : the node answers /v2/ and its status shows three voters and a leader.
node_formed() {
    local url=${CLUSTER_URL[$1]} status
    [[ $(curl -s -o /dev/null -m 2 -w '%{http_code}' "$url/v2/") == 200 ]] || return 1
    status=$(curl -sf -m 2 "$url/_berth/cluster/status") || return 1
    jq -e --argjson n "$CLUSTER_NODES" \
        '([.members[] | select(.voter)] | length) == $n and .leader_id != null' <<<"$status" >/dev/null
}

# cluster_logs : the last lines each node logged.
cluster_logs() {
    local i
    for ((i = 0; i < CLUSTER_NODES; i++)); do
        printf 'node %s:\n' "$((i + 1))"
        tail -n 5 "${CLUSTER_DIR[i]}/server.log" 2>/dev/null || true
    done
}

# log_lines INDEX : how many lines node INDEX has logged.
log_lines() {
    wc -l <"${CLUSTER_DIR[$1]}/server.log" 2>/dev/null || printf '0\n'
}

# mark_node_logs : what the nodes logged while electing their first leader is not news.
mark_node_logs() {
    local i
    for ((i = 0; i < CLUSTER_NODES; i++)); do
        CLUSTER_LOG_FORMED[i]=$(log_lines "$i")
    done
}

# report_node_logs : with RUST_LOG=warn a healthy node logs nothing once formed; show
# what each said since.
report_node_logs() {
    local i from lines
    for ((i = 0; i < ${#CLUSTER_PID[@]}; i++)); do
        from=${CLUSTER_LOG_FORMED[i]:-0}
        lines=$(($(log_lines "$i") - from))
        ((lines > 0)) || continue
        log "node $((i + 1)) logged $lines lines after the cluster formed; the first ones:"
        # sed, not tail | head: under pipefail, tail killed by SIGPIPE would fail the run.
        sed -n "$((from + 1)),$((from + 5))p" "${CLUSTER_DIR[i]}/server.log" | cut -c1-400 >&2
    done
}

# cluster_stop : stops every node and frees their storage.
cluster_stop() {
    local i
    report_node_logs
    for ((i = 0; i < ${#CLUSTER_PID[@]}; i++)); do
        stop_pid "${CLUSTER_PID[i]}"
        rm -rf "${CLUSTER_DIR[i]}"
    done
    CLUSTER_PID=() CLUSTER_LOG_FORMED=()
}

# --- the load balancer

# lb_start : haproxy, round robin over the nodes, on a free port; retried on a new port
# if it cannot bind.
lb_start() {
    local attempt port cfg="$WORK_DIR/haproxy-$CLUSTER_COUNT.cfg"
    for attempt in 1 2 3; do
        port=$(pick_port)
        write_haproxy_config "$cfg" "$port"
        haproxy -f "$cfg" -db >"$cfg.log" 2>&1 &
        LB_PID=$!
        STARTED_PIDS+=("$LB_PID")
        LB_URL="http://127.0.0.1:$port"
        if wait_until 10 "haproxy on port $port" lb_up; then
            log "haproxy up: $LB_URL (pid $LB_PID)"
            return 0
        fi
        log "haproxy failed to start on port $port (attempt $attempt):"
        tail -n 5 "$cfg.log" >&2 || true
        stop_pid "$LB_PID"
    done
    die "haproxy did not come up"
}

lb_up() {
    ! pid_gone "$LB_PID" &&
        [[ $(curl -s -o /dev/null -m 2 -w '%{http_code}' "$LB_URL/v2/") == 200 ]]
}

# write_haproxy_config FILE PORT : HTTP mode, round robin, timeouts long enough for a
# GiB body, no logging.
write_haproxy_config() {
    local file=$1 port=$2 i
    {
        cat <<CFG
global
    maxconn 256

defaults
    mode http
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout http-request 1m

frontend registry
    bind 127.0.0.1:$port
    default_backend nodes

backend nodes
    balance roundrobin
CFG
        for ((i = 0; i < CLUSTER_NODES; i++)); do
            printf '    server node%s %s\n' "$((i + 1))" "${CLUSTER_URL[i]#http://}"
        done
    } >"$file"
}

lb_stop() {
    [[ -n $LB_PID ]] || return 0
    stop_pid "$LB_PID"
    LB_PID=''
}

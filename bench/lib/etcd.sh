# shellcheck shell=bash
# etcd 3.4 (Debian's etcd-server) as a three-member cluster on loopback: the reference
# of the Raft write measurements. Sourced by bench/run.sh.
#
# Member i (0-based) keeps its pid, client URL, peer URL and dir in ETCD_PID[i],
# ETCD_URL[i], ETCD_PEER[i] and ETCD_DIR[i]. etcd's defaults are kept: 100 ms
# heartbeats and a 1 s election timeout.

ETCD_PID=() ETCD_URL=() ETCD_PEER=() ETCD_DIR=()
ETCD_INITIAL='' ETCD_COUNT=0

# etcd_start : three fresh members, up until one leads.
etcd_start() {
    local ports i initial=()
    ETCD_COUNT=$((ETCD_COUNT + 1))
    mapfile -t ports < <(pick_ports 6)
    for ((i = 0; i < CLUSTER_NODES; i++)); do
        ETCD_URL[i]="http://127.0.0.1:${ports[i]}"
        ETCD_PEER[i]="http://127.0.0.1:${ports[CLUSTER_NODES + i]}"
        ETCD_DIR[i]="$WORK_DIR/etcd-$ETCD_COUNT-member$((i + 1))"
        initial+=("m$i=${ETCD_PEER[i]}")
        rm -rf "${ETCD_DIR[i]}"
        mkdir -p "${ETCD_DIR[i]}"
    done
    ETCD_INITIAL=$(IFS=, && printf '%s' "${initial[*]}")
    for ((i = 0; i < CLUSTER_NODES; i++)); do
        etcd_launch "$i"
    done
    wait_until 60 "etcd to elect a leader" etcd_leader >/dev/null || die "etcd did not form"
    log "etcd up: ${ETCD_URL[*]} (pids ${ETCD_PID[*]})"
}

# etcd_launch INDEX : starts member INDEX on its ports and data dir (again, after a kill).
etcd_launch() {
    local i=$1
    etcd --name "m$i" --data-dir "${ETCD_DIR[i]}/data" \
        --listen-client-urls "${ETCD_URL[i]}" --advertise-client-urls "${ETCD_URL[i]}" \
        --listen-peer-urls "${ETCD_PEER[i]}" --initial-advertise-peer-urls "${ETCD_PEER[i]}" \
        --initial-cluster "$ETCD_INITIAL" --initial-cluster-state new \
        --initial-cluster-token "bench-$ETCD_COUNT" --log-level error \
        >>"${ETCD_DIR[i]}/etcd.log" 2>&1 &
    ETCD_PID[i]=$!
    STARTED_PIDS+=("${ETCD_PID[i]}")
}

# etcd_status INDEX : member INDEX's own id and the leader it knows, "ID LEADER".
etcd_status() {
    curl -sf -m 2 -X POST -d '{}' "${ETCD_URL[$1]}/v3/maintenance/status" |
        jq -er '"\(.header.member_id) \(.leader)"'
}

# etcd_leader : the index of the member every running member names as leader.
etcd_leader() {
    local i ids=() leaders=() id leader
    for ((i = 0; i < CLUSTER_NODES; i++)); do
        pid_gone "${ETCD_PID[i]}" && continue
        read -r id leader < <(etcd_status "$i") || return 1
        ids[i]=$id
        leaders+=("$leader")
    done
    [[ $(printf '%s\n' "${leaders[@]}" | sort -u | wc -l) == 1 ]] || return 1
    for ((i = 0; i < CLUSTER_NODES; i++)); do
        [[ ${ids[i]:-} == "${leaders[0]}" ]] && { printf '%s\n' "$i"; return 0; }
    done
    return 1
}

# etcd_all_up : every member answers and they agree on a leader.
etcd_all_up() {
    local i
    for ((i = 0; i < CLUSTER_NODES; i++)); do
        pid_gone "${ETCD_PID[i]}" && return 1
    done
    etcd_leader >/dev/null
}

etcd_stop() {
    local i
    for ((i = 0; i < ${#ETCD_PID[@]}; i++)); do
        stop_pid "${ETCD_PID[i]}"
        rm -rf "${ETCD_DIR[i]}"
    done
    ETCD_PID=()
}

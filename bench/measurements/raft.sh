# shellcheck shell=bash
# puts and failover: berth's replicated writes on a 3-node cluster against etcd 3.4, a
# 3-member cluster of the Raft store Kubernetes trusts, on the same loopback and disk.
#
# puts: wrk writes as fast as it can, BENCH_PUTS_CONNECTIONS connections spread over
# the three members (one wrk process each): berth takes a new small OCI manifest PUT by
# a new tag; etcd a new key of about the same size through its v3 JSON gateway. Each
# write is acknowledged only once a majority has it on disk.
#
# failover: four writers write without pause to a member that does not lead; the
# leader is killed with SIGKILL; the figure is the time from the kill to the first
# acknowledged write sent after it (bench/lib/failover.py). The killed member then
# starts again and the cluster settles before the next run. BENCH_FAILOVER_RUNS runs
# a side, alternating; the median is reported.

: "${BENCH_PUTS_CONNECTIONS:=32}"
: "${BENCH_PUTS_DURATION:=10s}"
: "${BENCH_FAILOVER_RUNS:=5}"

RAFT_WRK_SCRIPT="$BENCH_DIR/wrk/writes.lua"
FAILOVER_PY="$BENCH_DIR/lib/failover.py"

measure_puts() {
    local run side rate config
    samples_reset
    cluster_start default
    etcd_start
    config=$(raft_config_blob bench/puts)
    for ((run = 1; run <= BENCH_REPEAT; run++)); do
        for side in $(sides_in_turn "$run"); do
            if [[ $side == ref ]]; then
                rate=$(wrk_writes etcd "r$run" "" "${ETCD_URL[@]}")
                log "run $run, etcd: $(fmt "$rate") writes/s"
            else
                rate=$(wrk_writes berth "r$run" "$config" "${CLUSTER_URL[@]}")
                log "run $run, berth: $(fmt "$rate") manifest PUTs/s"
            fi
            samples_add puts "$side" "$rate"
        done
    done
    cluster_rss_samples
    etcd_stop
    cluster_stop
    record_samples "puts: writes a second, 3 nodes, $BENCH_PUTS_CONNECTIONS connections, etcd 3.4 keys vs berth manifests" writes/s puts report
    record "puts: berth's rate against its target of 2300 manifest PUTs/s" writes/s 2300 \
        "$(samples_median puts cand)" 'ratio>=1'
    record_cluster_rss puts - ""
}

# raft_config_blob REPO : pushes a small config blob to REPO through node 1; prints
# "DIGEST SIZE".
raft_config_blob() {
    local file="$WORK_DIR/raft-config.json" digest
    printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' >"$file"
    digest=$(digest_of "$file")
    put_blob "${CLUSTER_URL[0]}" "$1" "$file" >/dev/null
    printf '%s %s\n' "$digest" "$(size_of "$file")"
}

# wrk_writes KIND PREFIX CONFIG URL... : one wrk process per URL, the connections split
# between them, for BENCH_PUTS_DURATION; prints the acknowledged writes a second of all
# of them together. A write that is not acknowledged fails the measurement.
wrk_writes() {
    local kind=$1 prefix=$2 config=$3 urls i n conns pids=() out requests errors duration
    shift 3
    urls=("$@") n=$#
    rm -f "$WORK_DIR"/wrk-writes-*.out
    for ((i = 0; i < n; i++)); do
        conns=$((BENCH_PUTS_CONNECTIONS / n + (i < BENCH_PUTS_CONNECTIONS % n)))
        BENCH_WRK_WRITES=$kind BENCH_WRK_PREFIX="$prefix-$i" BENCH_WRK_CONFIG=$config \
            wrk -t 1 -c "$conns" -d "$BENCH_PUTS_DURATION" -s "$RAFT_WRK_SCRIPT" "${urls[i]}" \
            >"$WORK_DIR/wrk-writes-$i.out" 2>&1 &
        pids+=($!)
    done
    for i in "${pids[@]}"; do
        wait "$i" || die "wrk failed: $(cat "$WORK_DIR"/wrk-writes-*.out)"
    done
    out=$(cat "$WORK_DIR"/wrk-writes-*.out | awk '/^bench-result/ { r += $2; e += $5; d = $3 > d ? $3 : d }
        END { printf "%d %d %d\n", r, e, d }')
    read -r requests errors duration <<<"$out"
    ((errors == 0)) || die "$kind: $errors of $requests writes failed: $(grep -h -i -E 'error|non-2xx' "$WORK_DIR"/wrk-writes-*.out | head -n 5)"
    calc "$requests / ($duration / 1000000)"
}

measure_failover() {
    local run side seconds config
    samples_reset
    cluster_start default
    etcd_start
    config=$(raft_config_blob bench/failover)
    for ((run = 1; run <= BENCH_FAILOVER_RUNS; run++)); do
        for side in $(sides_in_turn "$run"); do
            # Not in $(...): the restarted member's pid must reach this shell.
            failover_run "$side" "$config"
            seconds=$FAILOVER_SECONDS
            log "run $run, $(if [[ $side == ref ]]; then echo etcd; else echo berth; fi): first acknowledged write $(fmt "$seconds") s after the leader's kill -9"
            samples_add failover "$side" "$seconds"
        done
    done
    etcd_stop
    cluster_stop
    record_samples "failover: kill -9 of the leader to the first acknowledged write, median of $BENCH_FAILOVER_RUNS, etcd 3.4 vs berth" s failover report
    record "failover: berth against its target of 2 s" s - "$(samples_median failover cand)" 'max=2'
}

# failover_run SIDE CONFIG : kills the leader of etcd (ref) or berth (cand) under
# writes, sets FAILOVER_SECONDS to the seconds to the first acknowledged write,
# restarts the member and waits until the cluster has settled with all three.
failover_run() {
    local side=$1 config=$2 leader survivor pid url out seconds failed before
    if [[ $side == ref ]]; then
        leader=$(etcd_leader) || die "etcd has no leader"
        pid=${ETCD_PID[leader]} survivor=$(((leader + 1) % CLUSTER_NODES)) url=${ETCD_URL[survivor]}
        out=$(python3 "$FAILOVER_PY" etcd "$pid" "$url") || die "etcd: no write acknowledged after the kill ($out)"
        wait "$pid" 2>/dev/null || true
        etcd_launch "$leader"
        wait_until 60 "etcd to take member $((leader + 1)) back" etcd_all_up || die "etcd did not settle"
    else
        leader=$(cluster_leader) || die "berth has no leader"
        pid=${CLUSTER_PID[leader]} survivor=$(((leader + 1) % CLUSTER_NODES)) url=${CLUSTER_URL[survivor]}
        # shellcheck disable=SC2086 # CONFIG is "DIGEST SIZE"
        out=$(python3 "$FAILOVER_PY" berth "$pid" "$url" $config) || die "berth: no write acknowledged after the kill ($out)"
        wait "$pid" 2>/dev/null || true
        node_launch "$leader"
        wait_until 60 "berth to take node $((leader + 1)) back" await_cluster ||
            { cluster_logs >&2; die "berth did not settle"; }
    fi
    read -r seconds failed before <<<"$out"
    log "  ($before writes acknowledged before the kill; $failed failed after it and were retried)"
    # Let the restarted member catch up and the heartbeats settle before the next kill.
    sleep 3
    FAILOVER_SECONDS=$seconds
}

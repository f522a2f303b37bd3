# shellcheck shell=bash
# cluster-head, cluster-digest: reads by digest on a 3-node cluster behind haproxy,
# under wrk: blob HEAD, and manifest GET by digest. These rows compare two berth
# builds: the "reference" column is the same cluster started from BENCH_BASELINE_BIN
# (an earlier build), the berth column from BERTH_BIN. With no baseline given both
# columns run BERTH_BIN, which shows the noise between two clusters of one build.

: "${BENCH_BASELINE_BIN:=$BERTH_BIN}"

# The empty blob, for the reason measure_head gives (wrk and HEAD bodies).
measure_cluster_head() {
    measure_cluster_rate "cluster HEAD blob via haproxy, 3 nodes" HEAD "" \
        "/v2/bench/small/blobs/$(sha256_of "$(small_image)/empty.bin")"
}

measure_cluster_digest() {
    measure_cluster_rate "cluster manifest GET by digest via haproxy, 3 nodes" GET "$MANIFEST_ACCEPT" \
        "/v2/bench/small/manifests/$(sha256_of "$(small_image)/manifest.json")"
}

# measure_cluster_rate TITLE METHOD ACCEPT PATH : per run and side, a fresh cluster of
# that side's build behind haproxy, the small image pushed through it, then wrk on PATH
# through haproxy; the side alternating between runs.
measure_cluster_rate() {
    local title=$1 method=$2 accept=$3 path=$4 run side result rps p99
    [[ -x $BENCH_BASELINE_BIN ]] || die "baseline berth binary not found at $BENCH_BASELINE_BIN"
    log "baseline (reference column): $BENCH_BASELINE_BIN; berth column: $BERTH_BIN"
    samples_reset
    for ((run = 1; run <= BENCH_WRK_REPEAT; run++)); do
        for side in $(sides_in_turn "$run"); do
            if [[ $side == ref ]]; then CLUSTER_BIN=$BENCH_BASELINE_BIN; else CLUSTER_BIN=$BERTH_BIN; fi
            cluster_start default
            lb_start
            push_small_image "$LB_URL" bench/small latest
            result=$(run_wrk "$LB_URL$path" "$method" "$accept")
            read -r rps p99 <<<"$result"
            log "run $run, $(basename "$CLUSTER_BIN"): $(fmt "$rps") req/s, p99 $(fmt "$p99") ms"
            samples_add rate "$side" "$rps"
            samples_add p99 "$side" "$p99"
            lb_stop
            cluster_stop
        done
    done
    CLUSTER_BIN=$BERTH_BIN
    record_samples "$title" req/s rate report
    record_samples "$title, p99 latency" ms p99 report
}

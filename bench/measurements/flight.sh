# shellcheck shell=bash
# cluster-flight: many clients read one blob at once from a node that does not hold it
# (berth, --replication-factor 1, three nodes on loopback), against the same number of
# clients reading it from the node that holds it. The reader fetches the blob from its
# peers once and serves every client from that one fetch; the second row is what the
# holders sent, from their berth_replication_fetch_sent_bytes_total, over the blob's
# size: 1 means exactly one copy crossed between nodes.

: "${BENCH_FLIGHT_MIB:=256}"
: "${BENCH_FLIGHT_READERS:=20}"

measure_cluster_flight() {
    local run holder reader file digest side node seconds sent before bytes
    for ((run = 1; run <= BENCH_REPEAT; run++)); do
        blob_file "$BENCH_FLIGHT_MIB" "flight$run" >/dev/null
    done
    samples_reset
    sync
    cluster_start 1
    for ((run = 1; run <= BENCH_REPEAT; run++)); do
        file=$(blob_file "$BENCH_FLIGHT_MIB" "flight$run")
        digest=$(digest_of "$file")
        bytes=$(size_of "$file")
        holder=$(((run - 1) % CLUSTER_NODES))
        reader=$(((holder + 1) % CLUSTER_NODES))
        put_blob "${CLUSTER_URL[holder]}" bench/cluster-flight "$file" >/dev/null
        expect_only_holder "$digest" "$holder"
        sync
        # The holder's reads go first: the reader keeps its copy afterwards.
        for side in ref cand; do
            if [[ $side == ref ]]; then node=$holder; else node=$reader; fi
            before=$(cluster_fetch_sent)
            seconds=$(concurrent_gets "${CLUSTER_URL[node]}/v2/bench/cluster-flight/blobs/$digest" "$bytes")
            sent=$(($(cluster_fetch_sent) - before))
            samples_add get "$side" "$(mb_per_s $((bytes * BENCH_FLIGHT_READERS)) "$seconds")"
            log "run $run, $BENCH_FLIGHT_READERS reads at once from node $((node + 1)): $(fmt "$seconds") s, peers sent $sent bytes"
            [[ $side == ref ]] || samples_add sent cand "$(calc "$sent / $bytes")"
        done
        expect_kept_copy "$digest" "$reader"
        sync
    done
    samples_add sent ref 1
    cluster_rss_samples
    cluster_stop
    record_samples "cluster: $BENCH_FLIGHT_READERS concurrent GETs of one $(size_label "$BENCH_FLIGHT_MIB") blob, from a node without it vs from its holder (all bytes)" MB/s get report
    record_samples "cluster: bytes peers sent for those $BENCH_FLIGHT_READERS GETs, in copies of the blob" x sent 'max=1'
    record_cluster_rss flight - ""
}

# cluster_fetch_sent : the bytes every node has sent to peers that fetched blobs, from
# its store or from a blob it was still receiving.
cluster_fetch_sent() {
    local i total=0 value
    for ((i = 0; i < CLUSTER_NODES; i++)); do
        value=$(curl -sf "${CLUSTER_URL[i]}/metrics" |
            awk '$1 ~ /^berth_replication_fetch_sent_bytes_total[{]/ { n += $2 } END { printf "%d\n", n }')
        total=$((total + ${value:-0}))
    done
    printf '%s\n' "$total"
}

# concurrent_gets URL BYTES : BENCH_FLIGHT_READERS GETs of URL at once; every one must
# bring BYTES bytes. Prints the seconds until the last one ended.
concurrent_gets() {
    local url=$1 bytes=$2 i pids=() start out="$WORK_DIR/flight-sizes"
    start=$(now)
    for ((i = 0; i < BENCH_FLIGHT_READERS; i++)); do
        curl -sf --max-time 600 -o /dev/null -w '%{size_download}\n' "$url" >"$out.$i" &
        pids+=($!)
    done
    for ((i = 0; i < BENCH_FLIGHT_READERS; i++)); do
        wait "${pids[i]}" || die "GET $i of $url failed"
        [[ $(<"$out.$i") == "$bytes" ]] || die "GET $i of $url brought $(<"$out.$i") bytes, not $bytes"
    done
    calc "$(now) - $start"
}

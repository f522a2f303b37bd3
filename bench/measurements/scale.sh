# shellcheck shell=bash
# scale: how berth's metadata costs grow with the registry, on a 3-node cluster. The
# tags of BENCH_SCALE_SIZES (default 1k, 10k, 100k, 1M) are loaded in turn through the
# API (bench/lib/scale.py: one tag in ten in one big repository, the rest nine to a
# repository, so 1M tags make 100k repositories); at each size:
# - p50 and p99 of a catalog page and of a tag list page of the big repository, each
#   n=100 after a random name, BENCH_SCALE_REQUESTS of each;
# - every node's resident memory (VmRSS) and its peak (VmHWM);
# - the CPU time a node spends over BENCH_SCALE_IDLE_SECONDS of idle repair rounds
#   (--repair-interval 1), with one small blob per ten tags stored (bench/lib/fill.py,
#   through node 1; its copies reach every node);
# and at the largest size, from start to /readyz: a new node joining (through a
# snapshot) and a node restarted on its data.
# There is no reference registry: the reference column is the smallest size, so the
# ratio says how flat a figure stays. The figures against size are plotted with gnuplot
# into BENCH_SCALE_PLOTS (PNG).

: "${BENCH_SCALE_SIZES:=1000 10000 100000 1000000}"
: "${BENCH_SCALE_REQUESTS:=300}"
: "${BENCH_SCALE_CLIENTS:=32}"
: "${BENCH_SCALE_IDLE_SECONDS:=10}"
: "${BENCH_SCALE_PLOTS:=$BENCH_DIR/../docs/bench}"

SCALE_PY="$BENCH_DIR/lib/scale.py"

measure_scale() {
    local sizes size loaded=0 config out requests seconds figures i rss hwm cpu
    read -r -a sizes <<<"$BENCH_SCALE_SIZES"
    CLUSTER_ARGS=(--repair-interval 1)
    cluster_start default
    config=$(raft_config_blob bench/big)
    : >"$WORK_DIR/scale.dat"
    for size in "${sizes[@]}"; do
        # shellcheck disable=SC2086 # CONFIG is "DIGEST SIZE"
        out=$(python3 "$SCALE_PY" load "$loaded" "$size" "$BENCH_SCALE_CLIENTS" $config "${CLUSTER_URL[@]}") ||
            die "loading tags $loaded..$size failed"
        read -r requests seconds <<<"$out"
        log "$size tags: loaded $((size - loaded)) more in $seconds s ($(calc "$requests / $seconds") requests/s)"
        out=$(python3 "$BENCH_DIR/lib/fill.py" "${CLUSTER_URL[0]}" bench/blobs $(((size - loaded) / 10)) \
            "$BENCH_SCALE_CLIENTS" $((loaded / 10))) || die "storing blobs failed"
        log "$size tags: stored $(((size - loaded) / 10)) more blobs in ${out#* } s"
        await_blobs_settled
        loaded=$size
        figures=$(python3 "$SCALE_PY" time "$size" "$BENCH_SCALE_REQUESTS" "${CLUSTER_URL[@]}") ||
            die "timing the listings at $size tags failed"
        rss=0 hwm=0
        for ((i = 0; i < CLUSTER_NODES; i++)); do
            rss=$(max_of "$rss" "$(vm_kib VmRSS "${CLUSTER_PID[i]}")")
            hwm=$(max_of "$hwm" "$(vm_kib VmHWM "${CLUSTER_PID[i]}")")
        done
        cpu=$(idle_cpu_ms "${CLUSTER_PID[0]}" "$BENCH_SCALE_IDLE_SECONDS")
        log "$size tags: catalog/tags p50 p99 (ms) $figures; largest node RSS $((rss / 1024)) MiB, peak $((hwm / 1024)) MiB; idle repair CPU $cpu ms over ${BENCH_SCALE_IDLE_SECONDS}s"
        printf '%s %s %s %s %s\n' "$size" "$figures" "$((rss / 1024))" "$((hwm / 1024))" "$cpu" >>"$WORK_DIR/scale.dat"
    done
    scale_records "${sizes[0]}" "${sizes[-1]}"
    scale_join_and_restart
    scale_plots
    cluster_stop
    CLUSTER_ARGS=()
}

# scale_records SMALLEST LARGEST : rows for the largest size against the smallest.
scale_records() {
    local small=$1 large=$2 first last
    first=$(awk -v s="$small" '$1 == s' "$WORK_DIR/scale.dat")
    last=$(awk -v s="$large" '$1 == s' "$WORK_DIR/scale.dat")
    col() { awk -v c="$2" '{ print $c }' <<<"$1"; }
    record "scale: catalog page n=100, p99, $small vs $large tags" ms "$(col "$first" 3)" "$(col "$last" 3)" 'max=10'
    record "scale: tag list page n=100 of a $((large / 10))-tag repository, p99, $small vs $large tags" ms \
        "$(col "$first" 5)" "$(col "$last" 5)" 'max=10'
    record "scale: peak RSS of the largest node, $small vs $large tags" MiB "$(col "$first" 7)" "$(col "$last" 7)" 'max=256'
    record "scale: CPU time of ${BENCH_SCALE_IDLE_SECONDS}s of idle repair rounds, $small vs $large tags" ms \
        "$(col "$first" 8)" "$(col "$last" 8)" report
}

# scale_join_and_restart : a fourth node joins the loaded cluster, then a follower is
# stopped and started on its data; both timed from start to /readyz.
scale_join_and_restart() {
    local ports url dir pid started seconds follower leader
    mapfile -t ports < <(pick_ports 2)
    url="http://127.0.0.1:${ports[0]}" dir="$WORK_DIR/scale-node4"
    mkdir -p "$dir/data"
    started=$(now)
    RUST_LOG=$BENCH_RUST_LOG "$BERTH_BIN" serve --plain-http --data-dir "$dir/data" \
        --listen "127.0.0.1:${ports[0]}" --peer-listen "127.0.0.1:${ports[1]}" \
        --cluster-secret-file "$WORK_DIR/cluster.secret" --peers "$CLUSTER_PEERS" >"$dir/server.log" 2>&1 &
    pid=$!
    STARTED_PIDS+=("$pid")
    wait_until 600 "the new node to be ready" ready "$url" || die "the joining node was not ready within 600 s"
    seconds=$(calc "$(now) - $started")
    log "a new node joined and was ready after $(fmt "$seconds") s (peak RSS $(($(vm_kib VmHWM "$pid") / 1024)) MiB)"
    record "scale: a new node joining at $(tail -n 1 "$WORK_DIR/scale.dat" | cut -d' ' -f1) tags, start to ready" s - "$seconds" 'max=60'
    stop_pid "$pid"

    leader=$(cluster_leader) || die "no leader"
    follower=$(((leader + 1) % CLUSTER_NODES))
    stop_pid "${CLUSTER_PID[follower]}"
    started=$(now)
    node_launch "$follower"
    wait_until 120 "node $((follower + 1)) to be ready again" ready "${CLUSTER_URL[follower]}" ||
        die "the restarted node was not ready within 120 s"
    seconds=$(calc "$(now) - $started")
    log "node $((follower + 1)) restarted and was ready after $(fmt "$seconds") s"
    record "scale: a restart at $(tail -n 1 "$WORK_DIR/scale.dat" | cut -d' ' -f1) tags, start to ready" s - "$seconds" 'max=10'
}

# await_blobs_settled : until node 1's repair reports a round that found every blob
# at its factor and read only what changed (at most 600 s).
await_blobs_settled() {
    wait_until 600 "every blob at its factor" blobs_settled ||
        log "warning: the blobs were not all at their factor after 600 s"
}

blobs_settled() {
    curl -sf -m 2 "${CLUSTER_URL[0]}/_berth/cluster/status" |
        jq -e '.repair != null and .repair.under_replicated == 0 and .repair.full_pass == false' >/dev/null
}

ready() {
    [[ $(curl -s -o /dev/null -m 2 -w '%{http_code}' "$1/readyz") == 200 ]]
}

# vm_kib FIELD PID : a /proc/PID/status memory field, in KiB.
vm_kib() {
    awk -v f="$1:" '$1 == f { print $2 }' "/proc/$2/status"
}

max_of() {
    if (($1 > $2)); then printf '%s\n' "$1"; else printf '%s\n' "$2"; fi
}

# idle_cpu_ms PID SECONDS : CPU time (user and system) PID spends over SECONDS, in ms.
idle_cpu_ms() {
    local pid=$1 before after
    before=$(cpu_seconds "$pid")
    sleep "$2"
    after=$(cpu_seconds "$pid")
    printf '%.0f\n' "$(calc "($after - $before) * 1000")"
}

# scale_plots : PNG plots of the figures against the number of tags.
scale_plots() {
    mkdir -p "$BENCH_SCALE_PLOTS"
    gnuplot <<PLOT || log "warning: gnuplot failed; no plots"
set terminal pngcairo size 800,500 font ",11"
set logscale x
set xlabel "tags in the registry (3 nodes)"
set key top left
set grid
set output "$BENCH_SCALE_PLOTS/scale-listings.png"
set ylabel "ms"
set yrange [0:*]
set title "Catalog and tag list pages (n=100) as the registry grows"
plot "$WORK_DIR/scale.dat" using 1:3 with linespoints title "catalog p99", \
     "" using 1:2 with linespoints title "catalog p50", \
     "" using 1:5 with linespoints title "tag list p99", \
     "" using 1:4 with linespoints title "tag list p50"
set output "$BENCH_SCALE_PLOTS/scale-memory.png"
set ylabel "MiB"
set title "Memory of the largest node as the registry grows"
plot "$WORK_DIR/scale.dat" using 1:6 with linespoints title "resident (VmRSS)", \
     "" using 1:7 with linespoints title "peak (VmHWM)"
set output "$BENCH_SCALE_PLOTS/scale-repair.png"
set ylabel "ms of CPU"
set title "CPU time of ${BENCH_SCALE_IDLE_SECONDS} s of idle repair rounds (one a second)"
plot "$WORK_DIR/scale.dat" using 1:8 with linespoints title "node 1"
PLOT
    cp "$WORK_DIR/scale.dat" "$BENCH_SCALE_PLOTS/scale.dat"
    log "plots in $BENCH_SCALE_PLOTS: scale-listings.png scale-memory.png scale-repair.png"
}

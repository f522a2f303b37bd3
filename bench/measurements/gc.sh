# shellcheck shell=bash
# gc: garbage collection on a 3-node berth cluster (replication factor 3,
# --gc-interval 0, collections only on demand), against CNCF Distribution's offline
# `docker-registry garbage-collect` on the same number of unreferenced blobs.
#
#   1. BENCH_GC_BLOBS small unique blobs, referenced by nothing, uploaded through the
#      API over the three nodes; once every node holds them and their arrival pins
#      (30 s) have expired, one POST /_berth/gc {"grace":0} is timed (the decision), and
#      then GET /_berth/gc is polled until each node's sweep has removed them all.
#   2. While that collection and its sweep run, two probes on node 1: manifest GETs by
#      tag of a small image, one at a time on one connection (latency), and 1 MiB
#      monolithic uploads, one at a time (throughput); the same probes run for
#      BENCH_GC_IDLE_SECONDS on the idle cluster just before.
#   3. BENCH_GC_BLOBS more blobs, all referenced by image manifests of 100 layers, then
#      a timed POST /_berth/gc {"grace":0} that must collect nothing; whether it read
#      blob contents shows in the nodes' /proc/PID/io and in the blob files' atimes.
#   4. Distribution: the same number of blobs pushed to one node, the node stopped,
#      then `docker-registry garbage-collect` timed (it cannot collect online).

: "${BENCH_GC_BLOBS:=100000}"
: "${BENCH_GC_IDLE_SECONDS:=10}"
: "${BENCH_GC_TIMEOUT:=900}"

# An odd size no other blob of the run has, so that the sweep can be followed on disk.
GC_BLOB_BYTES=171
GC_LAYERS_PER_IMAGE=100
GC_PROBE_MIB_FILES=1000

measure_gc() {
    local unref ref n=$BENCH_GC_BLOBS
    ((n >= GC_LAYERS_PER_IMAGE && n % GC_LAYERS_PER_IMAGE == 0)) ||
        die "BENCH_GC_BLOBS must be a multiple of $GC_LAYERS_PER_IMAGE"
    unref=$(gc_small_blobs unref "$n")
    ref=$(gc_small_blobs ref "$n")
    gc_probe_files
    samples_reset
    CLUSTER_ARGS=(--gc-interval 0)
    sync
    cluster_start default
    CLUSTER_ARGS=()
    push_small_image "${CLUSTER_URL[0]}" bench/small latest
    gc_unreferenced_run "$unref" "$n"
    gc_referenced_run "$ref" "$n"
    cluster_stop
    gc_distribution_run "$unref" "$n"
    gc_record "$n"
}

# --- inputs

# gc_small_blobs SET N : N files of GC_BLOB_BYTES random bytes (one keystream per SET,
# cut in pieces, so every blob differs) in DATA_DIR/gc-SET, listed with their digests
# in DATA_DIR/gc-SET-<bytes>.list as "<hex> <path>"; prints that list's path.
gc_small_blobs() {
    local set=$1 n=$2 dir="$DATA_DIR/gc-$1-$GC_BLOB_BYTES"
    if [[ -s $dir.list && $(wc -l <"$dir.list") == "$n" ]]; then
        printf '%s\n' "$dir.list"
        return 0
    fi
    log "generating $n blobs of $GC_BLOB_BYTES random bytes ($set)"
    rm -rf "$dir" "$dir.list"
    mkdir -p "$dir"
    openssl enc -aes-128-ctr -K "$(key_for "gc-$set")" -iv 00000000000000000000000000000000 \
        -nosalt </dev/zero 2>/dev/null | head -c "$((n * GC_BLOB_BYTES))" |
        split -b "$GC_BLOB_BYTES" -a 7 -d - "$dir/b" || true
    (cd "$dir" && find . -type f -name 'b*' -print0 | sort -z | xargs -0 sha256sum) |
        awk -v d="$dir" '{ sub(/^\.\//, "", $2); print $1, d "/" $2 }' >"$dir.list"
    [[ $(wc -l <"$dir.list") == "$n" ]] || die "could not write $n blobs into $dir"
    printf '%s\n' "$dir.list"
}

# gc_probe_files : GC_PROBE_MIB_FILES unique 1 MiB blobs for the upload probe, listed
# like gc_small_blobs lists its own, in DATA_DIR/gc-probe.list.
gc_probe_files() {
    local dir="$DATA_DIR/gc-probe"
    [[ -s $dir.list && $(wc -l <"$dir.list") == "$GC_PROBE_MIB_FILES" ]] && return 0
    log "generating $GC_PROBE_MIB_FILES blobs of 1 MiB for the upload probe"
    rm -rf "$dir" "$dir.list"
    mkdir -p "$dir"
    openssl enc -aes-128-ctr -K "$(key_for gc-probe)" -iv 00000000000000000000000000000000 \
        -nosalt </dev/zero 2>/dev/null | head -c "$((GC_PROBE_MIB_FILES * 1024 * 1024))" |
        split -b 1M -a 4 -d - "$dir/p" || true
    (cd "$dir" && find . -type f -name 'p*' -print0 | sort -z | xargs -0 sha256sum) |
        awk -v d="$dir" '{ sub(/^\.\//, "", $2); print $1, d "/" $2 }' >"$dir.list"
    [[ $(wc -l <"$dir.list") == "$GC_PROBE_MIB_FILES" ]] || die "could not write the probe blobs"
}

# --- uploads in bulk

# gc_upload_config LIST REPO URL... : a curl config with one monolithic upload
# (POST ?digest=, the whole body) per line of LIST, the URLs taken in turn.
gc_upload_config() {
    local list=$1 repo=$2
    shift 2
    awk -v repo="$repo" -v urls="$*" 'BEGIN { n = split(urls, u, " ") }
        { if (NR > 1) print "next"
          printf "url = \"%s/v2/%s/blobs/uploads/?digest=sha256:%s\"\n", u[(NR - 1) % n + 1], repo, $1
          printf "data-binary = \"@%s\"\nheader = \"Content-Type: application/octet-stream\"\n", $2
          printf "header = \"Expect:\"\noutput = \"/dev/null\"\nsilent\nwrite-out = \"%%{http_code} %%{errormsg}\\n\"\n" }' "$list"
}

# gc_bulk CONFIG WANT : runs a curl config, 32 transfers at a time; every transfer
# must answer WANT. Prints the seconds it took.
gc_bulk() {
    local config=$1 want=$2 start bad
    start=$(now)
    curl --parallel --parallel-max 32 -K "$config" >"$config.codes" 2>"$config.err" || true
    bad=$(grep -cv "^$want " "$config.codes" || true)
    ((bad == 0)) || die "$bad of $(wc -l <"$config.codes") transfers did not answer $want: $(sort "$config.codes" | uniq -c | sort -rn | head -n 3 | tr -s ' \n' ' ')"
    calc "$(now) - $start"
}

# gc_await_replicas COUNT : every node holds at least COUNT small blobs (bounded).
gc_await_replicas() {
    local want=$1 i tries
    for ((tries = 0; tries < BENCH_GC_TIMEOUT; tries++)); do
        for ((i = 0; i < CLUSTER_NODES; i++)); do
            (($(node_small_files "$i") >= want)) || break
        done
        ((i == CLUSTER_NODES)) && return 0
        sleep 1
    done
    die "after ${BENCH_GC_TIMEOUT}s not every node holds $want small blobs: $(for ((i = 0; i < CLUSTER_NODES; i++)); do node_small_files "$i"; done | tr '\n' ' ')"
}

# --- probes

# gc_probes_start TAG : starts the latency and upload probes on node 1, in the
# background, until gc_probes_stop; their figures go to $WORK_DIR/gc-TAG.{get,put}.
gc_probes_start() {
    local tag=$1 url=${CLUSTER_URL[0]} config="$WORK_DIR/gc-$1-get.cfg" i
    rm -f "$WORK_DIR/gc-probe.stop"
    for ((i = 0; i < 200; i++)); do
        printf 'url = "%s/v2/bench/small/manifests/latest"\noutput = "/dev/null"\n' "$url"
    done >"$config"
    # One connection, one request at a time: each figure is a request's own latency.
    (
        for ((i = 0; i < 10000; i++)); do
            [[ -e $WORK_DIR/gc-probe.stop ]] && break
            curl -sS -H "Accept: $MANIFEST_ACCEPT" -w '%{http_code} %{time_total}\n' \
                -K "$config" || break
        done >"$WORK_DIR/gc-$tag.get"
    ) &
    GC_PROBE_PIDS=("$!")
    STARTED_PIDS+=("$!")
    (
        while read -r hex file; do
            [[ -e $WORK_DIR/gc-probe.stop ]] && break
            curl -sS -o /dev/null -X POST -H 'Expect:' -H 'Content-Type: application/octet-stream' \
                --data-binary "@$file" -w '%{http_code} %{time_total} %{size_upload}\n' \
                "$url/v2/bench/gc-probe/blobs/uploads/?digest=sha256:$hex" || break
        done <"$DATA_DIR/gc-probe.list.$tag" >"$WORK_DIR/gc-$tag.put"
    ) &
    GC_PROBE_PIDS+=("$!")
    STARTED_PIDS+=("$!")
}

gc_probes_stop() {
    local pid
    touch "$WORK_DIR/gc-probe.stop"
    for pid in "${GC_PROBE_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    GC_PROBE_PIDS=()
}

# gc_probe_figures TAG : "<p99 ms> <GETs> <MB/s> <uploads>" of one probe window; fails
# if any probe request did not answer as it should.
gc_probe_figures() {
    local tag=$1 p99 gets rate puts
    ! grep -v '^200 ' "$WORK_DIR/gc-$tag.get" | head -c 300 | grep . >&2 || die "a manifest GET failed during $tag"
    ! grep -v '^201 ' "$WORK_DIR/gc-$tag.put" | head -c 300 | grep . >&2 || die "an upload failed during $tag"
    gets=$(wc -l <"$WORK_DIR/gc-$tag.get")
    puts=$(wc -l <"$WORK_DIR/gc-$tag.put")
    ((gets > 0 && puts > 0)) || die "the $tag probes made no requests"
    p99=$(awk '{ print $2 * 1000 }' "$WORK_DIR/gc-$tag.get" | sort -g |
        awk '{ v[NR] = $1 } END { i = int(NR * 0.99); if (i < 1) i = 1; print v[i] }')
    rate=$(awk '{ b += $3; t += $2 } END { printf "%.6f\n", b / t / 1000000 }' "$WORK_DIR/gc-$tag.put")
    printf '%s %s %s %s\n' "$p99" "$gets" "$rate" "$puts"
}

# --- berth

# gc_post BODY : POST /_berth/gc on node 1; prints the answer.
gc_post() {
    curl -sS -f -m "$BENCH_GC_TIMEOUT" -X POST -H 'Content-Type: application/json' \
        --data "$1" "${CLUSTER_URL[0]}/_berth/gc" || die "POST /_berth/gc $1 failed"
}

# node_small_files INDEX : how many files of GC_BLOB_BYTES bytes node INDEX has in
# blobs/: the measurement's small blobs, as no other blob here has that size.
node_small_files() {
    find "${CLUSTER_DIR[$1]}/data/blobs/sha256" -type f -size "${GC_BLOB_BYTES}c" 2>/dev/null | wc -l
}

# gc_await_sweeps START : polls the nodes' blob dirs every 0.2 s until none holds a
# small blob any more; prints the seconds since START (as now prints it) at which
# each node got there. The disk, not GET /_berth/gc, says when: the upload probe's
# blobs are collected too and may stay pinned, which would hold "pending" above 0.
gc_await_sweeps() {
    local start=$1 deadline i done_at=()
    deadline=$((${EPOCHREALTIME/./} + BENCH_GC_TIMEOUT * 1000000))
    while :; do
        for ((i = 0; i < CLUSTER_NODES; i++)); do
            [[ -n ${done_at[i]:-} ]] && continue
            (($(node_small_files "$i") == 0)) && done_at[i]=$(calc "$(now) - $start")
        done
        [[ -n ${done_at[0]:-} && -n ${done_at[1]:-} && -n ${done_at[2]:-} ]] && break
        ((${EPOCHREALTIME/./} < deadline)) || die "sweeps unfinished after ${BENCH_GC_TIMEOUT}s"
        sleep 0.2
    done
    printf '%s\n' "${done_at[@]}"
}

# gc_unreferenced_run LIST N : parts 1 and 2, see the top of the file.
gc_unreferenced_run() {
    local list=$1 n=$2 config="$WORK_DIR/gc-upload-unref.cfg" seconds start answer run blobs \
        decision sweeps bytes total idle busy last
    head -n $((GC_PROBE_MIB_FILES / 2)) "$DATA_DIR/gc-probe.list" >"$DATA_DIR/gc-probe.list.idle"
    tail -n +$((GC_PROBE_MIB_FILES / 2 + 1)) "$DATA_DIR/gc-probe.list" >"$DATA_DIR/gc-probe.list.busy"
    gc_upload_config "$list" bench/gc "${CLUSTER_URL[@]}" >"$config"
    log "uploading $n unreferenced blobs over the three nodes"
    seconds=$(gc_bulk "$config" 201)
    log "uploaded $n blobs in $(fmt "$seconds") s ($(fmt "$(calc "$n / $seconds")")/s)"
    last=$(now)
    gc_await_replicas "$n"
    log "every node holds the $n blobs; waiting out their 30 s arrival pins"
    sleep "$(awk -v t="$(calc "$last + 35 - $(now)")" 'BEGIN { print (t > 0) ? t : 0 }')"
    sync

    log "idle probes on node 1 for ${BENCH_GC_IDLE_SECONDS}s"
    gc_probes_start idle
    sleep "$BENCH_GC_IDLE_SECONDS"
    gc_probes_stop
    idle=$(gc_probe_figures idle)

    log "collecting"
    gc_probes_start busy
    start=$(now)
    answer=$(gc_post '{"grace":0}')
    decision=$(calc "$(now) - $start")
    run=$(jq -er '.collected.id' <<<"$answer") || die "unexpected answer: $answer"
    blobs=$(jq -r '.collected.blobs' <<<"$answer")
    log "decision: $blobs blobs in $(fmt "$decision") s (run $run)"
    # The upload probe's blobs are unreferenced too, so the collection takes those that
    # arrived before it decided; a node is done once nothing collected waits on its disk.
    mapfile -t sweeps < <(gc_await_sweeps "$start")
    gc_probes_stop
    busy=$(gc_probe_figures busy)
    bytes=$((CLUSTER_NODES * n * GC_BLOB_BYTES))
    total=$(printf '%s\n' "${sweeps[@]}" | sort -g | tail -n 1)
    log "sweeps done after ${sweeps[*]} s; GET /_berth/gc: $(curl -sS "${CLUSTER_URL[0]}/_berth/gc" | jq -c .nodes)"
    # The probe's later uploads are garbage too: collect them now, untimed, so that the
    # referenced run below finds nothing else to collect.
    log "collecting the upload probe's remaining blobs: $(gc_post '{"grace":0}' | jq -c '.collected | {blobs, bytes}')"
    # After a run each node also sweeps files no metadata names, once; with grace 0 that
    # can take a copy that arrived just before its record did, so let it finish first.
    sleep 3
    GC_FIGURES=(
        [blobs]=$blobs [decision]=$decision [sweep1]=${sweeps[0]} [sweep2]=${sweeps[1]}
        [sweep3]=${sweeps[2]} [total]=$total [bytes]=$bytes [idle]=$idle [busy]=$busy
    )
}

# gc_manifests_config LIST URL : a curl config that PUTs one OCI image manifest per
# GC_LAYERS_PER_IMAGE lines of LIST (its blobs as layers, the small image's config as
# config), tagged i<NUMBER>, written into $WORK_DIR/gc-manifests.
gc_manifests_config() {
    local list=$1 url=$2 dir="$WORK_DIR/gc-manifests" config_file
    mkdir -p "$dir"
    config_file="$(small_image)/config.json"
    awk -v dir="$dir" -v url="$url" -v per="$GC_LAYERS_PER_IMAGE" -v size="$GC_BLOB_BYTES" \
        -v mt="$OCI_MANIFEST" -v cmt="$OCI_CONFIG" -v lmt="$OCI_LAYER" \
        -v cd="$(sha256_of "$config_file")" -v cs="$(size_of "$config_file")" '
        function close_image() {
            printf "]}" >file; close(file)
            if (image > 0) print "next"
            printf "url = \"%s/v2/bench/gc-ref/manifests/i%d\"\nupload-file = \"%s\"\n", url, image, file
            printf "header = \"Content-Type: %s\"\nheader = \"Expect:\"\noutput = \"/dev/null\"\n", mt
            printf "silent\nwrite-out = \"%%{http_code} %%{errormsg}\\n\"\n"
        }
        (NR - 1) % per == 0 {
            if (NR > 1) close_image()
            image = int((NR - 1) / per); file = dir "/m" image ".json"
            printf "{\"schemaVersion\":2,\"mediaType\":\"%s\",\"config\":{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":%d},\"layers\":[", mt, cmt, cd, cs >file
            sep = ""
        }
        { printf "%s{\"mediaType\":\"%s\",\"digest\":\"sha256:%s\",\"size\":%d}", sep, lmt, $1, size >file; sep = "," }
        END { close_image() }' "$list"
}

# gc_referenced_run LIST N : part 3, see the top of the file.
gc_referenced_run() {
    local list=$1 n=$2 config="$WORK_DIR/gc-upload-ref.cfg" seconds start answer i io_before=() \
        io_after=() stamp="$WORK_DIR/gc-ref.stamp" touched=0 reads=0 rchars=0 \
        b_rchar b_read a_rchar a_read
    gc_upload_config "$list" bench/gc-ref "${CLUSTER_URL[@]}" >"$config"
    log "uploading $n blobs to be referenced"
    seconds=$(gc_bulk "$config" 201)
    log "uploaded in $(fmt "$seconds") s; pushing $((n / GC_LAYERS_PER_IMAGE)) manifests of $GC_LAYERS_PER_IMAGE layers"
    # The manifests' config is the small image's, which this repository needs too.
    curl_expect 201 -X POST -H 'Content-Type: application/octet-stream' \
        --data-binary "@$(small_image)/config.json" \
        "${CLUSTER_URL[0]}/v2/bench/gc-ref/blobs/uploads/?$(printf 'digest=%s' "$(sha256_of "$(small_image)/config.json")")" >/dev/null
    gc_manifests_config "$list" "${CLUSTER_URL[0]}" >"$config.manifests"
    seconds=$(gc_bulk "$config.manifests" 201)
    log "pushed in $(fmt "$seconds") s"
    gc_await_replicas "$n"
    sync
    touch "$stamp"
    # Under relatime the first read of a file since its last write moves its atime, so
    # a blob file whose contents the collection read shows up as accessed after stamp.
    sleep 1.1
    for ((i = 0; i < CLUSTER_NODES; i++)); do
        io_before[i]=$(awk '/^(read_bytes|rchar):/ { printf "%s ", $2 }' "/proc/${CLUSTER_PID[i]}/io")
    done
    start=$(now)
    answer=$(gc_post '{"grace":0}')
    seconds=$(calc "$(now) - $start")
    for ((i = 0; i < CLUSTER_NODES; i++)); do
        io_after[i]=$(awk '/^(read_bytes|rchar):/ { printf "%s ", $2 }' "/proc/${CLUSTER_PID[i]}/io")
        read -r b_rchar b_read <<<"${io_before[i]}"
        read -r a_rchar a_read <<<"${io_after[i]}"
        rchars=$((rchars + a_rchar - b_rchar))
        reads=$((reads + a_read - b_read))
        touched=$((touched + $(find "${CLUSTER_DIR[i]}/data/blobs/sha256" -type f -anewer "$stamp" | wc -l)))
    done
    log "no-op collection over $n referenced blobs: $(fmt "$seconds") s, answer $answer"
    log "nodes' reads meanwhile: rchar $rchars B, read_bytes $reads B; blob files read since: $touched"
    GC_FIGURES[noop]=$seconds
    GC_FIGURES[noop_blobs]=$(jq -r '.collected.blobs' <<<"$answer")
    GC_FIGURES[noop_rchar]=$rchars
    GC_FIGURES[noop_read]=$reads
    GC_FIGURES[noop_atime]=$touched
}

# --- Distribution

# gc_distribution_run LIST N : part 4. Distribution takes no monolithic POST, so each
# blob is a POST (its Location kept) then a PUT ?digest= with the body.
gc_distribution_run() {
    local list=$1 n=$2 dir url config="$WORK_DIR/gc-dist.cfg" seconds start
    start_side ref distribution
    dir=${REG_DIR[ref]} url=${REG_URL[ref]}
    log "uploading $n blobs to Distribution ($url)"
    start=$(now)
    # A "next" after the last transfer would be one without a URL, which aborts the rest.
    awk -v url="$url" '{ if (NR > 1) print "next"
        printf "url = \"%s/v2/bench/gc/blobs/uploads/\"\nrequest = \"POST\"\noutput = \"/dev/null\"\nsilent\nwrite-out = \"%%{http_code} %d %%header{location}\\n\"\n", url, NR }' \
        "$list" >"$config"
    curl --parallel --parallel-max 32 -K "$config" >"$config.out" 2>"$config.err" || true
    (($(grep -c '^202 ' "$config.out") == n)) || die "Distribution did not open $n uploads ($config.out)"
    awk -v url="$url" 'NR == FNR { loc[$2] = $3; next }
        { if (FNR > 1) print "next"
          l = loc[FNR]; sub(/\r$/, "", l); if (l ~ /^\//) l = url l
          printf "url = \"%s%sdigest=sha256:%s\"\nupload-file = \"%s\"\n", l, (l ~ /\?/) ? "&" : "?", $1, $2
          printf "header = \"Content-Type: application/octet-stream\"\nheader = \"Expect:\"\noutput = \"/dev/null\"\nsilent\nwrite-out = \"%%{http_code} %%{errormsg}\\n\"\n" }' \
        "$config.out" "$list" >"$config.put"
    gc_bulk "$config.put" 201 >/dev/null
    log "uploaded in $(fmt "$(calc "$(now) - $start")") s; stopping Distribution"
    stop_pid "${REG_PID[ref]}"
    sync
    start=$(now)
    "$REFERENCE_BIN" garbage-collect --delete-untagged "$dir/config.yml" >"$dir/gc.log" 2>&1 ||
        die "docker-registry garbage-collect failed: $(tail -n 3 "$dir/gc.log")"
    seconds=$(calc "$(now) - $start")
    GC_FIGURES[dist_left]=$(find "$dir/data/docker/registry/v2/blobs" -type f -name data | wc -l)
    log "Distribution garbage-collect: $(fmt "$seconds") s, $((n - GC_FIGURES[dist_left])) blobs removed, ${GC_FIGURES[dist_left]} left"
    GC_FIGURES[dist]=$seconds
    stop_side ref
}

# --- the table

declare -A GC_FIGURES=()
GC_PROBE_PIDS=()

gc_record() {
    local n=$1 idle_p99 idle_gets idle_rate idle_puts busy_p99 busy_gets busy_rate busy_puts
    read -r idle_p99 idle_gets idle_rate idle_puts <<<"${GC_FIGURES[idle]}"
    read -r busy_p99 busy_gets busy_rate busy_puts <<<"${GC_FIGURES[busy]}"
    record "gc of $n unreferenced blobs, 3 nodes: blobs collected (incl. upload probe's)" blobs - "${GC_FIGURES[blobs]}" report
    record "gc decision, POST /_berth/gc" s - "${GC_FIGURES[decision]}" report
    record "gc sweep done, nodes $(fmt "${GC_FIGURES[sweep1]}")/$(fmt "${GC_FIGURES[sweep2]}")/$(fmt "${GC_FIGURES[sweep3]}") s, latest" s - "${GC_FIGURES[total]}" report
    record "gc small-blob bytes reclaimed over 3 nodes per second, POST to last sweep" MB/s - \
        "$(mb_per_s "${GC_FIGURES[bytes]}" "${GC_FIGURES[total]}")" report
    record "gc berth online (to last sweep) vs Distribution offline garbage-collect" s \
        "${GC_FIGURES[dist]}" "${GC_FIGURES[total]}" report
    record "manifest GET p99 on node 1, idle ($idle_gets GETs) vs during gc ($busy_gets GETs)" ms \
        "$idle_p99" "$busy_p99" 'ratio<=2'
    record "1 MiB upload to node 1, idle ($idle_puts) vs during gc ($busy_puts)" MB/s \
        "$idle_rate" "$busy_rate" 'ratio>=0.9'
    record "gc with nothing to collect over $n referenced blobs (collected ${GC_FIGURES[noop_blobs]})" s - \
        "${GC_FIGURES[noop]}" report
    record "  meanwhile: blob files whose atime moved, 3 nodes" files - "${GC_FIGURES[noop_atime]}" report
    record "  meanwhile: read_bytes of the 3 nodes (/proc/PID/io)" KiB - "$((GC_FIGURES[noop_read] / 1024))" report
    record "  meanwhile: rchar of the 3 nodes (all read calls, RocksDB included)" KiB - \
        "$((GC_FIGURES[noop_rchar] / 1024))" report
}

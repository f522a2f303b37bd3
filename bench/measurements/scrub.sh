# shellcheck shell=bash
# scrub: how fast a berth scrub pass re-reads and re-hashes a node's blobs with the cap
# off (--scrub-bandwidth 0), against this machine's SHA-256 limit: one `openssl dgst
# -sha256` process over the same blob files, as one pass reads them (OpenSSL uses the
# CPU's SHA extensions; coreutils' sha256sum does not, and is several times slower).
# A node gets BENCH_SCRUB_MIB MiB of random blobs of BENCH_SCRUB_BLOB_MIB MiB each; the
# files are in the page cache for both, so the figures are hashing, not disk. A pass's rate comes from the node's
# own report (`scrub.last_pass_rate` in /_berth/cluster/status), of a pass that began
# after every blob was in. BENCH_REPEAT passes and openssl runs, medians.

: "${BENCH_SCRUB_MIB:=2048}"
: "${BENCH_SCRUB_BLOB_MIB:=64}"

measure_scrub() {
    local i n file passes start bytes rate
    n=$((BENCH_SCRUB_MIB / BENCH_SCRUB_BLOB_MIB))
    ((n > 0)) || die "BENCH_SCRUB_MIB must be at least BENCH_SCRUB_BLOB_MIB"
    samples_reset
    start_side cand berth-scrub
    for ((i = 1; i <= n; i++)); do
        file=$(blob_file "$BENCH_SCRUB_BLOB_MIB" "$i")
        put_blob "${REG_URL[cand]}" bench/scrub "$file" >/dev/null
    done
    bytes=$((n * BENCH_SCRUB_BLOB_MIB * 1024 * 1024))
    log "berth holds $n blobs ($(size_label "$BENCH_SCRUB_MIB")); timing scrub passes"
    passes=$(scrub_figure passes)
    for ((i = 1; i <= BENCH_REPEAT; i++)); do
        # The pass under way may have begun before the last blob: skip it.
        wait_until 600 "a scrub pass" scrub_passes_beyond "$((passes + i + 1))" || die "no scrub pass finished"
        [[ $(scrub_figure last_pass_bytes) == "$bytes" ]] ||
            die "a pass read $(scrub_figure last_pass_bytes) bytes, not $bytes"
        rate=$(scrub_figure last_pass_rate)
        samples_add rate cand "$(calc "$rate / 1000000")"
        passes=$((passes + 1))
    done
    for ((i = 1; i <= BENCH_REPEAT; i++)); do
        start=$(now)
        openssl dgst -sha256 "${REG_DIR[cand]}"/data/blobs/sha256/*/* >/dev/null
        samples_add rate ref "$(calc "$bytes / ($(now) - $start) / 1000000")"
    done
    stop_side cand
    record_samples "scrub: re-hash of $(size_label "$BENCH_SCRUB_MIB") of local blobs, openssl dgst -sha256 vs a berth pass with no cap (warm cache)" \
        MB/s rate report
}

# scrub_figure FIELD : a figure of the candidate's scrub report (0 before there is one).
scrub_figure() {
    curl -fsS "${REG_URL[cand]}/_berth/cluster/status" | jq -r --arg f "$1" '.scrub[$f] // 0'
}

scrub_passes_beyond() {
    (($(scrub_figure passes) >= $1))
}

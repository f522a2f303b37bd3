# shellcheck shell=bash
# import: moving a Distribution registry's content into berth. The reference side is
# what one does without `berth import`: `skopeo copy` from the running Distribution to
# berth, through both registries' APIs. The candidate side is `berth import` reading
# Distribution's storage root directly. The same one-layer image of BENCH_SIZE_MIB MiB
# (made offline with umoci) is pushed into Distribution once per run; each copy goes
# into a berth node started on empty storage, so both upload every byte.

measure_import() {
    local run layout bytes seconds
    [[ $BENCH_CANDIDATE == berth ]] || die "import needs BENCH_CANDIDATE=berth"
    layout=$(oci_layout "$BENCH_SIZE_MIB")
    bytes=$(layout_bytes "$layout")
    samples_reset
    for ((run = 1; run <= BENCH_REPEAT; run++)); do
        pair_start
        timed_skopeo copy --dest-tls-verify=false "oci:$layout:bench" \
            "docker://${REG_URL[ref]#http://}/bench/import:bench" >/dev/null
        seconds=$(timed_berth_import "${REG_DIR[ref]}/data" "${REG_URL[cand]}")
        samples_add copy cand "$(mb_per_s "$bytes" "$seconds")"
        stop_side cand
        start_side cand
        seconds=$(timed_skopeo copy --src-tls-verify=false --dest-tls-verify=false \
            "docker://${REG_URL[ref]#http://}/bench/import:bench" \
            "docker://${REG_URL[cand]#http://}/bench/import:bench")
        samples_add copy ref "$(mb_per_s "$bytes" "$seconds")"
        pair_stop
    done
    record_samples "import of a $(size_label "$BENCH_SIZE_MIB") image from Distribution: skopeo copy between the registries vs berth import of its storage" \
        MB/s copy 'ratio>=2'
}

# timed_berth_import ROOT NODE : imports ROOT into NODE; prints the seconds it took.
timed_berth_import() {
    local start
    start=$(now)
    "$BERTH_BIN" import "$1" --node "$2" --progress off >>"$WORK_DIR/import.log" 2>&1 || {
        tail -n 20 "$WORK_DIR/import.log" >&2
        die "berth import $1 failed"
    }
    calc "$(now) - $start"
}

# shellcheck shell=bash
# skopeo: copy of a one-layer image (made offline with umoci) to and from each
# registry. Every run starts on empty storage, so pushes upload every byte.

measure_skopeo() {
    local run side layout bytes seconds
    layout=$(oci_layout "$BENCH_SIZE_MIB")
    bytes=$(layout_bytes "$layout")
    samples_reset
    for ((run = 1; run <= BENCH_REPEAT; run++)); do
        pair_start
        for side in $(sides_in_turn "$run"); do
            seconds=$(skopeo_push "$layout" "$side")
            samples_add push "$side" "$(mb_per_s "$bytes" "$seconds")"
        done
        for side in $(sides_in_turn "$run"); do
            seconds=$(skopeo_pull "$side")
            samples_add pull "$side" "$(mb_per_s "$bytes" "$seconds")"
        done
        pair_stop
    done
    record_samples "skopeo push $(size_label "$BENCH_SIZE_MIB") image" MB/s push report
    record_samples "skopeo pull $(size_label "$BENCH_SIZE_MIB") image" MB/s pull report
}

# skopeo_push LAYOUT SIDE : prints the seconds the copy took.
skopeo_push() {
    timed_skopeo copy --dest-tls-verify=false "oci:$1:bench" "docker://${REG_URL[$2]#http://}/bench/skopeo:bench"
}

# skopeo_pull SIDE : pulls into a scratch dir: layout, removed afterwards; prints seconds.
skopeo_pull() {
    local dir="$WORK_DIR/pull-$1" seconds
    rm -rf "$dir"
    seconds=$(timed_skopeo copy --src-tls-verify=false "docker://${REG_URL[$1]#http://}/bench/skopeo:bench" "dir:$dir")
    rm -rf "$dir"
    printf '%s\n' "$seconds"
}

# timed_skopeo ARGS... : runs skopeo with its output in a log, prints elapsed seconds.
timed_skopeo() {
    local start
    start=$(now)
    skopeo "$@" >>"$WORK_DIR/skopeo.log" 2>&1 || {
        tail -n 20 "$WORK_DIR/skopeo.log" >&2
        die "skopeo $* failed"
    }
    calc "$(now) - $start"
}

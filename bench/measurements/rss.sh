# shellcheck shell=bash
# rss: peak resident memory (VmHWM) of each registry process over a fresh life spent
# pushing two blobs of one size (one monolithic PUT, one streamed PATCH as skopeo
# sends it) and pulling both back. Taken at two sizes to show whether memory grows
# with the blob size.

measure_rss() {
    local mib side peak ref_growth cand_growth
    samples_reset
    for mib in "$BENCH_RSS_SMALL_MIB" "$BENCH_SIZE_MIB"; do
        blob_file "$mib" 1 >/dev/null
        blob_file "$mib" 2 >/dev/null
        pair_start
        for side in "${SIDES[@]}"; do
            exercise_blobs "${REG_URL[$side]}" "$mib"
            peak=$(peak_rss_mib "$side")
            samples_add "rss$mib" "$side" "$peak"
        done
        pair_stop
    done
    record_samples "peak RSS, push+pull $(size_label "$BENCH_RSS_SMALL_MIB")" MiB "rss$BENCH_RSS_SMALL_MIB" 'max=64'
    record_samples "peak RSS, push+pull $(size_label "$BENCH_SIZE_MIB")" MiB "rss$BENCH_SIZE_MIB" 'max=64'
    ref_growth=$(rss_growth ref)
    cand_growth=$(rss_growth cand)
    record "peak RSS growth, $(size_label "$BENCH_RSS_SMALL_MIB") to $(size_label "$BENCH_SIZE_MIB")" MiB \
        "$ref_growth" "$cand_growth" 'delta<=8'
}

# exercise_blobs BASE_URL MIB : both upload styles and both downloads.
exercise_blobs() {
    local base=$1 mib=$2 first second
    first=$(blob_file "$mib" 1)
    second=$(blob_file "$mib" 2)
    put_blob "$base" bench/rss "$first" >/dev/null
    patch_blob "$base" bench/rss "$second" >/dev/null
    get_blob "$base" bench/rss "$first" >/dev/null
    get_blob "$base" bench/rss "$second" >/dev/null
}

# rss_growth SIDE : peak at the large size minus peak at the small size, in MiB.
rss_growth() {
    calc "$(samples_median "rss$BENCH_SIZE_MIB" "$1") - $(samples_median "rss$BENCH_RSS_SMALL_MIB" "$1")"
}

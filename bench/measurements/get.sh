# shellcheck shell=bash
# get: GET of a large blob to /dev/null, after one untimed warm-up GET per side.

measure_get() {
    local run side file seconds
    file=$(blob_file "$BENCH_SIZE_MIB" 1)
    pair_start
    for side in "${SIDES[@]}"; do
        put_blob "${REG_URL[$side]}" bench/get "$file" >/dev/null
        get_blob "${REG_URL[$side]}" bench/get "$file" >/dev/null
    done
    samples_reset
    for ((run = 1; run <= BENCH_GET_REPEAT; run++)); do
        for side in $(sides_in_turn "$run"); do
            seconds=$(get_blob "${REG_URL[$side]}" bench/get "$file")
            samples_add get "$side" "$(mb_per_s "$(size_of "$file")" "$seconds")"
        done
    done
    pair_stop
    record_samples "GET $(size_label "$BENCH_SIZE_MIB") blob" MB/s get 'ratio>=1.5'
}

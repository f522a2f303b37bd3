# shellcheck shell=bash
# get: GET of a large blob to /dev/null, after one untimed warm-up GET per side.

measure_get() {
    pair_start
    get_runs bench/get "$(blob_file "$BENCH_SIZE_MIB" 1)"
    pair_stop
    record_samples "GET $(size_label "$BENCH_SIZE_MIB") blob" MB/s get 'ratio>=1.5'
}

# get_runs REPO FILE : on the running pair, FILE pushed to both sides and read once,
# then BENCH_GET_REPEAT timed reads per side; samples "get" in MB/s.
get_runs() {
    local repo=$1 file=$2 run side seconds
    for side in "${SIDES[@]}"; do
        put_blob "${REG_URL[$side]}" "$repo" "$file" >/dev/null
        get_blob "${REG_URL[$side]}" "$repo" "$file" >/dev/null
    done
    samples_reset
    for ((run = 1; run <= BENCH_GET_REPEAT; run++)); do
        for side in $(sides_in_turn "$run"); do
            seconds=$(get_blob "${REG_URL[$side]}" "$repo" "$file")
            samples_add get "$side" "$(mb_per_s "$(size_of "$file")" "$seconds")"
        done
    done
}

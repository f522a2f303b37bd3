# shellcheck shell=bash
# upload: monolithic blob upload, POST then one PUT carrying the whole body and digest.
# Each run uploads a blob neither registry has seen, so no side can skip the write.

measure_upload() {
    local run side file seconds
    for ((run = 1; run <= BENCH_REPEAT; run++)); do
        blob_file "$BENCH_SIZE_MIB" "$run" >/dev/null
    done
    samples_reset
    pair_start
    for ((run = 1; run <= BENCH_REPEAT; run++)); do
        file=$(blob_file "$BENCH_SIZE_MIB" "$run")
        for side in $(sides_in_turn "$run"); do
            seconds=$(put_blob "${REG_URL[$side]}" bench/upload "$file")
            samples_add upload "$side" "$(mb_per_s "$(size_of "$file")" "$seconds")"
        done
    done
    pair_stop
    record_samples "upload $(size_label "$BENCH_SIZE_MIB"), one PUT" MB/s upload 'ratio>=3.5'
}

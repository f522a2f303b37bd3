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

# upload-dd: the same monolithic upload into one berth node (hashed, verified, fsynced
# and indexed before the 201) against dd writing the same file to the same disk with
# conv=fsync: how close an upload comes to what the disk takes.
measure_upload_dd() {
    local run side file seconds start out cpu gib rate me=$BASHPID
    for ((run = 1; run <= BENCH_REPEAT; run++)); do
        blob_file "$BENCH_SIZE_MIB" "$run" >/dev/null
    done
    samples_reset
    start_side single berth
    out="$WORK_DIR/dd.out"
    for ((run = 1; run <= BENCH_REPEAT; run++)); do
        file=$(blob_file "$BENCH_SIZE_MIB" "$run")
        gib=$(calc "$(size_of "$file") / 1073741824")
        for side in $(sides_in_turn "$run"); do
            sync
            # Both sides write into memory this machine has already backed.
            recycle_memory $((2 * BENCH_SIZE_MIB))
            # The CPU berth and the client (curl or dd) use for the write.
            cpu=$(calc "$(cpu_seconds "${REG_PID[single]}") + $(children_cpu_seconds "$me")")
            if [[ $side == ref ]]; then
                start=$(now)
                dd if="$file" of="$out" bs=1M conv=fsync status=none
                seconds=$(calc "$(now) - $start")
                rm -f "$out"
            else
                seconds=$(put_blob "${REG_URL[single]}" bench/upload-dd "$file")
            fi
            cpu=$(calc "($(cpu_seconds "${REG_PID[single]}") + $(children_cpu_seconds "$me") - $cpu) / $gib")
            rate=$(mb_per_s "$(size_of "$file")" "$seconds")
            samples_add upload "$side" "$rate"
            samples_add cpu "$side" "$cpu"
            # What the cores could move at that CPU cost, were nothing else to wait for.
            samples_add ceiling "$side" "$(calc "$(nproc) * 1073.741824 / $cpu")"
            log "run $run, $([[ $side == ref ]] && echo dd || echo berth): $(fmt "$rate") MB/s, $(fmt "$cpu") CPU s/GiB"
        done
        # One core's SHA-256 of the same bytes: an upload cannot end before its hash.
        start=$(now)
        openssl dgst -sha256 "$file" >/dev/null
        samples_add sha ref "$(mb_per_s "$(size_of "$file")" "$(calc "$(now) - $start")")"
    done
    stop_side single
    record_samples "upload $(size_label "$BENCH_SIZE_MIB") into one node vs dd conv=fsync of the same file, same disk" MB/s upload 'ratio>=0.9'
    record_samples "upload vs dd: CPU seconds per GiB, berth and curl vs dd" s/GiB cpu report
    record_samples "upload vs dd: what $(nproc) cores move at that CPU cost" MB/s ceiling report
    record "upload vs one core's SHA-256 of the same file (OpenSSL, SHA-NI)" MB/s \
        "$(samples_median sha ref)" "$(samples_median upload cand)" report
}

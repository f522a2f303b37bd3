# shellcheck shell=bash
# manifest and head: request rate and p99 latency under wrk, against a small image
# (config blob, 4 KiB layer blob, OCI manifest) pushed to both registries first.

MANIFEST_ACCEPT="application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json"

measure_manifest() {
    measure_rate "manifest GET by tag" GET "$MANIFEST_ACCEPT" /v2/bench/small/manifests/latest
}

# wrk 4.1 ignores that a HEAD response has no body and waits for Content-Length bytes
# that never come, so the blob asked for is the empty one (Content-Length: 0). The
# registry does the same lookup as for any other blob.
measure_head() {
    measure_rate "HEAD blob" HEAD "" "/v2/bench/small/blobs/$(sha256_of "$(small_image)/empty.bin")"
}

# measure_rate TITLE METHOD ACCEPT PATH
measure_rate() {
    local title=$1
    pair_start
    rate_runs "$2" "$3" "$4"
    pair_stop
    record_samples "$title" req/s rate 'ratio>=10'
    record_samples "$title, p99 latency" ms p99 'max=5'
}

# rate_runs METHOD ACCEPT PATH : on the running pair, the small image pushed to both
# sides, then wrk on PATH; samples "rate" and "p99".
rate_runs() {
    local method=$1 accept=$2 path=$3 run side result rps p99
    for side in "${SIDES[@]}"; do
        push_small_image "${REG_URL[$side]}" bench/small latest
    done
    samples_reset
    for ((run = 1; run <= BENCH_WRK_REPEAT; run++)); do
        for side in $(sides_in_turn "$run"); do
            result=$(run_wrk "${REG_URL[$side]}$path" "$method" "$accept")
            read -r rps p99 <<<"$result"
            samples_add rate "$side" "$rps"
            samples_add p99 "$side" "$p99"
        done
    done
}

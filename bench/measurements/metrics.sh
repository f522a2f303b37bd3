# shellcheck shell=bash
# metrics-scrape, metrics-get: what Prometheus metrics cost.
#
#   metrics-scrape: a node holding BENCH_METRICS_BLOBS small blobs (uploaded by
#     bench/lib/fill.py), then BENCH_METRICS_SCRAPES sequential GETs of /metrics (as
#     Prometheus asks, OpenMetrics); p50 and p99 of the scrape time. Distribution, with
#     the same blobs and its Prometheus endpoint on (`http.debug`), is the reference.
#   metrics-get: manifest GET by tag with wrk, berth with metrics on against berth with
#     `--metrics false`, as the rate measurements run.

: "${BENCH_METRICS_BLOBS:=100000}"
: "${BENCH_METRICS_SCRAPES:=200}"

measure_metrics_scrape() {
    local side url took times=()
    samples_reset
    for side in ref cand; do
        case $side in
            ref) start_side ref distribution-metrics ;;
            cand) start_side cand berth ;;
        esac
        log "$(side_label "$side"): uploading $BENCH_METRICS_BLOBS blobs: $(python3 "$BENCH_DIR/lib/fill.py" \
            "${REG_URL[$side]}" bench/metrics "$BENCH_METRICS_BLOBS" 8) (blobs, seconds)"
        url=$(metrics_url "$side")
        curl -fsS -o /dev/null "$url" || die "no metrics at $url"
        times=()
        for ((i = 0; i < BENCH_METRICS_SCRAPES; i++)); do
            took=$(curl -fsS -o /dev/null -w '%{time_total}' \
                -H 'Accept: application/openmetrics-text; version=1.0.0' "$url")
            times+=("$(calc "$took * 1000")")
        done
        read -r p50 p99 < <(printf '%s\n' "${times[@]}" | p50_p99)
        log "$(side_label "$side"): scrape p50 $p50 ms, p99 $p99 ms"
        samples_add p50 "$side" "$p50"
        samples_add p99 "$side" "$p99"
        stop_side "$side"
    done
    record_samples "metrics: /metrics scrape of a node holding $BENCH_METRICS_BLOBS blobs, p50" ms p50 report
    record_samples "metrics: /metrics scrape of a node holding $BENCH_METRICS_BLOBS blobs, p99" ms p99 'max=50'
}

# metrics_url SIDE : where the side serves its metrics.
metrics_url() {
    case $1 in
        ref) printf 'http://127.0.0.1:%s/metrics\n' "$(cat "${REG_DIR[ref]}/debug.port")" ;;
        cand) printf '%s/metrics\n' "${REG_URL[cand]}" ;;
    esac
}

measure_metrics_get() {
    start_side ref berth-nometrics
    start_side cand berth
    rate_runs GET "$MANIFEST_ACCEPT" /v2/bench/small/manifests/latest
    stop_side ref
    stop_side cand
    record_samples "metrics: manifest GET by tag, berth with metrics off vs on" req/s rate 'ratio>=0.95'
    record_samples "metrics: manifest GET by tag, p99 latency, metrics off vs on" ms p99 report
}

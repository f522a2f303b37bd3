# shellcheck shell=bash
# webhooks: the cost and speed of webhook delivery, berth as a 3-node cluster against a
# CNCF Distribution with the same endpoints in its `notifications` section. Receivers
# are bench/lib/hooks.py (Distribution's envelope; one line per push event).
#
#   1. Push rate: BENCH_HOOKS_PUSHES small manifests by BENCH_HOOKS_CLIENTS clients,
#      round-robin over the nodes, with no endpoint and with three, alternating, over
#      BENCH_REPEAT runs each; the row is the ratio of the medians, with endpoints over
#      without. Distribution's own ratio is its row's reference.
#   2. Latency: BENCH_HOOKS_LATENCY_PUSHES pushes at BENCH_HOOKS_RATE a second with one
#      endpoint; from each 201 to the receiver getting the event, p50 and p99.
#   3. Throughput: BENCH_HOOKS_BACKLOG pushes while the endpoint's receiver is down
#      (the events wait), then the receiver starts: distinct events a second, from the
#      first arrival to the last. berth twice: in Distribution's format (up to 100
#      events a request) and in Docker Hub's (one event a request).

: "${BENCH_HOOKS_PUSHES:=2000}"
: "${BENCH_HOOKS_CLIENTS:=8}"
: "${BENCH_HOOKS_RATE:=20}"
: "${BENCH_HOOKS_LATENCY_PUSHES:=600}"
: "${BENCH_HOOKS_BACKLOG:=5000}"
: "${BENCH_HOOKS_TIMEOUT:=300}"

HOOKS_PY="$BENCH_DIR/lib/hooks.py"
HOOKS_CONFIG='{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
HOOKS_RECEIVER_PIDS=() HOOKS_RECEIVER_PORTS=()
HOOKS_REF_PID='' HOOKS_REF_URL='' HOOKS_REF_DIR=''
HOOKS_RUN=0

measure_webhooks() {
    local run mode side urls
    samples_reset
    hooks_receivers_start 3
    # berth
    cluster_start default
    urls=("${CLUSTER_URL[@]}")
    for ((run = 1; run <= BENCH_REPEAT; run++)); do
        for mode in $(hooks_modes "$run"); do
            hooks_berth_endpoints "$mode"
            samples_add "rate-$mode" cand "$(hooks_push_rate "berth-$run-$mode" "${urls[@]}")"
        done
    done
    hooks_berth_endpoints 1
    hooks_latency cand "${urls[@]}"
    hooks_berth_backlog distribution throughput "${urls[@]}"
    hooks_berth_backlog hub throughput-single "${urls[@]}"
    cluster_stop
    # Distribution
    for ((run = 1; run <= BENCH_REPEAT; run++)); do
        for mode in $(hooks_modes "$run"); do
            hooks_ref_start "$mode"
            samples_add "rate-$mode" ref "$(hooks_push_rate "distribution-$run-$mode" "$HOOKS_REF_URL")"
            hooks_ref_stop
        done
    done
    hooks_ref_start 1
    hooks_latency ref "$HOOKS_REF_URL"
    hooks_ref_stop
    hooks_ref_backlog
    hooks_receivers_stop
    hooks_record
}

# hooks_modes RUN : the endpoint counts of run RUN, their order alternating.
hooks_modes() {
    if (($1 % 2)); then printf '0 3\n'; else printf '3 0\n'; fi
}

# --- receivers

# hooks_receivers_start N : N receivers on fresh ports; receiver i writes to
# WORK_DIR/hooks-received-<i>.
hooks_receivers_start() {
    local i port
    HOOKS_RECEIVER_PIDS=() HOOKS_RECEIVER_PORTS=()
    for ((i = 0; i < $1; i++)); do
        port=$(pick_port)
        hooks_receiver_on "$i" "$port"
    done
}

# hooks_receiver_on I PORT : (re)starts receiver I on PORT.
hooks_receiver_on() {
    local i=$1 port=$2
    : >"$WORK_DIR/hooks-received-$i"
    python3 "$HOOKS_PY" receive "$port" "$WORK_DIR/hooks-received-$i" 2>>"$WORK_DIR/hooks-receiver.log" &
    HOOKS_RECEIVER_PIDS[i]=$!
    HOOKS_RECEIVER_PORTS[i]=$port
    STARTED_PIDS+=("$!")
    wait_until 10 "receiver $i on port $port" hooks_listens "$port" || die "the receiver did not start"
}

hooks_listens() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

hooks_receivers_stop() {
    local pid
    for pid in "${HOOKS_RECEIVER_PIDS[@]}"; do
        stop_pid "$pid"
    done
}

# hooks_received I : how many distinct push events receiver I has recorded.
hooks_received() {
    cut -d' ' -f1 "$WORK_DIR/hooks-received-$1" | sort -u | wc -l
}

# --- pushes

# hooks_push REPO COUNT RATE URL... : uploads the config into REPO through the first URL,
# then pushes; writes "<tag> <time>" lines to WORK_DIR/hooks-pushed and prints the
# seconds the pushes took.
hooks_push() {
    local repo=$1 count=$2 rate=$3 digest size out
    shift 3
    digest="sha256:$(printf '%s' "$HOOKS_CONFIG" | sha256sum | cut -d' ' -f1)"
    size=${#HOOKS_CONFIG}
    # A session, then the bytes: Distribution has no one-request upload.
    curl_expect 202 -X POST "$1/v2/$repo/blobs/uploads/" >/dev/null
    curl_expect 201 -X PUT --data-binary "$HOOKS_CONFIG" -H 'Content-Type: application/octet-stream' \
        "$(with_digest "$(last_location "$1")" "$digest")" >/dev/null
    out=$(python3 "$HOOKS_PY" push "$WORK_DIR/hooks-pushed" "$repo" "$digest" "$size" "$count" \
        "$BENCH_HOOKS_CLIENTS" "$rate" "$@" | tail -n 1) || die "pushes failed"
    awk '{ print $2 }' <<<"$out"
}

# hooks_push_rate NAME URL... : pushes per second of one push-rate run, into a
# repository of its own.
hooks_push_rate() {
    local name=$1 seconds
    shift
    seconds=$(hooks_push "bench/hooks-rate-$name" "$BENCH_HOOKS_PUSHES" 0 "$@")
    log "push run $name: $BENCH_HOOKS_PUSHES pushes in $seconds s"
    calc "$BENCH_HOOKS_PUSHES / $seconds"
}

# hooks_latency SIDE URL... : paced pushes with receiver 0 as the only endpoint; adds
# the p50 and p99 from 201 to event.
hooks_latency() {
    local side=$1 p50 p99 matched n=$BENCH_HOOKS_LATENCY_PUSHES
    shift
    : >"$WORK_DIR/hooks-received-0"
    HOOKS_RUN=$((HOOKS_RUN + 1))
    hooks_push "bench/hooks-latency-$HOOKS_RUN" "$n" "$BENCH_HOOKS_RATE" "$@" >/dev/null
    wait_until "$BENCH_HOOKS_TIMEOUT" "$n events" hooks_has 0 "$n" ||
        log "warning: only $(hooks_received 0) of $n events arrived"
    read -r p50 p99 matched < <(python3 "$HOOKS_PY" latency "$WORK_DIR/hooks-pushed" "$WORK_DIR/hooks-received-0")
    log "$(side_label "$side"): 201 to event p50 $p50 ms, p99 $p99 ms ($matched events)"
    samples_add p50 "$side" "$p50"
    samples_add p99 "$side" "$p99"
}

hooks_has() {
    (($(hooks_received "$1") >= $2))
}

# --- berth

# hooks_berth_endpoints N : berth's endpoints become receivers 0..N-1 (none for 0).
hooks_berth_endpoints() {
    local n=$1 i id body
    for i in 0 1 2; do
        id="bench-$i"
        curl -fsS -o /dev/null -X DELETE "${CLUSTER_URL[0]}/_berth/webhooks/$id" 2>/dev/null || true
        ((i < n)) || continue
        body=$(jq -nc --arg id "$id" --arg url "http://127.0.0.1:${HOOKS_RECEIVER_PORTS[i]}/" \
            '{id: $id, url: $url, events: "push", allow_internal: true}')
        curl_expect 201 -X POST -H 'Content-Type: application/json' --data "$body" \
            "${CLUSTER_URL[0]}/_berth/webhooks" >/dev/null
    done
}

# hooks_berth_backlog FORMAT METRIC URL... : the throughput run: an endpoint of FORMAT
# whose receiver is down while the pushes commit, then up.
hooks_berth_backlog() {
    local format=$1 metric=$2 port body n=$BENCH_HOOKS_BACKLOG
    shift 2
    hooks_berth_endpoints 0
    curl -fsS -o /dev/null -X DELETE "${CLUSTER_URL[0]}/_berth/webhooks/bench-backlog" 2>/dev/null || true
    stop_pid "${HOOKS_RECEIVER_PIDS[0]}"
    port=${HOOKS_RECEIVER_PORTS[0]}
    body=$(jq -nc --arg url "http://127.0.0.1:$port/" --arg format "$format" \
        '{id: "bench-backlog", url: $url, events: "push", allow_internal: true, format: $format,
          attempts: 100, backoff_ms: 100, max_backoff_ms: 200}')
    curl_expect 201 -X POST -H 'Content-Type: application/json' --data "$body" \
        "${CLUSTER_URL[0]}/_berth/webhooks" >/dev/null
    HOOKS_RUN=$((HOOKS_RUN + 1))
    hooks_push "bench/hooks-backlog-$HOOKS_RUN" "$n" 0 "$@" >/dev/null
    hooks_receiver_on 0 "$port"
    hooks_backlog_figure cand "$metric"
}

# hooks_backlog_figure SIDE METRIC : waits for the backlog at receiver 0 and adds its
# rate.
hooks_backlog_figure() {
    local n=$BENCH_HOOKS_BACKLOG rate got
    wait_until "$BENCH_HOOKS_TIMEOUT" "$n events" hooks_has 0 "$n" ||
        log "warning: only $(hooks_received 0) of $n events arrived"
    read -r rate got < <(python3 "$HOOKS_PY" throughput "$WORK_DIR/hooks-received-0")
    log "$(side_label "$1"): $got events at $rate a second ($2)"
    samples_add "$2" "$1" "$rate"
}

# --- Distribution

# hooks_ref_start N : a fresh Distribution whose notifications go to receivers 0..N-1.
hooks_ref_start() {
    local n=$1 i port extra=''
    if ((n > 0)); then
        extra=$'notifications:\n  endpoints:'
        for ((i = 0; i < n; i++)); do
            extra+=$'\n'"    - name: bench-$i"
            extra+=$'\n'"      url: http://127.0.0.1:${HOOKS_RECEIVER_PORTS[i]}/"
            extra+=$'\n'"      timeout: 5s"
            extra+=$'\n'"      threshold: 100"
            extra+=$'\n'"      backoff: 100ms"
        done
    fi
    HOOKS_REF_DIR="$WORK_DIR/hooks-distribution"
    mirror_distribution_start "$HOOKS_REF_DIR" false "$extra"
    HOOKS_REF_PID=$MIRROR_STARTED_PID HOOKS_REF_URL=$MIRROR_STARTED_URL
}

hooks_ref_stop() {
    [[ -n $HOOKS_REF_PID ]] || return 0
    stop_pid "$HOOKS_REF_PID"
    rm -rf "$HOOKS_REF_DIR"
    HOOKS_REF_PID=''
}

# hooks_ref_backlog : the throughput run against Distribution: its one endpoint's
# receiver down while the pushes commit, then up.
hooks_ref_backlog() {
    local port=${HOOKS_RECEIVER_PORTS[0]}
    stop_pid "${HOOKS_RECEIVER_PIDS[0]}"
    hooks_ref_start 1
    HOOKS_RUN=$((HOOKS_RUN + 1))
    hooks_push "bench/hooks-backlog-$HOOKS_RUN" "$BENCH_HOOKS_BACKLOG" 0 "$HOOKS_REF_URL" >/dev/null
    hooks_receiver_on 0 "$port"
    hooks_backlog_figure ref throughput
    hooks_ref_stop
}

hooks_record() {
    local ref_ratio cand_ratio
    ref_ratio=$(calc "$(samples_median rate-3 ref) / $(samples_median rate-0 ref)")
    cand_ratio=$(calc "$(samples_median rate-3 cand) / $(samples_median rate-0 cand)")
    record "webhooks: pushes a second, no endpoint, Distribution 1 node vs berth 3 nodes" pushes/s \
        "$(samples_median rate-0 ref)" "$(samples_median rate-0 cand)" report
    record "webhooks: pushes a second with 3 endpoints over without, Distribution vs berth" "x" \
        "$ref_ratio" "$cand_ratio" report
    record "  berth's ratio against its target of 0.95" "x" 0.95 "$cand_ratio" 'ratio>=1'
    record "webhooks: 201 to event at the receiver, p50, $BENCH_HOOKS_RATE pushes/s" ms \
        "$(samples_median p50 ref)" "$(samples_median p50 cand)" report
    record "webhooks: 201 to event at the receiver, p99" ms \
        "$(samples_median p99 ref)" "$(samples_median p99 cand)" 'max=100'
    record "webhooks: events a second to one endpoint, $BENCH_HOOKS_BACKLOG waiting, Distribution's format" events/s \
        "$(samples_median throughput ref)" "$(samples_median throughput cand)" report
    record "  the same, berth in Docker Hub's format (one event a request)" events/s \
        "$(samples_median throughput ref)" "$(samples_median throughput-single cand)" report
    record "  berth's rate, one event a request, against its target of 2000 events/s" events/s 2000 \
        "$(samples_median throughput-single cand)" 'ratio>=1'
}

# shellcheck shell=bash
# Starting and stopping the two registries under test. Sourced by bench/run.sh.
#
# A benchmark always runs a pair: side "ref" is CNCF Distribution (the reference),
# side "cand" is the candidate, berth by default (BENCH_CANDIDATE=distribution runs a
# second Distribution instead, to check the suite itself). Per side the pair keeps
# REG_PID, REG_URL and REG_DIR; every started PID is also kept in STARTED_PIDS so the
# exit trap can stop it.

SIDES=(ref cand)
declare -A REG_PID=() REG_URL=() REG_DIR=()
STARTED_PIDS=()
PAIR_COUNT=0

# side_label SIDE : the name printed in the result table.
side_label() {
    case $1:$BENCH_CANDIDATE in
        ref:*) printf 'reference\n' ;;
        cand:berth) printf 'berth\n' ;;
        cand:*) printf 'candidate (%s)\n' "$BENCH_CANDIDATE" ;;
    esac
}

# side_kind SIDE : which server a side runs.
side_kind() {
    if [[ $1 == ref ]]; then printf 'distribution\n'; else printf '%s\n' "$BENCH_CANDIDATE"; fi
}

check_candidate() {
    case $BENCH_CANDIDATE in
        berth) [[ -x $BERTH_BIN ]] || die "berth binary not found at $BERTH_BIN (build it, set BERTH_BIN, or BENCH_CANDIDATE=distribution)" ;;
        distribution) ;;
        *) die "BENCH_CANDIDATE must be berth or distribution, not '$BENCH_CANDIDATE'" ;;
    esac
    [[ -x $REFERENCE_BIN ]] || die "reference registry not found at $REFERENCE_BIN"
}

# write_distribution_config DIR PORT : Distribution config with delete on and no access log.
write_distribution_config() {
    local dir=$1 port=$2
    cat >"$dir/config.yml" <<YAML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
YAML
}

# launch KIND DIR PORT : starts one server in the background; $! is the server itself.
launch() {
    local kind=$1 dir=$2 port=$3
    case $kind in
        distribution)
            write_distribution_config "$dir" "$port"
            "$REFERENCE_BIN" serve "$dir/config.yml" >"$dir/server.log" 2>&1 &
            ;;
        berth)
            RUST_LOG=$BENCH_RUST_LOG "$BERTH_BIN" serve --plain-http --data-dir "$dir/data" \
                --listen "127.0.0.1:$port" >"$dir/server.log" 2>&1 &
            ;;
        berth-nometrics)
            RUST_LOG=$BENCH_RUST_LOG "$BERTH_BIN" serve --plain-http --data-dir "$dir/data" \
                --listen "127.0.0.1:$port" --metrics false >"$dir/server.log" 2>&1 &
            ;;
        distribution-metrics)
            # Distribution with its Prometheus endpoint on the debug address.
            write_distribution_config "$dir" "$port"
            pick_port >"$dir/debug.port"
            printf '  debug:\n    addr: 127.0.0.1:%s\n    prometheus:\n      enabled: true\n      path: /metrics\n' \
                "$(cat "$dir/debug.port")" >>"$dir/config.yml"
            "$REFERENCE_BIN" serve "$dir/config.yml" >"$dir/server.log" 2>&1 &
            ;;
        berth-scrub)
            RUST_LOG=$BENCH_RUST_LOG "$BERTH_BIN" serve --plain-http --data-dir "$dir/data" \
                --listen "127.0.0.1:$port" --scrub-interval 1 --scrub-bandwidth 0 >"$dir/server.log" 2>&1 &
            ;;
        berth-auth)
            RUST_LOG=$BENCH_RUST_LOG "$BERTH_BIN" serve --plain-http --data-dir "$dir/data" \
                --listen "127.0.0.1:$port" --htpasswd "$(secure_file htpasswd)" >"$dir/server.log" 2>&1 &
            ;;
        berth-tls)
            RUST_LOG=$BENCH_RUST_LOG "$BERTH_BIN" serve --data-dir "$dir/data" \
                --listen "127.0.0.1:$port" --tls-cert "$(secure_file cert.pem)" \
                --tls-key "$(secure_file key.pem)" >"$dir/server.log" 2>&1 &
            ;;
    esac
}

# scheme_of KIND : how a server of that kind is reached.
scheme_of() {
    if [[ $1 == berth-tls ]]; then printf 'https\n'; else printf 'http\n'; fi
}

# registry_up SIDE : true once GET /v2/ answers 200.
registry_up() {
    local code
    code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "${CURL_EXTRA[@]}" "${REG_URL[$1]}/v2/") || return 1
    [[ $code == 200 ]]
}

# await_side SIDE : polls for up to 30 s; fails at once if the server has exited.
await_side() {
    local side=$1 tries
    for ((tries = 0; tries < 300; tries++)); do
        pid_gone "${REG_PID[$side]}" && return 1
        registry_up "$side" && return 0
        sleep 0.1
    done
    return 1
}

# start_side SIDE [KIND] : fresh data dir, free port, server up and answering. A server
# that exits at startup (say, another process took the port first) is retried on a new
# port. KIND (distribution or berth) defaults to the side's own.
start_side() {
    local side=$1 kind dir attempt port
    kind=${2:-$(side_kind "$side")}
    dir="$WORK_DIR/registry-$PAIR_COUNT-$side"
    for attempt in 1 2 3; do
        rm -rf "$dir"
        mkdir -p "$dir/data"
        port=$(pick_port)
        launch "$kind" "$dir" "$port"
        REG_PID[$side]=$!
        STARTED_PIDS+=("${REG_PID[$side]}")
        REG_URL[$side]="$(scheme_of "$kind")://127.0.0.1:$port"
        REG_DIR[$side]=$dir
        await_side "$side" && return 0
        log "$(side_label "$side") failed to start on port $port (attempt $attempt):"
        tail -n 5 "$dir/server.log" >&2 || true
        stop_pid "${REG_PID[$side]}"
    done
    die "$(side_label "$side") did not come up"
}

# pair_start : both registries, each on empty storage. Dirty pages a previous
# measurement left (gigabytes after the upload runs) are written back first,
# so no measurement pays for another's writeback.
pair_start() {
    local side
    PAIR_COUNT=$((PAIR_COUNT + 1))
    sync
    for side in "${SIDES[@]}"; do
        start_side "$side"
    done
    log "registries up: reference ${REG_URL[ref]} (pid ${REG_PID[ref]}), $(side_label cand) ${REG_URL[cand]} (pid ${REG_PID[cand]})"
}

# pair_stop : stops both and frees their storage.
pair_stop() {
    local side
    for side in "${SIDES[@]}"; do
        stop_side "$side"
    done
}

# stop_side SIDE : stops one server, if running, and frees its storage.
stop_side() {
    local side=$1
    [[ -n ${REG_PID[$side]:-} ]] || return 0
    stop_pid "${REG_PID[$side]}"
    rm -rf "${REG_DIR[$side]}"
    unset 'REG_PID[$side]'
}

# peak_rss_mib SIDE : VmHWM of the running server, in MiB.
peak_rss_mib() {
    vm_hwm_mib "${REG_PID[$1]}"
}

# sides_in_turn RUN : both sides, the order alternating with RUN to spread drift evenly.
sides_in_turn() {
    if (($1 % 2)); then printf '%s\n' ref cand; else printf '%s\n' cand ref; fi
}

# stop_everything : exit trap; stops every server this run started.
stop_everything() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do
        stop_pid "$pid"
    done
}

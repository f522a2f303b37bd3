#!/usr/bin/env bash
# End-to-end tests of a three-node berth cluster behind a round-robin load balancer
# (haproxy): real clients push through the balancer and every node must serve the same
# bytes; every node is stopped gracefully and restarted in turn while clients pull and
# push; bad copies on one node's disk are found by a read and by a scrub pass, and
# replaced; a node is killed while pushes are in flight, then replaced by an empty one.
#
# Usage: tests/e2e/cluster.sh [SCENARIO...]   (default: all, in order; see SCENARIOS below.
#        cluster-node-replace works on what cluster-node-loss left behind.)
# Environment: see lib.sh, and
#   E2E_CLUSTER_PUSHES   concurrent pushes in cluster-node-loss (default 20)
#   E2E_JOIN_TIMEOUT     seconds a new node may take to become a voter (default 120)
#   E2E_REPAIR_TIMEOUT   seconds blob repair may take after the join (default 180)
#   E2E_CLUSTER_BIG_LAYER  bytes of one more image's single layer that cluster-lb-push-pull
#                        pushes and pulls, e.g. 1073741824 (default 0: none)
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$E2E_DIR/lib.sh"
# shellcheck source=tests/e2e/cluster-lib.sh
source "$E2E_DIR/cluster-lib.sh"

SCENARIOS=(cluster-lb-push-pull cluster-rolling-restart cluster-scrub cluster-node-loss cluster-node-replace)

E2E_CLUSTER_PUSHES=${E2E_CLUSTER_PUSHES:-20}
E2E_JOIN_TIMEOUT=${E2E_JOIN_TIMEOUT:-120}
E2E_REPAIR_TIMEOUT=${E2E_REPAIR_TIMEOUT:-180}
E2E_CLUSTER_BIG_LAYER=${E2E_CLUSTER_BIG_LAYER:-0}

LB_PID=
LB_HOST=
LB_STATS_PORT=
LOSS_REPO=e2e/cluster-loss
REPAIR_PEAK_RATE=0 # highest copy_rate a node reported while repair_done polled

# ---------------------------------------------------------------- nodes

# node_killed N: node N, killed by a scenario, has exited (a zombie until reaped here).
node_killed() {
    local pid=${NODE_PID[$1]:-} state
    [[ -n $pid ]] || return 1
    state=$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null) || return 0
    [[ $state == Z ]]
}

# cluster_reload_pids: the PIDs of nodes a scenario restarted (scenarios run in
# subshells; node_launch leaves each node's PID in a file).
cluster_reload_pids() {
    local n pid
    for n in "${!NODE_DATA[@]}"; do
        [[ -s ${NODE_DATA[n]}.pid ]] || continue
        pid=$(<"${NODE_DATA[n]}.pid")
        if [[ $pid != "${NODE_PID[n]:-}" ]] && pid_alive "$pid"; then
            NODE_PID[n]=$pid
        fi
    done
}

# cluster_reap: reaps the node cluster-node-loss killed (it is this shell's child).
cluster_reap() {
    local n
    [[ -s $CLUSTER_DIR/dead ]] || return 0
    n=$(<"$CLUSTER_DIR/dead")
    if node_killed "$n"; then
        wait "${NODE_PID[n]}" 2>/dev/null || true
        NODE_PID[n]=
    fi
}

# ---------------------------------------------------------------- the load balancer

lb_config() {
    local n
    cat <<EOF
global
    maxconn 1024

defaults
    mode http
    option http-server-close
    option redispatch 1
    retries 3
    timeout connect 5s
    timeout client 30m
    timeout server 30m
    timeout http-request 60s
    timeout http-keep-alive 30s
    timeout queue 60s
    timeout check 2s

frontend registry
    bind $LB_HOST
    default_backend nodes

backend nodes
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
EOF
    # Checks every 300 ms, two failures mark a node down: well inside the 2 s a
    # stopping node serves on with /readyz failing (--shutdown-delay).
    for n in 1 2 3; do
        printf '    server n%s %s check inter 300ms fall 2 rise 2\n' "$n" "$(node_host "$n")"
    done
    cat <<EOF

listen stats
    bind 127.0.0.1:$LB_STATS_PORT
    stats enable
    stats uri /stats
EOF
}

lb_answers_or_exited() {
    pid_gone "$LB_PID" ||
        [[ $(http_status GET "http://$LB_HOST/v2/" --max-time 2 2>/dev/null) == 200 ]]
}

# lb_start: haproxy in front of nodes 1-3, round robin per request.
lb_start() {
    local config=$CLUSTER_DIR/haproxy.cfg
    new_port || return 1
    LB_HOST=127.0.0.1:$NEW_PORT
    new_port || return 1
    LB_STATS_PORT=$NEW_PORT
    lb_config >"$config"
    haproxy -c -q -f "$config" || return 1
    haproxy -f "$config" -db >>"$CLUSTER_DIR/haproxy.log" 2>&1 &
    LB_PID=$!
    if wait_until 30 "haproxy to answer /v2/" lb_answers_or_exited && sleep 0.5 &&
        pid_alive "$LB_PID"; then
        return 0
    fi
    tail -n 10 "$CLUSTER_DIR/haproxy.log" >&2
    return 1
}

lb_stop() {
    [[ -n $LB_PID ]] || return 0
    stop_pid "$LB_PID"
    LB_PID=
}

# lb_servers: one line per node, `NAME SESSIONS STATUS`, from haproxy's statistics.
lb_servers() {
    curl -fsS --max-time 5 "http://127.0.0.1:$LB_STATS_PORT/stats;csv" |
        awk -F, '$1 == "nodes" && $2 ~ /^n[0-9]+$/ { print $2, $8, $18 }'
}

lb_server_down() {
    [[ $(lb_servers | awk -v name="n$1" '$1 == name { print $3 }') == DOWN* ]]
}

# ---------------------------------------------------------------- pulling and checking

# ---------------------------------------------------------------- cluster-lb-push-pull

lb_push_docker() {
    local repo=e2e/cluster-docker tag=t$E2E_SEED local_ref remote_ref pushed
    local_ref=berth-e2e/cluster-docker:$tag
    remote_ref=$LB_HOST/$repo:$tag
    docker version >/dev/null || die "docker daemon not reachable"
    defer docker_remove "$local_ref" "$remote_ref"
    make_rootfs rootfs
    tar -C rootfs -c . | bounded docker import - "$local_ref"
    docker tag "$local_ref" "$remote_ref"
    pushed=$(docker_push "$remote_ref")
    assert_digest "docker push digest" "$pushed"
    defer docker_remove "$LB_HOST/$repo@$pushed"
    printf '%s %s %s\n' "$repo" "$tag" "$pushed" >>images
}

lb_push_skopeo() {
    local repo=e2e/cluster-skopeo
    make_image src v1 amd64 4 1048576
    skopeo_push oci:src:v1 "$repo:v1"
    printf '%s v1 %s\n' "$repo" "$(layout_digest src v1)" >>images
}

lb_push_podman() {
    local repo=e2e/cluster-podman ref image_id pushed
    ref=$LB_HOST/$repo:v1
    PODMAN_RUNROOT=$(mktemp -d /tmp/berth-podman.XXXXXX)
    defer rm -rf "$PODMAN_RUNROOT"
    make_image psrc v1 amd64 3
    oci_archive psrc psrc.oci.tar
    image_id=$(image_config_digest psrc v1)
    podman_cmd load -i psrc.oci.tar
    podman_cmd tag "${image_id#sha256:}" "$ref"
    podman_cmd push --tls-verify=false --digestfile pushed.digest "$ref"
    pushed=$(cat pushed.digest)
    assert_digest "podman push digest" "$pushed"
    printf '%s v1 %s\n' "$repo" "$pushed" >>images
}

# lb_push_big: an image with one E2E_CLUSTER_BIG_LAYER-byte layer, when asked for.
lb_push_big() {
    local repo=e2e/cluster-big size=$E2E_CLUSTER_BIG_LAYER start
    ((size > 0)) || return 0
    make_image big v1 amd64 1 "$size"
    start=$SECONDS
    skopeo_push oci:big:v1 "$repo:v1"
    scenario_note "skopeo push of one $size-byte layer through haproxy: $((SECONDS - start))s"
    printf '%s v1 %s\n' "$repo" "$(layout_digest big v1)" >>images
}

scenario_cluster_lb_push_pull() {
    local start spread
    start=$SECONDS
    lb_push_docker
    lb_push_skopeo
    lb_push_podman
    scenario_note "pushes through haproxy (docker, skopeo, podman): $((SECONDS - start))s"
    lb_push_big

    start=$SECONDS
    pull_check_all images 1 2 3
    scenario_note "pulls of $(wc -l <images) images from each of 3 nodes verified: $((SECONDS - start))s"

    spread=$(lb_servers | awk '{ printf "%s%s=%s", sep, $1, $2; sep = " " }')
    scenario_note "haproxy sessions per node: $spread"
    if lb_servers | awk '$2 == 0 { found = 1 } END { exit !found }'; then
        die "haproxy sent no request to some node: $spread"
    fi
}

# ---------------------------------------------------------------- cluster-rolling-restart

ROLL_REPO=e2e/cluster-roll

now() {
    date +%s.%N
}

# roll_puller ID: pulls every image of `images` through haproxy with skopeo, over and
# over, until roll/stop exists. One line per pull in roll/pulls-ID: `START END STATUS`;
# a failed pull's log is kept as roll/failed-ID-START.log.
roll_puller() {
    local id=$1 repo tag digest start status dir
    dir=roll/pull$id
    while [[ ! -e roll/stop ]]; do
        while read -r repo tag digest && [[ ! -e roll/stop ]]; do
            start=$(now)
            status=0
            rm -rf "$dir"
            if skopeo_pull "$repo:$tag" "dir:$dir" >"$dir.log" 2>&1 </dev/null; then
                [[ sha256:$(sha256_hex <"$dir/manifest.json") == "$digest" ]] || status=90
            else
                status=$?
            fi
            ((status == 0)) || cp "$dir.log" "roll/failed-$id-$start.log"
            printf '%s %s %s\n' "$start" "$(now)" "$status" >>"roll/pulls-$id"
        done <images
    done
}

# roll_pusher: pushes a small image under a new tag through haproxy with skopeo, over and
# over, until roll/stop exists; acknowledged pushes go to roll/pushed, failures to
# roll/push-failures.
roll_pusher() {
    local i=0 status
    make_image rollsrc v1 amd64 1 65536 >/dev/null
    while [[ ! -e roll/stop ]]; do
        i=$((i + 1))
        status=0
        skopeo_push oci:rollsrc:v1 "$ROLL_REPO:p$i" >roll/push.log 2>&1 || status=$?
        if ((status == 0)); then
            printf '%s p%s %s\n' "$ROLL_REPO" "$i" "$(layout_digest rollsrc v1)" >>roll/pushed
        else
            cp roll/push.log "roll/push-failed-$i.log"
            printf '%s\n' "$i" >>roll/push-failures
        fi
    done
}

# roll_writer: writes one manifest after another through haproxy (each a new digest, so
# each is a replicated write), until roll/stop-writes exists. One line per write in
# roll/writes: `END STATUS`.
roll_writer() {
    local i=0 manifest status
    manifest=$(curl -fsS --max-time 30 -H "Accept: $MANIFEST_ACCEPT" \
        "http://$REGISTRY_HOST/v2/$ROLL_REPO/manifests/base")
    while [[ ! -e roll/stop-writes ]]; do
        i=$((i + 1))
        status=$(jq -c --arg n "$i" '.annotations = {"e2e.write": $n}' <<<"$manifest" |
            curl -sS --max-time 30 -o /dev/null -w '%{http_code}' -X PUT \
                -H "Content-Type: $MANIFEST_ACCEPT" --data-binary @- \
                "http://$REGISTRY_HOST/v2/$ROLL_REPO/manifests/probe") || status=000
        printf '%s %s\n' "$(now)" "$status" >>roll/writes
    done
}

node_ready() {
    [[ $(http_status GET "http://$(node_host "$1")/readyz" --max-time 3 2>/dev/null) == 200 ]]
}

lb_server_up() {
    [[ $(lb_servers | awk -v name="n$1" '$1 == name { print $3 }') == UP* ]]
}

# node_term N: stops node N with SIGTERM and waits (bounded) until it has exited. It may
# be another shell's child, a zombie until that shell reaps it.
node_term() {
    local n=$1
    kill -s TERM "${NODE_PID[n]}"
    wait_until 40 "node $n to stop after SIGTERM" node_killed "$n" ||
        die "node $n did not stop within 40 s of SIGTERM"
    wait "${NODE_PID[n]}" 2>/dev/null || true
}

# roll_restart N PEERS: stops node N with SIGTERM, waits (bounded) for it to exit by
# itself, starts it again and waits until haproxy sends it requests. Appends
# `N STOPPED_AT READY_AT LED EXIT_SECONDS` to roll/windows.
roll_restart() {
    local n=$1 peers=$2 stopped ready led=0 exit_start stops
    local log=${NODE_DATA[$1]}.log
    [[ $(node_leader "$n") == "$(node_host "$n")" ]] && led=1
    # The node may be another shell's child: its clean exit is read from its log.
    stops=$(grep -c "node stopped" "$log" || true)
    stopped=$(now)
    exit_start=$SECONDS
    node_term "$n"
    (($(grep -c "node stopped" "$log" || true) > stops)) ||
        die "node $n did not stop cleanly: $(tail -n 3 "$log")"
    NODE_PID[n]=
    node_launch "$n" "$peers"
    wait_until 60 "node $n to be ready again" node_ready "$n" || die "node $n not ready after restart"
    wait_until 30 "haproxy to send node $n requests" lb_server_up "$n" ||
        die "haproxy did not mark node $n up"
    ready=$(now)
    printf '%s %s %s %s %s\n' "$n" "$stopped" "$ready" "$led" "$((SECONDS - exit_start))" >>roll/windows
}

# roll_unavailable FROM TO: the longest time, in seconds, between two consecutive
# acknowledged writes (roll/writes) that reaches into [FROM, TO].
roll_unavailable() {
    awk -v from="$1" -v to="$2" '
        $2 != 201 { next }
        prev != "" && $1 >= from && prev <= to && $1 - prev > gap { gap = $1 - prev }
        { prev = $1 }
        END { printf "%.2f\n", gap }' roll/writes
}

# roll_kill_leader PEERS: kills the leader with SIGKILL, waits until the others have
# elected another, and starts it again (a leader restarted at once simply leads again);
# its line in roll/windows says 2 in the LED column.
roll_kill_leader() {
    local peers=$1 n other stopped
    for n in 1 2 3; do
        [[ $(node_leader "$n") == "$(node_host "$n")" ]] && break
    done
    [[ $(node_leader "$n") == "$(node_host "$n")" ]] || die "no leader to kill"
    stopped=$(now)
    kill -s KILL "${NODE_PID[n]}"
    wait_until 10 "node $n to die" node_killed "$n" || die "node $n survived SIGKILL"
    wait "${NODE_PID[n]}" 2>/dev/null || true
    other=$((n % 3 + 1))
    wait_until 30 "another leader" other_leader "$other" "$(node_host "$n")" ||
        die "no new leader within 30 s of the leader's kill"
    # Two more seconds of writes under the new leader close the window.
    sleep 2
    printf '%s %s %s 2 0\n' "$n" "$stopped" "$(now)" >>roll/windows
    node_launch "$n" "$peers"
    wait_until 60 "node $n to be ready again" node_ready "$n" || die "node $n not ready after restart"
    wait_until 30 "haproxy to send node $n requests" lb_server_up "$n" ||
        die "haproxy did not mark node $n up"
}

# other_leader N OLD: node N names a leader other than OLD (an API address).
other_leader() {
    local leader
    leader=$(node_leader "$1" 2>/dev/null) || return 1
    [[ -n $leader && $leader != "$2" ]]
}

scenario_cluster_rolling_restart() {
    local n order=() leader peers pids=() file stopped ready led took failed pulls during
    mkdir -p roll
    peers=$(cluster_peers 1 2 3)
    make_image base v1 amd64 1 65536
    skopeo_push oci:base:v1 "$ROLL_REPO:base"
    printf '%s base %s\n' "$ROLL_REPO" "$(layout_digest base v1)" >images
    [[ ! -s $E2E_WORK/cluster-lb-push-pull/images ]] ||
        cat "$E2E_WORK/cluster-lb-push-pull/images" >>images
    # Followers first, the leader last: a leader is stopped at least once.
    leader=$(node_leader 1)
    for n in 1 2 3; do
        [[ $(node_host "$n") == "$leader" ]] || order+=("$n")
    done
    for n in 1 2 3; do
        [[ $(node_host "$n") != "$leader" ]] || order+=("$n")
    done

    defer touch "$SCENARIO_DIR/roll/stop" "$SCENARIO_DIR/roll/stop-writes"
    roll_puller 1 &
    pids+=("$!")
    roll_puller 2 &
    pids+=("$!")
    roll_pusher &
    pids+=("$!")
    roll_writer &
    pids+=("$!")
    sleep 2
    for n in "${order[@]}"; do
        roll_restart "$n" "$peers"
        sleep 2
    done
    touch roll/stop
    for n in "${pids[@]::3}"; do
        wait "$n" || true
    done
    # For comparison, the old way: the leader killed, its successor elected after the
    # election timeout. Clients stopped first: a killed node fails what it was serving.
    roll_kill_leader "$peers"
    touch roll/stop-writes
    wait "${pids[3]}" || true

    cat roll/pulls-* >roll/pulls
    pulls=$(wc -l <roll/pulls)
    failed=$(awk '$3 != 0' roll/pulls | wc -l)
    while read -r n stopped ready led took; do
        if ((led == 2)); then
            scenario_note "node $n (the leader) killed with SIGKILL, for comparison: longest \
wait for a write: $(roll_unavailable "$stopped" "$ready")s"
            continue
        fi
        during=$(awk -v from="$stopped" -v to="$ready" '$1 < to && $2 > from' roll/pulls | wc -l)
        scenario_note "node $n$( ((led == 0)) || echo ' (the leader)') exited ${took}s after \
SIGTERM; $during pulls overlapped its restart; longest wait for a write: \
$(roll_unavailable "$stopped" "$ready")s"
        if ((led)); then
            grep -q "handed leadership over before stopping" "${NODE_DATA[n]}.log" ||
                die "node $n led but its log does not say it handed leadership over: \
$(grep -E "handover|hand leadership" "${NODE_DATA[n]}.log" | tail -n 2)"
        fi
        ((during > 0)) || die "no pull ran while node $n restarted"
    done <roll/windows
    scenario_note "$pulls pulls, $failed failed; manifest writes: \
$(awk '$2 == 201' roll/writes | wc -l) acknowledged, $(awk '$2 != 201' roll/writes | wc -l) \
refused; skopeo pushes: $(cat roll/pushed 2>/dev/null | wc -l) acknowledged, \
$(cat roll/push-failures 2>/dev/null | wc -l) failed"
    if ((failed > 0)); then
        for file in roll/failed-*.log; do
            scenario_note "failed pull: $(grep -v '^ *$' "$file" | tail -n 1)"
        done
        die "$failed of $pulls pulls failed during the rolling restart"
    fi
    # The last acknowledged pushes pull whole from every node.
    [[ -s roll/pushed ]] || die "no push was acknowledged during the rolling restart"
    tail -n 3 roll/pushed >roll/check
    pull_check_all roll/check 1 2 3
}

# ---------------------------------------------------------------- cluster-scrub

SCRUB_REPO=e2e/cluster-scrub

# flip_byte FILE OFFSET: inverts one bit of FILE in place, as a failing disk would.
flip_byte() {
    python3 - "$1" "$2" <<'PY'
import sys
path, offset = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:
    f.seek(offset)
    byte = f.read(1)[0]
    f.seek(offset)
    f.write(bytes([byte ^ 0x01]))
PY
}

# node_scrub N FIELD: a figure of node N's scrub report (0 when it has none).
node_scrub() {
    node_status "$1" | jq -r --arg f "$2" '.scrub[$f] // 0'
}

scrub_at_least() {
    (($(node_scrub "$1" "$2") >= $3))
}

# blob_file N DIGEST: where node N keeps its copy of DIGEST.
blob_file() {
    local hex=${2#sha256:}
    printf '%s/blobs/sha256/%s/%s\n' "${NODE_DATA[$1]}" "${hex:0:2}" "$hex"
}

# scrub_get N DIGEST OUT: one GET of the blob from node N. Prints `ok`, `failed`, or
# `WRONG` for a complete answer whose bytes do not match the digest.
scrub_get() {
    local n=$1 digest=$2 out=$3
    if curl -fsS --max-time 30 -o "$out" \
        "http://$(node_host "$n")/v2/$SCRUB_REPO/blobs/$digest" 2>/dev/null; then
        if [[ sha256:$(sha256_hex <"$out") == "$digest" ]]; then echo ok; else echo WRONG; fi
    else
        echo failed
    fi
}

# A whole copy restored: indexed again, its file back and right.
copy_restored() {
    local file
    file=$(blob_file "$1" "$2")
    [[ -f $file && sha256:$(sha256_hex <"$file") == "$2" ]]
}

scenario_cluster_scrub() {
    local n=1 peers layers by_scrub by_read results=() result i
    peers=$(cluster_peers 1 2 3)
    make_image src v1 amd64 2 1048576
    skopeo_push oci:src:v1 "$SCRUB_REPO:v1"
    mapfile -t layers < <(layout_blob src "$(layout_digest src v1)" | jq -r '.layers[].digest')
    by_scrub=${layers[0]}
    by_read=${layers[1]}
    wait_until 60 "node $n to hold both layers" copy_restored "$n" "$by_scrub" ||
        die "node $n holds no copy of $by_scrub"
    wait_until 60 "node $n to hold both layers" copy_restored "$n" "$by_read" ||
        die "node $n holds no copy of $by_read"
    node_term "$n"
    node_launch "$n" "$peers" --scrub-interval 1
    wait_until 60 "node $n to be ready" node_ready "$n" || die "node $n not ready with scrubbing on"

    # A client's read finds a bad copy: it is never answered whole, and a good one returns.
    flip_byte "$(blob_file "$n" "$by_read")" 1000
    for i in 1 2 3; do
        results+=("$(scrub_get "$n" "$by_read" "get-$i")")
    done
    scenario_note "GETs of a corrupted copy from node $n: ${results[*]}"
    wait_until 60 "node $n to restore $by_read" copy_restored "$n" "$by_read" ||
        die "node $n did not restore its copy of $by_read"

    # A pass finds a bad copy nobody reads: quarantined, restored.
    flip_byte "$(blob_file "$n" "$by_scrub")" 5000
    wait_until 60 "a scrub pass to quarantine $by_scrub" scrub_at_least "$n" corrupt 2 ||
        die "no scrub pass on node $n found the corrupted copy ($(node_status "$n" | jq -c .scrub))"
    wait_until 60 "node $n to restore $by_scrub" copy_restored "$n" "$by_scrub" ||
        die "node $n did not restore its copy of $by_scrub"
    wait_until 30 "the scrub report to count both restores" scrub_at_least "$n" restored 2 ||
        die "restores not counted: $(node_status "$n" | jq -c .scrub)"
    for i in 4 5 6; do
        results+=("$(scrub_get "$n" "$by_scrub" "get-$i")" "$(scrub_get "$n" "$by_read" "get-r$i")")
    done
    scenario_note "all GETs from node $n: ${results[*]}; scrub report: $(node_status "$n" | jq -c .scrub)"
    for result in "${results[@]}"; do
        [[ $result != WRONG ]] || die "a GET returned the corrupted bytes whole"
    done
    [[ ${results[-1]} == ok && ${results[-2]} == ok ]] || die "GETs after the restore failed"
    [[ -n $(ls "${NODE_DATA[n]}/quarantine") ]] || die "nothing kept in node $n's quarantine/"

    node_term "$n"
    node_launch "$n" "$peers"
    wait_until 60 "node $n to be ready" node_ready "$n" || die "node $n not ready again"
}

# ---------------------------------------------------------------- cluster-node-loss

loss_tag() {
    printf 't%02d\n' "$1"
}

# loss_push TAG: one background push; its exit status goes to pushes/TAG.status.
loss_push() {
    local tag=$1 status=0
    skopeo_push "oci:src:$tag" "$LOSS_REPO:$tag" >"pushes/$tag.log" 2>&1 || status=$?
    printf '%s\n' "$status" >"pushes/$tag.status.tmp"
    mv "pushes/$tag.status.tmp" "pushes/$tag.status"
}

pushes_done() {
    local files=(pushes/*.status)
    [[ -e ${files[0]} ]] || files=()
    printf '%s\n' "${#files[@]}"
}

pushes_at_least() {
    (($(pushes_done) >= $1))
}

# non_leader N...: the first node N that is not the leader.
non_leader() {
    local leader n
    leader=$(node_leader "$1")
    [[ -n $leader ]] || die "node $1 knows no leader"
    for n in "$@"; do
        if [[ $(node_host "$n") != "$leader" ]]; then
            printf '%s\n' "$n"
            return 0
        fi
    done
    die "no node other than the leader ($leader)"
}

# failed_push_check TAG N...: a push that failed left either nothing under TAG or the
# very manifest it was pushing, on every node N.
failed_push_check() {
    local tag=$1 n status
    shift
    for n in "$@"; do
        status=$(REGISTRY_HOST=$(node_host "$n") manifest_status "$LOSS_REPO" "$tag")
        case $status in
        404) ;;
        200)
            assert_eq "node $n: digest of the failed push $tag" "$(layout_digest src "$tag")" \
                "$(REGISTRY_HOST=$(node_host "$n") manifest_digest "$LOSS_REPO" "$tag")"
            ;;
        *) die "node $n: manifest $tag after a failed push: status $status" ;;
        esac
    done
}

scenario_cluster_node_loss() {
    local count=$E2E_CLUSTER_PUSHES i tag pids=() victim in_flight survivors=() start failed=()
    local killed_at
    mkdir -p pushes
    # Layers large enough that the pushes are still running when the node dies,
    # however fast the machine.
    for ((i = 1; i < count; i++)); do
        make_image src "$(loss_tag "$i")" amd64 1 8388608
    done
    # One much larger push is surely still running when the node dies.
    make_image src "$(loss_tag "$count")" amd64 1 67108864
    make_image src after amd64 1 524288

    start=$SECONDS
    for ((i = 1; i <= count; i++)); do
        loss_push "$(loss_tag "$i")" &
        pids+=("$!")
    done
    wait_until 120 "a push to finish" pushes_at_least 1 || die "no push finished"
    victim=$(non_leader 1 2 3)
    in_flight=$((count - $(pushes_done)))
    kill -s KILL "${NODE_PID[victim]}"
    killed_at=$SECONDS
    printf '%s\n' "$victim" >"$CLUSTER_DIR/dead"
    for i in 1 2 3; do
        [[ $i == "$victim" ]] || survivors+=("$i")
    done
    scenario_note "killed node $victim ($(node_host "$victim"), not the leader) with $in_flight of $count pushes unfinished"
    if ((in_flight == 0)); then
        for i in pushes/*.log; do
            scenario_note "$(basename "$i" .log): status $(<"${i%.log}.status"), $(grep -v '^ *$' "$i" | tail -n 1)"
        done
        die "every push had finished before the kill"
    fi

    for i in "${pids[@]}"; do
        wait "$i" || true
    done
    scenario_note "all $count pushes ended $((SECONDS - start))s after they started"
    wait_until 30 "haproxy to mark node $victim down" lb_server_down "$victim" ||
        die "haproxy kept node $victim up"
    scenario_note "haproxy marked node $victim down within $((SECONDS - killed_at))s of the kill"

    : >pushed
    for ((i = 1; i <= count; i++)); do
        tag=$(loss_tag "$i")
        if [[ $(<"pushes/$tag.status") == 0 ]]; then
            printf '%s %s %s\n' "$LOSS_REPO" "$tag" "$(layout_digest src "$tag")" >>pushed
        else
            failed+=("$tag")
            scenario_note "push $tag failed: $(grep -v '^ *$' "pushes/$tag.log" | tail -n 1)"
        fi
    done
    scenario_note "${#failed[@]} of $count pushes failed"

    skopeo_push oci:src:after "$LOSS_REPO:after"
    printf '%s after %s\n' "$LOSS_REPO" "$(layout_digest src after)" >>pushed

    start=$SECONDS
    pull_check_all pushed "${survivors[@]}"
    for tag in "${failed[@]}"; do
        failed_push_check "$tag" "${survivors[@]}"
    done
    scenario_note "$(wc -l <pushed) images verified on nodes ${survivors[*]}: $((SECONDS - start))s"

    while read -r _ tag _; do
        layout_blob src "$(layout_digest src "$tag")" | jq -r '.config.digest, .layers[].digest'
    done <pushed >blobs
}

# ---------------------------------------------------------------- cluster-node-replace

# repair_reported N...: some node N has a `repair` key in its status (berth reports it).
repair_reported() {
    local n
    for n in "$@"; do
        node_status "$n" | jq -e 'has("repair")' >/dev/null && return 0
    done
    return 1
}

# repair_figures N...: `node N: {repair}` for each node.
repair_figures() {
    local n
    for n in "$@"; do
        printf 'node %s: %s; ' "$n" "$(node_status "$n" | jq -c .repair)"
    done
}

# repair_done NEW BLOBS N...: every node N reports no under-replicated blob and node NEW
# holds every digest in BLOBS. Keeps the highest copy_rate seen in REPAIR_PEAK_RATE.
repair_done() {
    local new=$1 blobs=$2 n status rate finished=1
    shift 2
    for n in "$@"; do
        status=$(node_status "$n") || return 1
        rate=$(jq -r '.repair.copy_rate // 0 | floor' <<<"$status")
        ((rate <= REPAIR_PEAK_RATE)) || REPAIR_PEAK_RATE=$rate
        jq -e '.repair.under_replicated == 0' <<<"$status" >/dev/null || finished=0
    done
    ((finished == 1)) && (($(data_dir_blobs "$new" "$blobs") == $(wc -l <"$blobs")))
}

scenario_cluster_node_replace() {
    local loss=$E2E_WORK/cluster-node-loss dead dead_id survivor new=4 live=() n start total
    [[ -s $CLUSTER_DIR/dead ]] || die "cluster-node-loss must run first: no node was killed"
    [[ -s $loss/pushed && -s $loss/blobs ]] || die "cluster-node-loss left no verified images"
    dead=$(<"$CLUSTER_DIR/dead")
    for n in 1 2 3; do
        [[ $n == "$dead" ]] || live+=("$n")
    done
    survivor=${live[0]}
    dead_id=$(<"${NODE_DATA[dead]}/node-id")

    bounded "$BERTH_BIN" cluster remove "$dead_id" --node "http://$(node_host "$survivor")" \
        --cluster-secret-file "$CLUSTER_SECRET"
    wait_until 30 "the survivors to see 2 voters" cluster_agrees 2 "" -- "${live[@]}" ||
        die "node $dead still counted after its removal"

    node_ports "$new"
    start=$SECONDS
    node_launch "$new" "127.0.0.1:${NODE_PEER_PORT[survivor]}"
    defer node_stop "$new"
    live+=("$new")
    wait_until "$E2E_JOIN_TIMEOUT" "node $new to become the third voter" \
        cluster_agrees 3 "$(node_host "$new")" -- "${live[@]}" ||
        die "node $new did not become a voter within ${E2E_JOIN_TIMEOUT}s"
    scenario_note "new node $new ($(node_host "$new")) was a voter $((SECONDS - start))s after its start"

    total=$(wc -l <"$loss/blobs")
    if repair_reported "${live[@]}"; then
        scenario_note "repair right after the join: $(repair_figures "${live[@]}")"
        if ! wait_until "$E2E_REPAIR_TIMEOUT" "blob repair" repair_done "$new" "$loss/blobs" "${live[@]}"; then
            die "repair unfinished after ${E2E_REPAIR_TIMEOUT}s: node $new holds \
$(data_dir_blobs "$new" "$loss/blobs") of $total blobs; $(repair_figures "${live[@]}")"
        fi
        scenario_note "repair done $((SECONDS - start))s after the new node started: \
$(repair_figures "${live[@]}")"
        scenario_note "node $new's data directory holds all $total blobs before any pull; \
highest copy_rate seen: $REPAIR_PEAK_RATE B/s"
    else
        scenario_note "repair status not available yet (no \"repair\" in /_berth/cluster/status): \
repair and data-directory checks skipped; node $new holds $(data_dir_blobs "$new" "$loss/blobs") \
of $total blobs before any pull"
    fi

    start=$SECONDS
    pull_check_all "$loss/pushed" "$new"
    scenario_note "$(wc -l <"$loss/pushed") images verified on node $new: $((SECONDS - start))s"
}

# ---------------------------------------------------------------- main

run_cluster_scenarios() {
    local name start
    (($# > 0)) || set -- "${SCENARIOS[@]}"
    for name in "$@"; do
        start=$SECONDS
        run_scenarios "$name"
        show_notes "$name"
        note "$name took $((SECONDS - start))s"
        cluster_reload_pids
        cluster_reap
    done
}

main() {
    local n
    e2e_init
    if [[ $E2E_REGISTRY != berth ]]; then
        note "cluster tests need berth; skipped for $E2E_REGISTRY"
        summary cluster
        return
    fi
    if ! command -v haproxy >/dev/null; then
        fail cluster "haproxy is not installed (apt-get install -y haproxy)"
        summary cluster
        return 1
    fi
    if [[ ! -x $BERTH_BIN ]]; then
        fail cluster "berth binary not found: $BERTH_BIN"
        summary cluster
        return 1
    fi
    defer cluster_stop
    defer lb_stop
    if ! cluster_start || ! lb_start; then
        fail cluster "could not start three nodes and haproxy"
        summary cluster
        return 1
    fi
    REGISTRY_HOST=$LB_HOST
    for n in 1 2 3; do
        note "node $n at $(node_host "$n") (pid ${NODE_PID[n]}, peer port ${NODE_PEER_PORT[n]})"
    done
    note "haproxy at $LB_HOST (pid $LB_PID)"
    run_cluster_scenarios "$@"
    summary cluster
}

main "$@"

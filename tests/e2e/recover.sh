#!/usr/bin/env bash
# End-to-end test of `berth cluster recover`: three nodes, images pushed with skopeo, two
# nodes killed with SIGKILL and their data deleted (a lost majority), the survivor stopped,
# recovered offline into a one-node cluster, started again, and two empty nodes join it at
# the lost nodes' addresses. Every image must then pull byte for byte from all three, the
# status must show three voters and no under-replicated or unavailable blob, and a new
# push must work.
#
# Usage: tests/e2e/recover.sh [SCENARIO...]   (default: all, in order; each works on what
#        the one before left behind.)
# Environment: see lib.sh, and
#   E2E_JOIN_TIMEOUT     seconds the empty nodes may take to become voters (default 120)
#   E2E_REPAIR_TIMEOUT   seconds blob replication and repair may take (default 180)
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$E2E_DIR/lib.sh"
# shellcheck source=tests/e2e/cluster-lib.sh
source "$E2E_DIR/cluster-lib.sh"

SCENARIOS=(recover-push recover-majority-loss recover-offline recover-restart recover-rejoin)

E2E_JOIN_TIMEOUT=${E2E_JOIN_TIMEOUT:-120}
E2E_REPAIR_TIMEOUT=${E2E_REPAIR_TIMEOUT:-180}

REPOS=(e2e/recover-a e2e/recover-b e2e/recover-c)

# Scenarios run in subshells, so what must outlive one is kept in files under
# $CLUSTER_DIR: the survivor's number (survivor), the lost nodes' numbers and ids (lost),
# the images (images: `REPO TAG DIGEST`) and their blobs (blobs), and the pid of every
# node a scenario started (pid.N), which the main shell stops at exit.

# ---------------------------------------------------------------- nodes

# node_gone N: node N's process has exited (a zombie counts: the main shell reaps nodes
# it started only at exit).
node_gone() {
    local pid=${NODE_PID[$1]:-}
    [[ -n $pid ]] || return 0
    pid_exited "$pid"
}

# pid_exited PID: the process is gone or a zombie (one whose parent, a scenario's shell,
# has exited waits for whoever adopted it to reap it).
pid_exited() {
    local state
    state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 0
    [[ $state == Z ]]
}

# node_halt N SIGNAL: signals node N and waits (bounded) until it has exited.
node_halt() {
    local n=$1 signal=$2
    node_gone "$n" && return 0
    kill -s "$signal" "${NODE_PID[n]}"
    wait_until 30 "node $n to exit after SIG$signal" node_gone "$n" ||
        die "node $n still runs 30s after SIG$signal"
}

# node_start N PEERS [SERVE OPTIONS...]: starts node N from a scenario and records its pid
# for the main shell.
node_start() {
    local n=$1
    node_launch "$@"
    printf '%s\n' "${NODE_PID[n]}" >"$CLUSTER_DIR/pid.$n"
}

# node_pid_file N: sets NODE_PID[N] from the pid a scenario recorded, if it still runs.
node_pid_file() {
    local n=$1 pid
    [[ -s $CLUSTER_DIR/pid.$n ]] || return 0
    pid=$(<"$CLUSTER_DIR/pid.$n")
    NODE_PID[n]=$pid
    node_gone "$n" && NODE_PID[n]=
    return 0
}

# nodes_stop: stops every node, those scenarios started included (only our own pids: the
# recorded one must still be a berth process).
nodes_stop() {
    local file n pid
    for file in "$CLUSTER_DIR"/pid.*; do
        [[ -e $file ]] || continue
        n=${file##*.}
        pid=$(<"$file")
        if [[ -r /proc/$pid/cmdline && $(tr '\0' ' ' <"/proc/$pid/cmdline") == "$BERTH_BIN serve "* ]]; then
            kill -s TERM "$pid" 2>/dev/null || true
            wait_until 30 "pid $pid to exit" pid_exited "$pid" || kill -s KILL "$pid" 2>/dev/null || true
        fi
        [[ ${NODE_PID[n]:-} != "$pid" ]] || NODE_PID[n]=
    done
    # Nodes this shell started and a scenario stopped: reap them.
    for n in "${!NODE_PID[@]}"; do
        if [[ -n ${NODE_PID[n]} ]] && node_gone "$n"; then
            wait "${NODE_PID[n]}" 2>/dev/null || true
            NODE_PID[n]=
        fi
    done
    cluster_stop
}

node_id() {
    tr -d '[:space:]' <"${NODE_DATA[$1]}/node-id"
}

survivor() {
    [[ -s $CLUSTER_DIR/survivor ]] || die "no survivor recorded: run the scenarios in order"
    cat "$CLUSTER_DIR/survivor"
}

lost_nodes() {
    awk '{ print $1 }' "$CLUSTER_DIR/lost"
}

all_peers() {
    cluster_peers 1 2 3
}

# ---------------------------------------------------------------- images and blobs

# ---------------------------------------------------------------- recover

# recover N [--yes]: runs `berth cluster recover` on node N's data directory; its exit
# status goes to recover.status, its output to recover.out.
recover() {
    local n=$1 status=0
    shift
    bounded "$BERTH_BIN" cluster recover --data-dir "${NODE_DATA[n]}" "$@" >recover.out 2>&1 ||
        status=$?
    printf '%s\n' "$status" >recover.status
    sed 's/^/    | /' recover.out
}

recover_status() {
    cat recover.status
}

# expect_output TEXT: recover.out contains TEXT.
expect_output() {
    grep -qF -- "$1" recover.out || die "recover output lacks '$1'"
}

# raft_view N: what the dry run reports about node N's membership, for comparison.
raft_view() {
    recover "$1" >&2
    grep -E '^(  (voter|learner) |vote |last log entry|committed |applied )' recover.out
}

# ---------------------------------------------------------------- scenarios

scenario_recover_push() {
    local i n
    : >"$CLUSTER_DIR/images"
    : >"$CLUSTER_DIR/images.blobs"
    for i in 0 1 2; do
        n=$((i + 1))
        make_image "src$n" v1 amd64 $((i + 2)) 1048576
        push_image "$n" "src$n" v1 "${REPOS[i]}"
    done
    wait_until "$E2E_REPAIR_TIMEOUT" "every node to hold every blob" replicated 1 2 3 ||
        die "not fully replicated: $(replication_figures 1 2 3)"
    scenario_note "$(wc -l <"$CLUSTER_DIR/images") images, $(wc -l <"$CLUSTER_DIR/images.blobs") blobs on all 3 nodes"
}

scenario_recover_majority_loss() {
    local survivor leader n
    [[ -s $CLUSTER_DIR/images ]] || die "recover-push must run first"
    # A follower survives: it must take over a term it did not lead.
    leader=$(node_leader 1)
    [[ -n $leader ]] || die "node 1 knows no leader"
    for n in 1 2 3; do
        if [[ $(node_host "$n") != "$leader" ]]; then
            survivor=$n
            break
        fi
    done
    : >"$CLUSTER_DIR/lost"
    for n in 1 2 3; do
        [[ $n != "$survivor" ]] || continue
        printf '%s %s\n' "$n" "$(node_id "$n")" >>"$CLUSTER_DIR/lost"
        node_halt "$n" KILL
        rm -rf "${NODE_DATA[n]}"
    done
    printf '%s\n' "$survivor" >"$CLUSTER_DIR/survivor"
    scenario_note "killed nodes $(lost_nodes | xargs) with SIGKILL and deleted their data; node $survivor survives"

    # Without a quorum a push cannot complete.
    make_image nowhere v1 amd64 1
    if REGISTRY_HOST=$(node_host "$survivor") E2E_CLIENT_TIMEOUT=60 \
        skopeo_push oci:nowhere:v1 e2e/recover-nowhere:v1 >push.log 2>&1; then
        die "a push succeeded on node $survivor without a quorum"
    fi

    # The running node is refused.
    recover "$survivor" --yes
    [[ $(recover_status) != 0 ]] || die "recover --yes succeeded on a running node"
    expect_output "appears to be running"
    node_halt "$survivor" TERM
}

scenario_recover_offline() {
    local survivor before after id repo manifest layer size file
    survivor=$(survivor)
    node_gone "$survivor" || die "node $survivor still runs"

    # Without --yes: what it found and would do, a hint, a non-zero status, no change.
    recover "$survivor"
    [[ $(recover_status) != 0 ]] || die "recover without --yes exited 0"
    expect_output "--yes"
    expect_output "this node        $(node_id "$survivor")"
    while read -r _ id; do
        expect_output "voter    $id"
    done <"$CLUSTER_DIR/lost"
    expect_output "every blob a manifest references is held by this node."

    # A blob the survivor lacks is reported with what references it.
    read -r repo _ manifest < <(grep "^${REPOS[1]} " "$CLUSTER_DIR/images")
    layer=$(layout_blob "$E2E_WORK/recover-push/src2" "$manifest" | jq -r '.layers[0].digest')
    size=$(layout_blob "$E2E_WORK/recover-push/src2" "$manifest" | jq -r '.layers[0].size')
    file=${NODE_DATA[survivor]}/blobs/sha256/${layer:7:2}/${layer#sha256:}
    [[ -f $file ]] || die "no file for $layer on node $survivor"
    mv "$file" aside
    recover "$survivor"
    mv aside "$file"
    expect_output "1 blob(s), $size bytes, referenced by manifests but NOT held by this node"
    expect_output "  $layer ($size bytes) held by"
    expect_output "referenced by $repo@$manifest"

    before=$(raft_view "$survivor")
    after=$(raft_view "$survivor")
    assert_eq "what a second dry run finds" "$before" "$after"
    [[ $(grep -c '^  voter ' <<<"$after") == 3 ]] || die "the dry run changed the membership: $after"

    recover "$survivor" --yes
    assert_eq "recover --yes exit status" 0 "$(recover_status)"
    expect_output "is now a one-node cluster"

    # Done: a dry run finds it alone and has nothing to do.
    recover "$survivor"
    assert_eq "exit status of a dry run after recovery" 0 "$(recover_status)"
    expect_output "is already the only member"
    [[ $(grep -c '^  voter ' recover.out) == 1 ]] || die "more than one voter after recovery"
}

scenario_recover_restart() {
    local survivor start
    survivor=$(survivor)
    start=$SECONDS
    node_start "$survivor" "$(all_peers)" --bootstrap-expect 3
    wait_until "$E2E_STARTUP_TIMEOUT" "node $survivor to lead a one-node cluster" \
        cluster_agrees 1 "$(node_host "$survivor")" -- "$survivor" ||
        die "node $survivor is not a one-node cluster: $(node_status "$survivor" 2>&1)"
    scenario_note "node $survivor led a one-node cluster $((SECONDS - start))s after its start"
    pull_check_all "$CLUSTER_DIR/images" "$survivor"
    make_image src-alone v1 amd64 2
    push_image "$survivor" src-alone v1 e2e/recover-alone
    pull_check "$survivor" e2e/recover-alone v1 "$(layout_digest src-alone v1)"
}

scenario_recover_rejoin() {
    local survivor n live start status lost_ids id
    survivor=$(survivor)
    node_pid_file "$survivor"
    [[ -n ${NODE_PID[survivor]:-} ]] || die "node $survivor is not running"
    live=("$survivor")
    start=$SECONDS
    for n in $(lost_nodes); do
        [[ ! -e ${NODE_DATA[n]} ]] || die "node $n's data directory is still there"
        node_start "$n" "$(all_peers)" --bootstrap-expect 3
        live+=("$n")
    done
    wait_until "$E2E_JOIN_TIMEOUT" "two empty nodes to join as voters" \
        cluster_agrees 3 "" -- "${live[@]}" ||
        die "no three-voter cluster within ${E2E_JOIN_TIMEOUT}s: $(node_status "$survivor")"
    scenario_note "both empty nodes were voters $((SECONDS - start))s after their start"

    status=$(cli_status "$survivor")
    lost_ids=$(awk '{ print $2 }' "$CLUSTER_DIR/lost")
    for id in $lost_ids; do
        if jq -e --arg id "$id" 'any(.members[]; (.node_id | tostring) == $id)' <<<"$status" >/dev/null; then
            die "lost node $id is still a member"
        fi
    done
    assert_eq "voters in berth cluster status" 3 "$(jq '[.members[] | select(.voter)] | length' <<<"$status")"

    wait_until "$E2E_REPAIR_TIMEOUT" "repair to copy every blob to the new nodes" \
        replicated "${live[@]}" ||
        die "repair unfinished after ${E2E_REPAIR_TIMEOUT}s: $(replication_figures "${live[@]}")"
    scenario_note "repair done $((SECONDS - start))s after the empty nodes started: $(replication_figures "${live[@]}")"

    pull_check_all "$CLUSTER_DIR/images" "${live[@]}"
    make_image src-after v1 amd64 2
    push_image "${live[1]}" src-after v1 e2e/recover-after
    for n in "${live[@]}"; do
        pull_check "$n" e2e/recover-after v1 "$(layout_digest src-after v1)"
    done
    scenario_note "$(wc -l <"$CLUSTER_DIR/images") images verified on nodes ${live[*]}"
}

# ---------------------------------------------------------------- main

main() {
    local name start n
    e2e_init
    if [[ $E2E_REGISTRY != berth ]]; then
        note "recover tests need berth; skipped for $E2E_REGISTRY"
        summary recover
        return
    fi
    if [[ ! -x $BERTH_BIN ]]; then
        fail recover "berth binary not found: $BERTH_BIN"
        summary recover
        return 1
    fi
    defer nodes_stop
    if ! cluster_start; then
        fail recover "could not start three nodes"
        summary recover
        return 1
    fi
    for n in 1 2 3; do
        note "node $n at $(node_host "$n") (pid ${NODE_PID[n]}, peer port ${NODE_PEER_PORT[n]})"
    done
    (($# > 0)) || set -- "${SCENARIOS[@]}"
    for name in "$@"; do
        start=$SECONDS
        run_scenarios "$name"
        show_notes "$name"
        note "$name took $((SECONDS - start))s"
    done
    summary recover
}

main "$@"

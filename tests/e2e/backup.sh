#!/usr/bin/env bash
# End-to-end test of `berth backup` and `berth restore`: three nodes, images pushed with
# skopeo, a backup taken while background pushes run, a second backup that copies only the
# blobs pushed since, a restore into a new data directory started as a one-node cluster
# that two empty nodes join (every image acknowledged before the backup started must pull
# byte for byte from all three, and the status must show no under-replicated or
# unavailable blob), and a restore from a backup with one corrupt blob file, which must
# name it and exit non-zero.
#
# Usage: tests/e2e/backup.sh [SCENARIO...]   (default: all, in order; each works on what
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

SCENARIOS=(backup-push backup-under-load backup-incremental backup-restore backup-corrupt)

E2E_JOIN_TIMEOUT=${E2E_JOIN_TIMEOUT:-120}
E2E_REPAIR_TIMEOUT=${E2E_REPAIR_TIMEOUT:-180}

# Scenarios run in subshells, so what must outlive one is kept in files under
# $CLUSTER_DIR: the images acknowledged before the first backup started (images:
# `REPO TAG DIGEST`) and their blobs (blobs), the backup directories (backup: kept up to
# date; backup1: the first backup as it was), and the pid of every node a scenario
# started (pid.N), which the main shell stops at exit. Nodes 4 to 6 form the restored
# cluster; their ports are chosen by the main shell.

# ---------------------------------------------------------------- nodes

pid_exited() {
    local state
    state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 0
    [[ $state == Z ]]
}

# node_start N PEERS [SERVE OPTIONS...]: starts node N from a scenario and records its pid
# for the main shell.
node_start() {
    local n=$1
    node_launch "$@"
    printf '%s\n' "${NODE_PID[n]}" >"$CLUSTER_DIR/pid.$n"
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
    cluster_stop
}

# ---------------------------------------------------------------- images and blobs

# ---------------------------------------------------------------- backup and restore

# backup DIR [OPTIONS...]: `berth backup` from node 1 into DIR; its exit status goes to
# backup.status, its JSON summary to backup.json, its progress lines to backup.err.
backup() {
    local dir=$1 status=0
    shift
    bounded "$BERTH_BIN" backup --node "http://$(node_host 1)" \
        --cluster-secret-file "$CLUSTER_SECRET" --out "$dir" --progress lines --json "$@" \
        >backup.json 2>backup.err || status=$?
    printf '%s\n' "$status" >backup.status
    sed 's/^/    | /' backup.json backup.err
}

# restore FROM DATA [OPTIONS...]: `berth restore`; exit status in restore.status, output in
# restore.out.
restore() {
    local from=$1 data=$2 status=0
    shift 2
    bounded "$BERTH_BIN" restore --from "$from" --data-dir "$data" "$@" >restore.out 2>&1 ||
        status=$?
    printf '%s\n' "$status" >restore.status
    sed 's/^/    | /' restore.out
}

summary_field() {
    jq -r ".$1" backup.json
}

# ---------------------------------------------------------------- scenarios

scenario_backup_push() {
    local i n
    : >"$CLUSTER_DIR/images"
    : >"$CLUSTER_DIR/images.blobs"
    for i in 1 2 3; do
        make_image "src$i" v1 amd64 2 1048576
        push_image "$i" "src$i" v1 "e2e/backup-$i"
    done
    scenario_note "$(wc -l <"$CLUSTER_DIR/images") images, $(wc -l <"$CLUSTER_DIR/images.blobs") blobs pushed"
}

# push_loop LAYOUT COUNT: pushes LAYOUT:bgI to rotating nodes until told to stop (the
# file stop exists), recording each acknowledged push as `REPO TAG DIGEST` in acked.
push_loop() {
    local layout=$1 count=$2 i digest
    for ((i = 1; i <= count; i++)); do
        [[ ! -e stop ]] || return 0
        REGISTRY_HOST=$(node_host $((i % 3 + 1))) skopeo_push "oci:$layout:bg$i" "e2e/backup-bg:bg$i" \
            >/dev/null 2>&1 || continue
        digest=$(layout_digest "$layout" "bg$i")
        printf 'e2e/backup-bg bg%s %s\n' "$i" "$digest" >>acked
    done
}

scenario_backup_under_load() {
    local i pusher before during mb repo tag digest
    [[ -s $CLUSTER_DIR/images ]] || die "backup-push must run first"
    for i in $(seq 1 30); do
        make_image bg "bg$i" amd64 1 262144
    done
    : >acked
    push_loop bg 30 &
    pusher=$!
    defer kill "$pusher"
    wait_until 60 "a background push to complete" test -s acked || die "no background push completed"

    # What was acknowledged before the backup started must be in it.
    cp acked acked.before
    backup "$CLUSTER_DIR/backup"
    during=$(wc -l <acked)
    ! pid_exited "$pusher" || die "the background pushes ended before the backup did"
    touch stop
    wait "$pusher" || true
    assert_eq "backup exit status" 0 "$(cat backup.status)"
    assert_eq "backup complete" true "$(summary_field complete)"
    grep -q 'blobs\]' backup.err || die "no progress line on stderr"
    before=$(wc -l <acked.before)
    while read -r repo tag digest; do
        printf '%s %s %s\n' "$repo" "$tag" "$digest" >>"$CLUSTER_DIR/images"
        layout_blob bg "$digest" | jq -r '.config.digest, .layers[].digest' >>"$CLUSTER_DIR/images.blobs"
    done <acked.before
    sort -u -o "$CLUSTER_DIR/images.blobs" "$CLUSTER_DIR/images.blobs"
    (($(summary_field blobs) >= $(wc -l <"$CLUSTER_DIR/images.blobs"))) ||
        die "the backup names $(summary_field blobs) blobs, fewer than the $(wc -l <"$CLUSTER_DIR/images.blobs") acknowledged"
    (($(summary_field copied) == $(summary_field blobs))) || die "a first backup copied only some blobs"
    cp -a "$CLUSTER_DIR/backup" "$CLUSTER_DIR/backup1"
    mb=$(jq -r '(.bytes_copied + .snapshot_bytes) / 1048576 / .seconds | . * 10 | floor / 10' backup.json)
    scenario_note "backup while pushing: $before background pushes acknowledged before it, $((during - before)) during it;" \
        "$(summary_field blobs) blobs, $(jq -r '.blob_bytes / 1048576 | floor' backup.json) MiB in $(summary_field seconds) s ($mb MiB/s)"
}

scenario_backup_incremental() {
    local i have new
    [[ -d $CLUSTER_DIR/backup ]] || die "backup-under-load must run first"
    # Catch up with what the background pushes added after the first backup.
    backup "$CLUSTER_DIR/backup"
    assert_eq "catch-up backup exit status" 0 "$(cat backup.status)"
    have=$(summary_field blobs)
    # Two images of two layers each: six new blobs (two configs, four layers).
    : >"$CLUSTER_DIR/later"
    : >"$CLUSTER_DIR/later.blobs"
    for i in 1 2; do
        make_image "later$i" v1 arm64 2 524288
        push_image "$i" "later$i" v1 "e2e/backup-later-$i" later
    done
    new=$(wc -l <"$CLUSTER_DIR/later.blobs")
    assert_eq "new distinct blobs pushed" 6 "$new"
    backup "$CLUSTER_DIR/backup"
    assert_eq "second backup exit status" 0 "$(cat backup.status)"
    assert_eq "blobs the second backup copied" "$new" "$(summary_field copied)"
    assert_eq "blobs the second backup found present" "$have" "$(summary_field present)"
    assert_eq "blobs the second snapshot names" $((have + new)) "$(summary_field blobs)"
    scenario_note "second backup: $(summary_field copied) blobs copied, $(summary_field present) present, $(summary_field seconds) s"
    # --verify re-hashes what is there and copies nothing.
    backup "$CLUSTER_DIR/backup" --verify
    assert_eq "verifying backup exit status" 0 "$(cat backup.status)"
    assert_eq "blobs a verifying backup copied" 0 "$(summary_field copied)"
    assert_eq "snapshots kept in the directory" 1 "$(find "$CLUSTER_DIR/backup" -maxdepth 1 -name 'snapshot-*.snap' | wc -l)"
    scenario_note "verifying backup: $(summary_field present) blobs re-hashed, $(summary_field seconds) s"

    # What an interrupted backup leaves: three blobs not fetched yet, a download cut short,
    # and no record. Running it again finishes it.
    local digest hex
    for digest in $(head -n 3 "$CLUSTER_DIR/later.blobs"); do
        hex=${digest#sha256:}
        rm "$CLUSTER_DIR/backup/blobs/sha256/${hex:0:2}/$hex"
    done
    head -c 1000 /dev/urandom >"$CLUSTER_DIR/backup/tmp/cut-short"
    rm "$CLUSTER_DIR/backup/backup.json"
    backup "$CLUSTER_DIR/backup"
    assert_eq "resumed backup exit status" 0 "$(cat backup.status)"
    assert_eq "blobs the resumed backup copied" 3 "$(summary_field copied)"
    [[ -s $CLUSTER_DIR/backup/backup.json ]] || die "the resumed backup wrote no record"
    [[ ! -e $CLUSTER_DIR/backup/tmp/cut-short ]] || die "the cut-short download is still there"
}

scenario_backup_restore() {
    local start n
    [[ -d $CLUSTER_DIR/backup1 ]] || die "backup-under-load must run first"
    # A data directory with something in it is refused without --force.
    mkdir -p "${NODE_DATA[4]}"
    echo keep >"${NODE_DATA[4]}/something"
    restore "$CLUSTER_DIR/backup1" "${NODE_DATA[4]}"
    [[ $(cat restore.status) != 0 ]] || die "restore over a non-empty directory succeeded"
    grep -q 'not empty' restore.out || die "the refusal does not say why"
    [[ -f ${NODE_DATA[4]}/something ]] || die "the refused restore touched the directory"

    start=$SECONDS
    restore "$CLUSTER_DIR/backup1" "${NODE_DATA[4]}" --force
    assert_eq "restore exit status" 0 "$(cat restore.status)"
    [[ ! -e ${NODE_DATA[4]}/something ]] || die "--force kept what the directory held"
    scenario_note "restore took $((SECONDS - start)) s"

    node_start 4 "$(cluster_peers 4)"
    wait_until "$E2E_STARTUP_TIMEOUT" "the restored node to lead a one-node cluster" \
        cluster_agrees 1 "$(node_host 4)" -- 4 ||
        die "node 4 is not a one-node cluster: $(node_status 4 2>&1)"
    pull_check_all "$CLUSTER_DIR/images" 4
    scenario_note "every image acknowledged before the backup ($(wc -l <"$CLUSTER_DIR/images")) pulls from the restored node"

    start=$SECONDS
    for n in 5 6; do
        node_start "$n" "$(cluster_peers 4 5 6)"
    done
    wait_until "$E2E_JOIN_TIMEOUT" "two empty nodes to join the restored node" \
        cluster_agrees 3 "" -- 4 5 6 ||
        die "no three-voter cluster within ${E2E_JOIN_TIMEOUT}s: $(node_status 4)"
    wait_until "$E2E_REPAIR_TIMEOUT" "every node to hold every blob, none under-replicated" \
        replicated 4 5 6 ||
        die "repair unfinished after ${E2E_REPAIR_TIMEOUT}s: $(replication_figures 4 5 6)"
    scenario_note "nodes 5 and 6 joined and repair finished $((SECONDS - start)) s after their start"
    pull_check_all "$CLUSTER_DIR/images" 4 5 6
    make_image after v1 amd64 1
    push_image 5 after v1 e2e/backup-after restored
    pull_check 6 e2e/backup-after v1 "$(layout_digest after v1)"
}

scenario_backup_corrupt() {
    local copy digest hex file
    [[ -d $CLUSTER_DIR/backup ]] || die "backup-under-load must run first"
    copy=$CLUSTER_DIR/backup-corrupt
    cp -a "$CLUSTER_DIR/backup" "$copy"
    digest=$(head -n 1 "$CLUSTER_DIR/images.blobs")
    hex=${digest#sha256:}
    file=$copy/blobs/sha256/${hex:0:2}/$hex
    [[ -f $file ]] || die "no file for $digest in the backup"
    # Flip the first byte.
    printf "\\$(printf '%03o' $((0x$(head -c 1 "$file" | od -An -tx1 | tr -d ' \n') ^ 0xff)))" |
        dd of="$file" bs=1 count=1 conv=notrunc status=none
    [[ $(sha256_hex <"$file") != "$hex" ]] || die "the byte did not change"
    restore "$copy" restored-corrupt
    [[ $(cat restore.status) != 0 ]] || die "restore of a corrupt backup exited 0"
    grep -F "CORRUPT" restore.out | grep -F "$digest" | grep -qF "$file" ||
        die "the restore does not name $digest at $file"
    grep -qE "blobs +$(($(jq -r .blobs "$copy/backup.json") - 1)) of $(jq -r .blobs "$copy/backup.json") restored" restore.out ||
        die "the restore did not finish the other blobs"
    [[ ! -e restored-corrupt/blobs/sha256/${hex:0:2}/$hex ]] || die "the corrupt copy was kept"
}

# copy_figures: not a test; how long a backup of node 1 takes against a copy of its
# data directory.
copy_figures() {
    local start data
    data=${NODE_DATA[1]}
    start=$(date +%s.%N)
    cp -r "$data" "$E2E_WORK/datadir-copy"
    note "cp -r of node 1's data directory ($(du -sm "$data" | cut -f1) MiB): $(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.2f", e - s }') s"
    rm -rf "$E2E_WORK/datadir-copy"
}

# ---------------------------------------------------------------- main

main() {
    local name start n
    e2e_init
    if [[ $E2E_REGISTRY != berth ]]; then
        note "backup tests need berth; skipped for $E2E_REGISTRY"
        summary backup
        return
    fi
    if [[ ! -x $BERTH_BIN ]]; then
        fail backup "berth binary not found: $BERTH_BIN"
        summary backup
        return 1
    fi
    defer nodes_stop
    if ! cluster_start; then
        fail backup "could not start three nodes"
        summary backup
        return 1
    fi
    for n in 4 5 6; do
        node_ports "$n"
    done
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
    copy_figures
    summary backup
}

main "$@"

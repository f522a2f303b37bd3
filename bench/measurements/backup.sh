# shellcheck shell=bash
# backup: `berth backup` of a three-node cluster holding BENCH_BACKUP_MIB MiB of random
# blobs (BENCH_BACKUP_BLOB_MIB MiB each, on every node), against `cp -r` of one node's
# data directory: the least a backup of the cluster must write is every blob once and
# the metadata, which is what one node's directory holds. Each copy goes to a new
# directory on the same file system and is followed by `sync`, since the backup fsyncs
# every blob as it lands; the page cache is warm for both. BENCH_REPEAT runs, medians.

: "${BENCH_BACKUP_MIB:=4096}"
: "${BENCH_BACKUP_BLOB_MIB:=64}"

measure_backup() {
    local i n file bytes start out
    n=$((BENCH_BACKUP_MIB / BENCH_BACKUP_BLOB_MIB))
    ((n > 0)) || die "BENCH_BACKUP_MIB must be at least BENCH_BACKUP_BLOB_MIB"
    bytes=$((n * BENCH_BACKUP_BLOB_MIB * 1024 * 1024))
    samples_reset
    cluster_start default
    for ((i = 1; i <= n; i++)); do
        file=$(blob_file "$BENCH_BACKUP_BLOB_MIB" "$i")
        put_blob "${CLUSTER_URL[0]}" bench/backup "$file" >/dev/null
        await_copies "$(digest_of "$file")" "$CLUSTER_NODES" >/dev/null ||
            die "blob $i did not reach every node"
    done
    sync
    log "the cluster holds $n blobs ($(size_label "$BENCH_BACKUP_MIB")) on every node"
    for ((i = 1; i <= BENCH_REPEAT; i++)); do
        out="$WORK_DIR/backup-$i"
        start=$(now)
        "$BERTH_BIN" backup --node "${CLUSTER_URL[0]}" --cluster-secret-file "$WORK_DIR/cluster.secret" \
            --out "$out" --progress off >>"$WORK_DIR/backup.log" 2>&1 ||
            { tail -n 20 "$WORK_DIR/backup.log" >&2; die "berth backup failed"; }
        sync
        samples_add copy cand "$(mb_per_s "$bytes" "$(calc "$(now) - $start")")"
        rm -rf "$out"
        start=$(now)
        cp -r "${CLUSTER_DIR[0]}/data" "$WORK_DIR/copy-$i"
        sync
        samples_add copy ref "$(mb_per_s "$bytes" "$(calc "$(now) - $start")")"
        rm -rf "$WORK_DIR/copy-$i"
    done
    cluster_stop
    record_samples "backup of a 3-node cluster holding $(size_label "$BENCH_BACKUP_MIB") of blobs: cp -r of one node's data directory vs berth backup" \
        MB/s copy 'ratio>=0.8'
}

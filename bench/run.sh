#!/usr/bin/env bash
# berth benchmark suite: runs berth and the reference registry (CNCF Distribution)
# side by side in the same run and prints a markdown table of both figures, their
# ratio and the target. See docs/benchmarks.md.
#
# Usage: bench/run.sh [MEASUREMENT...]     (default: all, in the order below)
#   upload get manifest head skopeo rss
# and, only when named (or all six as "cluster"): berth as a 3-node cluster against
# itself, see bench/measurements/cluster.sh, cluster_reads.sh and flight.sh
#   cluster-push cluster-relay cluster-spread cluster-head cluster-digest cluster-flight
# and, only when named (or both as "secure"): berth with authentication or HTTPS against
# plain berth, see bench/measurements/secure.sh
#   auth-manifest tls-get
# and, only when named: a single-node upload against dd conv=fsync of the same file on
# the same disk, see bench/measurements/upload.sh
#   upload-dd
# and, only when named: garbage collection on a 3-node cluster against Distribution's
# offline garbage-collect, see bench/measurements/gc.sh
#   gc
# and, only when named: the pull-through cache on a 3-node cluster against three
# Distribution pull-through proxies, see bench/measurements/mirror.sh
#   mirror
# and, only when named: webhook delivery on a 3-node cluster against Distribution's
# notifications, see bench/measurements/webhooks.sh
#   webhooks
# and, only when named: the cost of metrics, see bench/measurements/metrics.sh
#   metrics-scrape metrics-get
# and, only when named: the web UI's repository page against Distribution's tag
# listing, see bench/measurements/ui.sh
#   ui-tags
# and, only when named: a scrub pass against openssl over the same files, and berth
# import of a Distribution storage root against skopeo copying between the two
# registries, see bench/measurements/scrub.sh and import.sh; and berth backup of a
# 3-node cluster against cp -r of one node's data directory, see backup.sh
#   scrub import backup
# and, only when named: replicated writes on a 3-node cluster against a 3-member etcd
# 3.4, the write rate and the time from a leader's kill -9 to the next acknowledged
# write, see bench/measurements/raft.sh
#   puts failover
# and, only when named: how metadata costs grow with the registry, 1k to 1M tags on a
# 3-node cluster, with plots, see bench/measurements/scale.sh
#   scale
# and, only when named: five hosts (network namespaces, links shaped with tc tbf) pull
# one image at once, each from its own node of a 5-node cluster, against all from one
# Distribution, see bench/measurements/fanout.sh
#   fanout
set -euo pipefail
shopt -s inherit_errexit

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ALL_MEASUREMENTS=(upload get manifest head skopeo rss)
CLUSTER_MEASUREMENTS=(cluster-push cluster-relay cluster-spread cluster-head cluster-digest cluster-flight)
SECURE_MEASUREMENTS=(auth-manifest tls-get)
EXTRA_MEASUREMENTS=(upload-dd gc mirror webhooks metrics-scrape metrics-get ui-tags scrub import backup puts failover scale fanout)
# Extra curl options and wrk's Authorization header, for the secure measurements.
CURL_EXTRA=()
WRK_AUTH=

: "${BERTH_BIN:=/var/cache/berth/target/release/berth}"
: "${REFERENCE_BIN:=/usr/bin/docker-registry}"
: "${BENCH_CANDIDATE:=berth}"
: "${BENCH_RUST_LOG:=warn}"
: "${BENCH_SIZE_MIB:=1024}"
: "${BENCH_RSS_SMALL_MIB:=256}"
: "${BENCH_REPEAT:=3}"
: "${BENCH_GET_REPEAT:=5}"
: "${BENCH_WRK_REPEAT:=1}"
: "${BENCH_WRK_THREADS:=2}"
: "${BENCH_WRK_CONNECTIONS:=32}"
: "${BENCH_WRK_DURATION:=10s}"
: "${BENCH_TMP:=/var/tmp}"
: "${BENCH_DATA_DIR:=}"
: "${BENCH_RESULTS:=}"
: "${BENCH_CLUSTER_TIMEOUT:=120}"

# shellcheck source=bench/lib/common.sh
source "$BENCH_DIR/lib/common.sh"
# shellcheck source=bench/lib/registry.sh
source "$BENCH_DIR/lib/registry.sh"
# shellcheck source=bench/lib/data.sh
source "$BENCH_DIR/lib/data.sh"
# shellcheck source=bench/lib/client.sh
source "$BENCH_DIR/lib/client.sh"
# shellcheck source=bench/lib/report.sh
source "$BENCH_DIR/lib/report.sh"
# shellcheck source=bench/lib/etcd.sh
source "$BENCH_DIR/lib/etcd.sh"
for measurement_file in "$BENCH_DIR"/measurements/*.sh; do
    # shellcheck source=/dev/null
    source "$measurement_file"
done

usage() {
    cat <<USAGE
usage: bench/run.sh [MEASUREMENT...]
measurements: ${ALL_MEASUREMENTS[*]} (default: all)
              ${CLUSTER_MEASUREMENTS[*]} (only when named; "cluster" names all six)
              ${SECURE_MEASUREMENTS[*]} (only when named; "secure" names both)
              ${EXTRA_MEASUREMENTS[*]} (only when named: upload-dd, a one-node upload vs
                dd conv=fsync; gc, garbage collection, 3-node cluster vs offline Distribution;
                mirror, pull-through cache, 3-node cluster vs 3 Distribution proxies;
                webhooks, push rate with endpoints, event latency and delivery rate, 3-node
                cluster vs Distribution's notifications; metrics-scrape, /metrics with many
                blobs vs Distribution's; metrics-get, manifest GET rate with metrics off vs on;
                ui-tags, the web UI's page of a repository with many tags vs Distribution's
                tags/list?n=50; puts, manifest PUTs a second on 3 nodes vs etcd's writes;
                failover, leader kill -9 to the next acknowledged write vs etcd;
                scale, listings, memory, idle repair, join and restart from 1k to 1M tags;
                fanout, 5 shaped hosts pull one image at once from their own berth node vs
                from one Distribution; needs root)
environment:
  BERTH_BIN            berth binary ($BERTH_BIN)
  BENCH_BASELINE_BIN   cluster-head, cluster-digest: the earlier berth build they compare with (BERTH_BIN)
  BENCH_CANDIDATE      berth, or distribution to check the suite itself ($BENCH_CANDIDATE)
  BENCH_SIZE_MIB       large blob and image size in MiB ($BENCH_SIZE_MIB)
  BENCH_RSS_SMALL_MIB  smaller size for the RSS comparison ($BENCH_RSS_SMALL_MIB)
  BENCH_REPEAT         runs per upload and skopeo figure ($BENCH_REPEAT)
  BENCH_GET_REPEAT     runs per GET figure ($BENCH_GET_REPEAT)
  BENCH_WRK_REPEAT     wrk runs per rate figure ($BENCH_WRK_REPEAT)
  BENCH_WRK_DURATION   wrk duration ($BENCH_WRK_DURATION)
  BENCH_TMP            where the run's temp dir goes ($BENCH_TMP)
  BENCH_DATA_DIR       keep generated inputs here between runs (default: temp, removed)
  BENCH_RESULTS        also append the table to this file
  BENCH_CLUSTER_TIMEOUT  seconds to wait for a blob's copies on every node ($BENCH_CLUSTER_TIMEOUT)
  BENCH_FLIGHT_MIB     cluster-flight: the blob's size in MiB ($BENCH_FLIGHT_MIB)
  BENCH_FLIGHT_READERS cluster-flight: GETs at once ($BENCH_FLIGHT_READERS)
  BENCH_GC_BLOBS       gc: small blobs to collect, and to keep referenced; a multiple of 100 ($BENCH_GC_BLOBS)
  BENCH_GC_IDLE_SECONDS  gc: seconds of idle probes before the collection ($BENCH_GC_IDLE_SECONDS)
  BENCH_GC_TIMEOUT     gc: bound in seconds on each wait and on each collection ($BENCH_GC_TIMEOUT)
  BENCH_MIRROR_PULLS   mirror: concurrent pulls of the uncached image ($BENCH_MIRROR_PULLS)
  BENCH_MIRROR_LAYERS  mirror: layers the BENCH_SIZE_MIB image is cut into ($BENCH_MIRROR_LAYERS)
  BENCH_MIRROR_TIMEOUT mirror: bound in seconds on each pull and each wait ($BENCH_MIRROR_TIMEOUT)
  BENCH_HOOKS_PUSHES   webhooks: pushes per push-rate run ($BENCH_HOOKS_PUSHES)
  BENCH_HOOKS_CLIENTS  webhooks: concurrent pushing clients ($BENCH_HOOKS_CLIENTS)
  BENCH_HOOKS_RATE     webhooks: pushes a second in the latency run ($BENCH_HOOKS_RATE)
  BENCH_HOOKS_LATENCY_PUSHES  webhooks: pushes in the latency run ($BENCH_HOOKS_LATENCY_PUSHES)
  BENCH_HOOKS_BACKLOG  webhooks: events waiting in the throughput run ($BENCH_HOOKS_BACKLOG)
  BENCH_METRICS_BLOBS  metrics-scrape: blobs the node holds ($BENCH_METRICS_BLOBS)
  BENCH_METRICS_SCRAPES  metrics-scrape: scrapes timed ($BENCH_METRICS_SCRAPES)
  BENCH_UI_TAGS        ui-tags: tags of the repository shown ($BENCH_UI_TAGS)
  BENCH_UI_REQUESTS    ui-tags: GETs timed of each page ($BENCH_UI_REQUESTS)
  BENCH_UI_CLIENTS     ui-tags: concurrent clients tagging ($BENCH_UI_CLIENTS)
  BENCH_PUTS_CONNECTIONS  puts: wrk connections over the three members ($BENCH_PUTS_CONNECTIONS)
  BENCH_PUTS_DURATION  puts: wrk duration per run ($BENCH_PUTS_DURATION)
  BENCH_FAILOVER_RUNS  failover: kills per side ($BENCH_FAILOVER_RUNS)
  BENCH_SCALE_SIZES    scale: the numbers of tags measured at ($BENCH_SCALE_SIZES)
  BENCH_SCALE_REQUESTS scale: GETs timed of each page at each size ($BENCH_SCALE_REQUESTS)
  BENCH_SCALE_CLIENTS  scale: concurrent writers while loading ($BENCH_SCALE_CLIENTS)
  BENCH_SCALE_IDLE_SECONDS  scale: seconds of idle repair rounds timed ($BENCH_SCALE_IDLE_SECONDS)
  BENCH_SCALE_PLOTS    scale: where the PNG plots go ($BENCH_SCALE_PLOTS)
  BENCH_FANOUT_RATE    fanout: each host's link speed, tc's syntax ($BENCH_FANOUT_RATE)
  BENCH_FANOUT_MIB     fanout: the image's layer in MiB ($BENCH_FANOUT_MIB)
  BENCH_FANOUT_TIMEOUT fanout: bound in seconds on each request of a pull ($BENCH_FANOUT_TIMEOUT)
USAGE
}

# check_measurements NAME... : every name must be a known measurement.
check_measurements() {
    local name
    for name in "$@"; do
        [[ " ${ALL_MEASUREMENTS[*]} ${CLUSTER_MEASUREMENTS[*]} ${SECURE_MEASUREMENTS[*]} ${EXTRA_MEASUREMENTS[*]} " == *" $name "* ]] ||
            { usage >&2; die "unknown measurement '$name'"; }
    done
}

# expand_measurements NAME... : the names, with "cluster" standing for every cluster one.
expand_measurements() {
    local name
    for name in "$@"; do
        case $name in
            cluster) printf '%s\n' "${CLUSTER_MEASUREMENTS[@]}" ;;
            secure) printf '%s\n' "${SECURE_MEASUREMENTS[@]}" ;;
            *) printf '%s\n' "$name" ;;
        esac
    done
}

# is_cluster MEASUREMENT : whether it runs berth as a cluster (and needs no reference).
is_cluster() {
    [[ $1 == cluster-* ]]
}

# tools_for MEASUREMENT : what a measurement runs besides curl, openssl, jq and ss.
tools_for() {
    case $1 in
        manifest | head) printf 'wrk\n' ;;
        auth-manifest) printf 'wrk\nhtpasswd\n' ;;
        skopeo | import) printf 'skopeo\numoci\n' ;;
        cluster-head | cluster-digest) printf 'haproxy\nwrk\n' ;;
        cluster-*) printf 'haproxy\n' ;;
        webhooks | metrics-scrape | ui-tags) printf 'python3\n' ;;
        metrics-get) printf 'wrk\n' ;;
        puts) printf 'wrk\netcd\n' ;;
        failover) printf 'python3\netcd\n' ;;
        scale) printf 'python3\ngnuplot\n' ;;
        fanout) printf 'tc\nnsenter\n' ;;
    esac
}

# space_needed_gib MEASUREMENT... : a bound on the disk the inputs and the registries'
# storage take.
space_needed_gib() {
    local copies=$((BENCH_REPEAT > 2 ? BENCH_REPEAT : 2)) need name cluster
    need=$(((copies * 3 + 2) * BENCH_SIZE_MIB / 1024 + 2))
    for name in "$@"; do
        is_cluster "$name" || continue
        cluster=$(cluster_space_gib)
        ((cluster > need)) && need=$cluster
        break
    done
    printf '%s\n' "$need"
}

cleanup() {
    stop_everything
    [[ -n ${WORK_DIR:-} ]] && rm -rf "$WORK_DIR"
}

main() {
    local measurements name tools=(curl openssl jq ss docker-registry)
    [[ ${1:-} == -h || ${1:-} == --help ]] && { usage; return 0; }
    mapfile -t measurements < <(expand_measurements "${@:-${ALL_MEASUREMENTS[@]}}")
    check_measurements "${measurements[@]}"
    for name in "${measurements[@]}"; do
        mapfile -t -O "${#tools[@]}" tools < <(tools_for "$name")
        if { is_cluster "$name" || [[ " ${SECURE_MEASUREMENTS[*]} ${EXTRA_MEASUREMENTS[*]} " == *" $name "* ]]; } &&
            [[ $BENCH_CANDIDATE != berth ]]; then
            die "$name runs berth against berth; it needs BENCH_CANDIDATE=berth"
        fi
    done
    ensure_tools "${tools[@]}"
    check_candidate

    trap cleanup EXIT
    trap 'exit 130' INT TERM
    WORK_DIR=$(make_work_dir "$BENCH_TMP")
    DATA_DIR=${BENCH_DATA_DIR:-$WORK_DIR/inputs}
    mkdir -p "$DATA_DIR"
    require_free_space "$WORK_DIR" "$(space_needed_gib "${measurements[@]}")"
    log "reference vs $(side_label cand), work dir $WORK_DIR, measurements: ${measurements[*]}"
    START_LOAD=$(load_average)
    warn_if_busy

    for name in "${measurements[@]}"; do
        log "--- $name"
        "measure_${name//-/_}"
    done
    publish
}

main "$@"

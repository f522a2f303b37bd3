# shellcheck shell=bash
# mirror: berth's pull-through cache on a 3-node cluster, against three CNCF
# Distribution pull-through proxies (one per node, each with its own storage). Both
# mirror one upstream, a plain Distribution with its access log on, holding one image
# of BENCH_SIZE_MIB MiB: BENCH_MIRROR_LAYERS random layers and a small config.
#
#   1. Straight from the upstream: one pull, untimed, then BENCH_REPEAT timed pulls
#      (the median is "one direct pull"), then BENCH_MIRROR_PULLS concurrent pulls.
#   2. Distribution: three proxies; BENCH_MIRROR_PULLS concurrent pulls of the uncached
#      image, puller i on proxy i % 3, all released at once. Timed until the last one
#      completes; the upstream's access log gives the blob bytes it served meanwhile.
#   3. berth: a cluster whose nodes all mirror the upstream as "up"; the same pulls
#      through /v2/up/<repository>/..., puller i on node i % 3.
#   4. berth: the image pushed to a local repository of the same cluster through
#      node 1; then BENCH_REPEAT pulls of each, cached through the mirror and pushed,
#      from node 1, the order alternating: throughput of the cached image over the
#      pushed one.
#
# A pull is what a client does: GET the manifest by tag (checked byte for byte against
# the pushed one), then GET every blob it names, in order, over one connection, to
# /dev/null, each answer's size checked.

: "${BENCH_MIRROR_PULLS:=20}"
: "${BENCH_MIRROR_LAYERS:=4}"
: "${BENCH_MIRROR_TIMEOUT:=600}"

MIRROR_NAME=up
MIRROR_REPO=bench/image
MIRROR_TAG=latest
declare -A MIRROR_FIGURES=()
MIRROR_UPSTREAM_PID='' MIRROR_UPSTREAM_URL='' MIRROR_UPSTREAM_DIR=''
MIRROR_PROXY_PIDS=() MIRROR_PROXY_URLS=() MIRROR_PROXY_DIRS=()
MIRROR_USAGE_PIDS=()

measure_mirror() {
    ((BENCH_SIZE_MIB % BENCH_MIRROR_LAYERS == 0)) ||
        die "BENCH_SIZE_MIB ($BENCH_SIZE_MIB) must be a multiple of BENCH_MIRROR_LAYERS ($BENCH_MIRROR_LAYERS)"
    mirror_image
    samples_reset
    MIRROR_FIGURES=()
    sync
    mirror_upstream_start
    mirror_push "$MIRROR_UPSTREAM_URL" "$MIRROR_REPO"
    mirror_direct_runs

    sync
    mirror_proxies_start
    mirror_concurrent ref "$MIRROR_REPO" "${MIRROR_PROXY_URLS[@]}"
    mirror_proxies_stop

    sync
    CLUSTER_ARGS=(--config "$(mirror_berth_config)")
    cluster_start default
    CLUSTER_ARGS=()
    mirror_concurrent cand "$MIRROR_NAME/$MIRROR_REPO" "${CLUSTER_URL[@]}"
    mirror_cached_runs
    cluster_stop
    mirror_upstream_stop
    mirror_record
}

# --- the image

# mirror_image : BENCH_MIRROR_LAYERS random layers, a config naming them and an OCI
# manifest, in DATA_DIR/mirror-<MiB>m; MIRROR_BLOBS lists "<digest> <size> <file>" of
# the config and the layers (the manifest's order), MIRROR_MANIFEST is the manifest's
# file and MIRROR_IMAGE_BYTES the sum of the blobs' sizes.
mirror_image() {
    local dir="$DATA_DIR/mirror-${BENCH_SIZE_MIB}m" mib=$((BENCH_SIZE_MIB / BENCH_MIRROR_LAYERS)) i file \
        layers=() config
    mkdir -p "$dir"
    for ((i = 1; i <= BENCH_MIRROR_LAYERS; i++)); do
        layers+=("$(random_file "mirror-layer-${mib}m-$i" "$mib")")
    done
    config="$dir/config.json"
    {
        printf '%s\n' "${layers[@]}" | while read -r file; do digest_of "$file"; done |
            jq -R . | jq -sc '{architecture: "amd64", os: "linux", config: {},
                rootfs: {type: "layers", diff_ids: .}}'
    } >"$config"
    MIRROR_BLOBS="$dir/blobs.list"
    {
        printf '%s %s %s\n' "$(sha256_of "$config")" "$(size_of "$config")" "$config"
        for file in "${layers[@]}"; do
            printf '%s %s %s\n' "$(digest_of "$file")" "$(size_of "$file")" "$file"
        done
    } >"$MIRROR_BLOBS"
    MIRROR_MANIFEST="$dir/manifest.json"
    awk -v mt="$OCI_MANIFEST" -v cmt="$OCI_CONFIG" -v lmt="$OCI_LAYER" '
        NR == 1 { printf "{\"schemaVersion\":2,\"mediaType\":\"%s\",\"config\":{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":%.0f},\"layers\":[", mt, cmt, $1, $2; next }
        { printf "%s{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":%.0f}", (NR > 2) ? "," : "", lmt, $1, $2 }
        END { printf "]}" }' "$MIRROR_BLOBS" >"$MIRROR_MANIFEST"
    jq -e . "$MIRROR_MANIFEST" >/dev/null || die "could not write the image's manifest"
    MIRROR_IMAGE_BYTES=$(awk '{ s += $2 } END { print s }' "$MIRROR_BLOBS")
    log "image: $BENCH_MIRROR_LAYERS layers of $(size_label "$mib") and a config, $MIRROR_IMAGE_BYTES blob bytes"
}

# mirror_push URL REPO : the image's blobs (POST, then PUT ?digest= with the body), then
# its manifest, tagged MIRROR_TAG.
mirror_push() {
    local url=$1 repo=$2 file
    while read -r _ _ file; do
        put_blob "$url" "$repo" "$file" >/dev/null
    done <"$MIRROR_BLOBS"
    curl_expect 201 -X PUT -H "Content-Type: $OCI_MANIFEST" --data-binary "@$MIRROR_MANIFEST" \
        "$url/v2/$repo/manifests/$MIRROR_TAG" >/dev/null
}

# --- Distribution: the upstream and the proxies

# mirror_distribution_start DIR ACCESS_LOG EXTRA : a Distribution with its access log
# on (ACCESS_LOG true: lines on stdout, in DIR/server.log) or off, and EXTRA appended
# to its config, on a free port; sets MIRROR_STARTED_PID and MIRROR_STARTED_URL.
mirror_distribution_start() {
    local dir=$1 access_log=$2 extra=$3 attempt port
    for attempt in 1 2 3; do
        rm -rf "$dir"
        mkdir -p "$dir/data"
        port=$(pick_port)
        cat >"$dir/config.yml" <<YAML
version: 0.1
log:
  level: error
  accesslog:
    disabled: $([[ $access_log == true ]] && printf false || printf true)
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
$extra
YAML
        "$REFERENCE_BIN" serve "$dir/config.yml" >"$dir/server.log" 2>&1 &
        MIRROR_STARTED_PID=$!
        STARTED_PIDS+=("$MIRROR_STARTED_PID")
        MIRROR_STARTED_URL="http://127.0.0.1:$port"
        wait_until 30 "Distribution on port $port" mirror_answers "$MIRROR_STARTED_PID" "$MIRROR_STARTED_URL" &&
            return 0
        log "Distribution failed to start on port $port (attempt $attempt):"
        tail -n 5 "$dir/server.log" >&2 || true
        stop_pid "$MIRROR_STARTED_PID"
    done
    die "Distribution did not come up in $dir"
}

# mirror_answers PID URL : the server runs and GET /v2/ answers 200.
mirror_answers() {
    ! pid_gone "$1" && [[ $(curl -s -o /dev/null -m 2 -w '%{http_code}' "$2/v2/") == 200 ]]
}

mirror_upstream_start() {
    MIRROR_UPSTREAM_DIR="$WORK_DIR/mirror-upstream"
    mirror_distribution_start "$MIRROR_UPSTREAM_DIR" true ''
    MIRROR_UPSTREAM_PID=$MIRROR_STARTED_PID MIRROR_UPSTREAM_URL=$MIRROR_STARTED_URL
    log "upstream Distribution up: $MIRROR_UPSTREAM_URL (pid $MIRROR_UPSTREAM_PID)"
}

mirror_upstream_stop() {
    [[ -n $MIRROR_UPSTREAM_PID ]] || return 0
    stop_pid "$MIRROR_UPSTREAM_PID"
    rm -rf "$MIRROR_UPSTREAM_DIR"
    MIRROR_UPSTREAM_PID=''
}

# mirror_proxies_start : CLUSTER_NODES Distribution pull-through proxies of the
# upstream, each with its own storage; their access logs stay off, as every other
# measurement's reference has them.
mirror_proxies_start() {
    local i dir
    MIRROR_PROXY_PIDS=() MIRROR_PROXY_URLS=() MIRROR_PROXY_DIRS=()
    for ((i = 0; i < CLUSTER_NODES; i++)); do
        dir="$WORK_DIR/mirror-proxy-$((i + 1))"
        mirror_distribution_start "$dir" false "proxy:
  remoteurl: $MIRROR_UPSTREAM_URL"
        MIRROR_PROXY_PIDS+=("$MIRROR_STARTED_PID")
        MIRROR_PROXY_URLS+=("$MIRROR_STARTED_URL")
        MIRROR_PROXY_DIRS+=("$dir")
    done
    log "Distribution proxies up: ${MIRROR_PROXY_URLS[*]} (pids ${MIRROR_PROXY_PIDS[*]})"
}

mirror_proxies_stop() {
    local i
    for ((i = 0; i < ${#MIRROR_PROXY_PIDS[@]}; i++)); do
        stop_pid "${MIRROR_PROXY_PIDS[i]}"
        rm -rf "${MIRROR_PROXY_DIRS[i]}"
    done
    MIRROR_PROXY_PIDS=() MIRROR_PROXY_URLS=() MIRROR_PROXY_DIRS=()
}

# --- berth

# mirror_berth_config : the config file every node reads: one anonymous mirror of
# the upstream. Prints its path.
mirror_berth_config() {
    local file="$WORK_DIR/mirror-berth.yml"
    cat >"$file" <<YAML
mirrors:
  - name: $MIRROR_NAME
    url: $MIRROR_UPSTREAM_URL
    anonymous: true
YAML
    printf '%s\n' "$file"
}

# mirror_status INDEX : node INDEX's GET /_berth/mirrors entry for the mirror, compact.
mirror_status() {
    curl -sS -f -m 10 "${CLUSTER_URL[$1]}/_berth/mirrors" |
        jq -c --arg n "$MIRROR_NAME" '.[] | select(.name == $n)' || die "GET /_berth/mirrors failed on node $(($1 + 1))"
}

# mirror_raft : each node's Raft term and leader, from GET /_berth/cluster/status: a
# term that moves means an election.
mirror_raft() {
    local i
    for ((i = 0; i < CLUSTER_NODES; i++)); do
        curl -sS -m 10 "${CLUSTER_URL[i]}/_berth/cluster/status" |
            jq -r --arg n "$((i + 1))" '"node \($n): term \(.term), leader \(.leader_id)"' || true
    done | paste -sd ';' | sed 's/;/; /g'
}

# mirror_cached_everywhere : every node reports every blob of the image cached.
mirror_cached_everywhere() {
    local i want
    want=$(wc -l <"$MIRROR_BLOBS")
    for ((i = 0; i < CLUSTER_NODES; i++)); do
        (($(mirror_status "$i" | jq -r .cached_blobs) >= want)) || return 1
    done
}

# --- pulls

# mirror_pull_config URL REPO : a curl config fetching every blob of the image from
# URL's REPO in the manifest's order, one connection, each to /dev/null. Prints its path.
mirror_pull_config() {
    local url=$1 repo=$2 file
    file="$WORK_DIR/mirror-pull-$(printf '%s' "$url/$repo" | tr -c 'A-Za-z0-9' _).cfg"
    awk -v url="$url" -v repo="$repo" -v t="$BENCH_MIRROR_TIMEOUT" '{
        printf "url = \"%s/v2/%s/blobs/%s\"\noutput = \"/dev/null\"\nmax-time = %d\n", url, repo, $1, t
        printf "write-out = \"%%{http_code} %%{size_download}\\n\"\n" }' "$MIRROR_BLOBS" >"$file"
    printf '%s\n' "$file"
}

# mirror_pull URL REPO CONFIG OUT : one pull (see the top of the file), every response
# checked; CONFIG is mirror_pull_config's for URL and REPO. Writes "<start> <end>
# <bytes>" into OUT.result, or "fail <why>" and returns 1; OUT.* hold its answers.
mirror_pull() {
    local url=$1 repo=$2 config=$3 out=$4 start code sizes
    start=$(now)
    code=$(curl -sS -m "$BENCH_MIRROR_TIMEOUT" -H "Accept: $OCI_MANIFEST" -o "$out.manifest" \
        -w '%{http_code}' "$url/v2/$repo/manifests/$MIRROR_TAG" 2>"$out.err") || code="(curl failed)"
    if [[ $code != 200 || $(<"$out.manifest") != "$(<"$MIRROR_MANIFEST")" ]]; then
        printf 'fail manifest from %s/v2/%s: HTTP %s: %s\n' "$url" "$repo" "$code" \
            "$(cat "$out.manifest" "$out.err" 2>/dev/null | head -c 300 | tr '\n' ' ')" >"$out.result"
        return 1
    fi
    curl -sS -K "$config" >"$out.blobs" 2>"$out.err" || true
    # Each answer must be a 200 with exactly the blob's bytes.
    sizes=$(paste -d' ' "$out.blobs" "$MIRROR_BLOBS" | awk '
        NF < 5 || $1 != 200 || $2 != $4 { bad = bad sprintf("[%s: HTTP %s, %s of %s bytes] ", $3, $1, $2, $4) }
        { n++; s += $2 }
        END { if (bad != "") print "fail", bad; else printf "%d %.0f\n", n, s }')
    if [[ $sizes == fail* || ${sizes%% *} != "$(wc -l <"$MIRROR_BLOBS")" ]]; then
        printf 'fail blobs from %s/v2/%s: %s %s\n' "$url" "$repo" "$sizes" "$(head -c 300 "$out.err" | tr '\n' ' ')" >"$out.result"
        return 1
    fi
    printf '%s %s %s\n' "$start" "$(now)" "$((${sizes#* } + $(size_of "$out.manifest")))" >"$out.result"
}

# mirror_timed_pull URL REPO : one pull in the foreground; prints its seconds.
mirror_timed_pull() {
    local out="$WORK_DIR/mirror-single" start end _
    mirror_pull "$1" "$2" "$(mirror_pull_config "$1" "$2")" "$out" || die "$(cat "$out.result")"
    read -r start end _ <"$out.result"
    calc "$end - $start"
}

# mirror_pulls TAG REPO URL... : BENCH_MIRROR_PULLS concurrent pulls of REPO, puller i
# on the (i mod count)th URL; once every puller has started, all are released at once.
# Waits for all (bounded), then sets MIRROR_PULLS_SECONDS to the time from the release
# to the last completion, and MIRROR_PULLS_USAGE to what the machine and the processes
# MIRROR_USAGE_PIDS used meanwhile (see mirror_usage_delta). The pullers' results are
# in $WORK_DIR/mirror-TAG/.
mirror_pulls() {
    local tag=$1 repo=$2 dir="$WORK_DIR/mirror-$1" urls configs=() i pid pids=() go release deadline last failed before after
    shift 2
    urls=("$@")
    rm -rf "$dir"
    mkdir -p "$dir"
    go="$dir/go"
    for ((i = 0; i < ${#urls[@]}; i++)); do
        configs+=("$(mirror_pull_config "${urls[i]}" "$repo")")
    done
    for ((i = 0; i < BENCH_MIRROR_PULLS; i++)); do
        (
            touch "$dir/ready.$i"
            until [[ -e $go ]]; do sleep 0.005; done
            mirror_pull "${urls[i % ${#urls[@]}]}" "$repo" "${configs[i % ${#urls[@]}]}" "$dir/$i"
        ) &
        pids+=("$!")
        STARTED_PIDS+=("$!")
    done
    wait_until 30 "$BENCH_MIRROR_PULLS pullers to start" mirror_ready "$dir" || die "the pullers did not start"
    before=$(mirror_usage "${MIRROR_USAGE_PIDS[@]}")
    release=$(now)
    touch "$go"
    deadline=$((${EPOCHREALTIME/./} + (BENCH_MIRROR_TIMEOUT + 30) * 1000000))
    for pid in "${pids[@]}"; do
        while ! pid_gone "$pid"; do
            if ((${EPOCHREALTIME/./} >= deadline)); then
                for i in "${pids[@]}"; do stop_pid "$i"; done
                die "the $tag pulls did not finish within $((BENCH_MIRROR_TIMEOUT + 30)) s"
            fi
            sleep 0.02
        done
        wait "$pid" 2>/dev/null || true
    done
    after=$(mirror_usage "${MIRROR_USAGE_PIDS[@]}")
    failed=$(cat "$dir"/*.result 2>/dev/null | grep -c '^fail' || true)
    if ((failed > 0)); then
        grep -h '^fail' "$dir"/*.result | head -n 3 | cut -c1-600 >&2
        die "$failed of the $BENCH_MIRROR_PULLS $tag pulls failed"
    fi
    (($(cat "$dir"/*.result 2>/dev/null | grep -c .) == BENCH_MIRROR_PULLS)) ||
        die "not every $tag pull reported"
    last=$(cat "$dir"/*.result | awk '{ print $2 }' | sort -g | tail -n 1)
    log "$tag pulls' own durations (s): $(cat "$dir"/*.result | awk '{ printf "%.2f\n", $2 - $1 }' | sort -g | tr '\n' ' ')"
    MIRROR_PULLS_SECONDS=$(calc "$last - $release")
    MIRROR_PULLS_USAGE=$(mirror_usage_delta "$before" "$after" "$(calc "$(now) - $release")")
}

mirror_ready() {
    local files=("$1"/ready.*)
    [[ -e ${files[0]} ]] && ((${#files[@]} == BENCH_MIRROR_PULLS))
}

# --- the upstream's access log

# mirror_log_mark : the upstream access log's current line count.
mirror_log_mark() {
    wc -l <"$MIRROR_UPSTREAM_DIR/server.log"
}

# mirror_log_settle : waits (bounded) until the upstream has logged nothing new for 3 s.
mirror_log_settle() {
    local before after tries
    before=$(mirror_log_mark)
    for ((tries = 0; tries < BENCH_MIRROR_TIMEOUT; tries++)); do
        sleep 3
        after=$(mirror_log_mark)
        ((after == before)) && return 0
        before=$after
    done
    log "warning: the upstream still logged requests after ${BENCH_MIRROR_TIMEOUT}s"
}

# mirror_log_counts FROM : what the upstream served since line FROM of its access log
# (combined format: "... \"METHOD PATH PROTO\" STATUS SIZE ..."): prints
# "<blob GETs> <their bytes> <blob HEADs> <manifest GETs> <manifest HEADs> <other>".
mirror_log_counts() {
    tail -n "+$(($1 + 1))" "$MIRROR_UPSTREAM_DIR/server.log" | awk '
        $6 ~ /^"(GET|HEAD)$/ && $7 ~ /^\/v2\/.+\/(blobs|manifests)\// {
            m = substr($6, 2); kind = ($7 ~ /\/blobs\//) ? "blob" : "manifest"
            c[kind m]++
            if (kind m == "blobGET") b += ($10 == "-") ? 0 : $10
            next }
        $6 ~ /^"[A-Z]+$/ { o++ }
        END { printf "%d %.0f %d %d %d %d\n", c["blobGET"], b, c["blobHEAD"], c["manifestGET"], c["manifestHEAD"], o }'
}

# --- CPU and disk meanwhile

# mirror_usage PID... : "<busy jiffies> <total jiffies> <iowait jiffies> <CPU ticks of
# the PIDs> <sectors written> <disk busy ms>" now, the machine's and the PIDs'.
mirror_usage() {
    local dev procs=0 pid ticks
    for pid in "$@"; do
        ticks=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat" 2>/dev/null) || ticks=0
        procs=$((procs + ${ticks:-0}))
    done
    dev=$(df -P "$WORK_DIR" | awk 'NR == 2 { n = split($1, p, "/"); print p[n] }')
    awk -v p="$procs" -v dev="$dev" '
        FILENAME == "/proc/stat" && $1 == "cpu" { t = 0; for (i = 2; i <= 9; i++) t += $i; idle = $5 + $6; iow = $6 }
        FILENAME == "/proc/diskstats" && $3 == dev { w = $10; ms = $13 }
        END { printf "%.0f %.0f %.0f %.0f %.0f %.0f\n", t - idle, t, iow, p, w, ms }' /proc/stat /proc/diskstats
}

# mirror_usage_delta BEFORE AFTER SECONDS : "<machine CPU busy %> <iowait %> <CPU s of
# the PIDs> <MB written> <disk busy %> <machine CPU s>" between two mirror_usage
# readings SECONDS apart (busy: neither idle nor waiting on I/O; % of all cores).
mirror_usage_delta() {
    awk -v hz="$(getconf CLK_TCK)" -v s="$3" -v a="$1" -v b="$2" 'BEGIN {
        split(a, x, " "); split(b, y, " "); t = y[2] - x[2]
        printf "%.1f %.1f %.2f %.1f %.1f %.2f\n", 100 * (y[1] - x[1]) / t, 100 * (y[3] - x[3]) / t,
            (y[4] - x[4]) / hz, (y[5] - x[5]) * 512 / 1e6, 100 * (y[6] - x[6]) / 1000 / s, (y[1] - x[1]) / hz }'
}

# mirror_write_bytes PID... : each process's write_bytes (bytes it sent to storage), one
# per line.
mirror_write_bytes() {
    local pid
    for pid in "$@"; do
        awk '/^write_bytes:/ { print $2 }' "/proc/$pid/io"
    done
}

# mirror_stored SIDE : the bytes in the files of SIDE's three servers' data dirs, each
# and in all ("<first>/<second>/<third> <sum>").
mirror_stored() {
    local dirs=() i
    if [[ $1 == ref ]]; then
        dirs=("${MIRROR_PROXY_DIRS[@]}")
    else
        for ((i = 0; i < CLUSTER_NODES; i++)); do dirs+=("${CLUSTER_DIR[i]}"); done
    fi
    for i in "${dirs[@]}"; do
        find "$i/data" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f\n", s }'
    done | awk '{ printf "%s%.0f", (NR > 1) ? "/" : "", $1; t += $1 } END { printf " %.0f\n", t }'
}

# --- the runs

# mirror_direct_runs : pulls straight from the upstream: one untimed, BENCH_REPEAT timed
# one at a time, then BENCH_MIRROR_PULLS at once.
mirror_direct_runs() {
    local run seconds mark counts
    mirror_timed_pull "$MIRROR_UPSTREAM_URL" "$MIRROR_REPO" >/dev/null
    for ((run = 1; run <= BENCH_REPEAT; run++)); do
        seconds=$(mirror_timed_pull "$MIRROR_UPSTREAM_URL" "$MIRROR_REPO")
        samples_add direct ref "$seconds"
        log "run $run, one pull straight from the upstream: $(fmt "$seconds") s ($(fmt "$(mb_per_s "$MIRROR_IMAGE_BYTES" "$seconds")") MB/s)"
    done
    MIRROR_FIGURES[direct]=$(samples_median direct ref)
    mark=$(mirror_log_mark)
    MIRROR_USAGE_PIDS=("$MIRROR_UPSTREAM_PID")
    mirror_pulls direct "$MIRROR_REPO" "$MIRROR_UPSTREAM_URL"
    seconds=$MIRROR_PULLS_SECONDS
    MIRROR_FIGURES[direct_usage]=$MIRROR_PULLS_USAGE
    mirror_log_settle
    counts=$(mirror_log_counts "$mark")
    MIRROR_FIGURES[direct_all]=$seconds
    log "$BENCH_MIRROR_PULLS concurrent pulls straight from the upstream: last done after $(fmt "$seconds") s; upstream served (blob GETs, bytes, blob HEADs, manifest GETs, manifest HEADs, other): $counts; CPU busy %, iowait %, upstream CPU s, MB written, disk busy %, machine CPU s: ${MIRROR_FIGURES[direct_usage]}"
}

# mirror_concurrent SIDE REPO URL... : the concurrent pulls of the uncached image, as
# REPO, through SIDE's three servers, with what the upstream served meanwhile.
mirror_concurrent() {
    local side=$1 repo=$2 mark seconds counts i statuses=() bytes=0 hits=0 misses=0 s writes
    shift 2
    if [[ $side == ref ]]; then
        MIRROR_USAGE_PIDS=("${MIRROR_PROXY_PIDS[@]}" "$MIRROR_UPSTREAM_PID")
    else
        MIRROR_USAGE_PIDS=("${CLUSTER_PID[@]}" "$MIRROR_UPSTREAM_PID")
    fi
    mark=$(mirror_log_mark)
    writes=$(mirror_write_bytes "${MIRROR_USAGE_PIDS[@]}")
    [[ $side == ref ]] || log "berth before the pulls: $(mirror_raft)"
    log "$(side_label "$side"): $BENCH_MIRROR_PULLS concurrent pulls of the uncached image over $# servers"
    mirror_pulls "$side" "$repo" "$@"
    seconds=$MIRROR_PULLS_SECONDS
    MIRROR_FIGURES[${side}_usage]=$MIRROR_PULLS_USAGE
    if [[ $side == cand ]]; then
        wait_until "$BENCH_MIRROR_TIMEOUT" "every node to report the image's blobs cached" mirror_cached_everywhere ||
            log "warning: not every node reports the image cached"
    fi
    mirror_log_settle
    counts=$(mirror_log_counts "$mark")
    MIRROR_FIGURES[${side}_writes]=$(paste -d' ' <(printf '%s\n' "$writes") \
        <(mirror_write_bytes "${MIRROR_USAGE_PIDS[@]}") |
        awk -v b="$MIRROR_IMAGE_BYTES" '{ printf "%s%.2f", (NR > 1) ? "/" : "", ($2 - $1) / b }')
    MIRROR_FIGURES[${side}_time]=$seconds
    MIRROR_FIGURES[${side}_counts]=$counts
    MIRROR_FIGURES[${side}_stored]=$(mirror_stored "$side")
    log "$(side_label "$side"): last pull done after $(fmt "$seconds") s; upstream served (blob GETs, bytes, blob HEADs, manifest GETs, manifest HEADs, other): $counts"
    log "$(side_label "$side"): bytes in the servers' data dirs after the pulls, each and in all: ${MIRROR_FIGURES[${side}_stored]}"
    log "$(side_label "$side"): bytes each server (and last, the upstream) wrote from the release until the upstream fell quiet (write_bytes of /proc/PID/io), in images: ${MIRROR_FIGURES[${side}_writes]}"
    log "$(side_label "$side"): meanwhile CPU busy %, iowait %, CPU s of the servers and the upstream, MB written, disk busy %, machine CPU s: ${MIRROR_FIGURES[${side}_usage]}"
    if [[ $side == cand ]]; then
        log "berth after the pulls: $(mirror_raft)"
        for ((i = 0; i < CLUSTER_NODES; i++)); do
            s=$(mirror_status "$i")
            statuses+=("$s")
            log "node $((i + 1)) GET /_berth/mirrors: $s"
            bytes=$((bytes + $(jq -r .upstream_bytes <<<"$s")))
            hits=$((hits + $(jq -r .hits <<<"$s")))
            misses=$((misses + $(jq -r .misses <<<"$s")))
        done
        MIRROR_FIGURES[cand_own]=$bytes
        MIRROR_FIGURES[cand_own_nodes]=$(for s in "${statuses[@]}"; do jq -r .upstream_bytes <<<"$s"; done |
            awk -v b="$MIRROR_IMAGE_BYTES" '{ printf "%s%.2f", (NR > 1) ? "/" : "", $1 / b }')
        MIRROR_FIGURES[cand_hits]="$hits/$misses"
    fi
}

# mirror_cached_runs : the image pushed to bench/pushed through node 1, then BENCH_REPEAT
# pulls of it and of the cached image from node 1, the order alternating.
mirror_cached_runs() {
    local url=${CLUSTER_URL[0]} run what seconds mark counts
    mirror_push "$url" bench/pushed
    sync
    mark=$(mirror_log_mark)
    for ((run = 1; run <= BENCH_REPEAT; run++)); do
        for what in $(if ((run % 2)); then printf 'cached pushed'; else printf 'pushed cached'; fi); do
            if [[ $what == cached ]]; then
                seconds=$(mirror_timed_pull "$url" "$MIRROR_NAME/$MIRROR_REPO")
                samples_add cached cand "$(mb_per_s "$MIRROR_IMAGE_BYTES" "$seconds")"
            else
                seconds=$(mirror_timed_pull "$url" bench/pushed)
                samples_add cached ref "$(mb_per_s "$MIRROR_IMAGE_BYTES" "$seconds")"
            fi
            log "run $run, pull from node 1 of the $what image: $(fmt "$seconds") s ($(fmt "$(mb_per_s "$MIRROR_IMAGE_BYTES" "$seconds")") MB/s)"
        done
    done
    counts=$(mirror_log_counts "$mark")
    log "upstream served during the cached pulls (blob GETs, bytes, blob HEADs, manifest GETs, manifest HEADs, other): $counts"
    MIRROR_FIGURES[cached_counts]=$counts
}

# --- the table

# mirror_sum A/B/... : the sum of slash-separated numbers.
mirror_sum() {
    tr / '\n' <<<"$1" | awk '{ s += $1 } END { printf "%.6f\n", s }'
}

mirror_record() {
    local image n=$BENCH_MIRROR_PULLS ref_gets ref_bytes cand_gets cand_bytes ref_x cand_x u
    image=$(size_label "$BENCH_SIZE_MIB")
    read -r ref_gets ref_bytes _ <<<"${MIRROR_FIGURES[ref_counts]}"
    read -r cand_gets cand_bytes _ <<<"${MIRROR_FIGURES[cand_counts]}"
    ref_x=$(calc "$ref_bytes / $MIRROR_IMAGE_BYTES")
    cand_x=$(calc "$cand_bytes / $MIRROR_IMAGE_BYTES")
    record "mirror: upstream blob bytes for $n concurrent pulls of an uncached $image image over 3 nodes, Distribution proxies vs berth" \
        "x image" "$ref_x" "$cand_x" 'max=1'
    record "  the same: upstream blob GETs" requests "$ref_gets" "$cand_gets" report
    record "  berth's own count, GET /_berth/mirrors upstream_bytes, nodes ${MIRROR_FIGURES[cand_own_nodes]}; hits/misses ${MIRROR_FIGURES[cand_hits]}" \
        "x image" - "$(calc "${MIRROR_FIGURES[cand_own]} / $MIRROR_IMAGE_BYTES")" report
    record "mirror: pulls straight from the upstream, one (median of $BENCH_REPEAT) vs $n at once (last done)" s \
        "${MIRROR_FIGURES[direct]}" "${MIRROR_FIGURES[direct_all]}" report
    record "mirror: last of $n concurrent uncached pulls done, Distribution proxies vs berth" s \
        "${MIRROR_FIGURES[ref_time]}" "${MIRROR_FIGURES[cand_time]}" report
    record "mirror: last of $n concurrent uncached pulls over one direct pull ($(fmt "${MIRROR_FIGURES[direct]}") s), Distribution proxies vs berth" \
        "x direct pull" "$(calc "${MIRROR_FIGURES[ref_time]} / ${MIRROR_FIGURES[direct]}")" \
        "$(calc "${MIRROR_FIGURES[cand_time]} / ${MIRROR_FIGURES[direct]}")" 'max=1.5'
    for u in 1:'machine CPU busy, of all cores' 6:'CPU time, whole machine' 3:'CPU time of the 3 servers and the upstream' \
        4:'disk writes' 5:'disk busy'; do
        record "  during the $n pulls: ${u#*:}" "$(case ${u%%:*} in 1 | 5) printf '%%' ;; 3 | 6) printf s ;; 4) printf MB ;; esac)" \
            "$(cut -d' ' -f"${u%%:*}" <<<"${MIRROR_FIGURES[ref_usage]}")" \
            "$(cut -d' ' -f"${u%%:*}" <<<"${MIRROR_FIGURES[cand_usage]}")" report
    done
    record "  after the pulls: bytes stored by the 3 servers" "x image" \
        "$(calc "${MIRROR_FIGURES[ref_stored]#* } / $MIRROR_IMAGE_BYTES")" \
        "$(calc "${MIRROR_FIGURES[cand_stored]#* } / $MIRROR_IMAGE_BYTES")" report
    record "  from the release until the upstream fell quiet: bytes written by each server, berth nodes ${MIRROR_FIGURES[cand_writes]%/*}" \
        "x image" "$(mirror_sum "${MIRROR_FIGURES[ref_writes]%/*}")" "$(mirror_sum "${MIRROR_FIGURES[cand_writes]%/*}")" report
    record "mirror: pull of the $image image from node 1, pushed vs cached through the mirror, median of $BENCH_REPEAT" MB/s \
        "$(samples_median cached ref)" "$(samples_median cached cand)" 'ratio>=0.9'
}

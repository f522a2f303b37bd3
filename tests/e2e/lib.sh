#!/usr/bin/env bash
# Shared functions for the berth end-to-end tests. Source this file; do not run it.
#
# Environment:
#   E2E_REGISTRY         registry under test: berth (default) or distribution
#                        (Debian's CNCF Distribution, used to validate the tests themselves)
#   BERTH_BIN            berth binary (default /var/cache/berth/target/debug/berth)
#   E2E_STARTUP_TIMEOUT  seconds to wait for a registry to answer /v2/ (default 30)
#   E2E_CLIENT_TIMEOUT   seconds any one client command may take (default 300)
#   E2E_SEED             seed of the random image data (default: random, printed)
#   E2E_KEEP=1           keep the work directory for inspection
#
# Conventions: scenario functions run under `run_scenario`, in a subshell with errexit,
# their own cleanup list and their own directory ($SCENARIO_DIR); they fail through
# `die` or any failing command, and the first reason is what gets reported.

E2E_REGISTRY=${E2E_REGISTRY:-berth}
BERTH_BIN=${BERTH_BIN:-/var/cache/berth/target/debug/berth}
E2E_STARTUP_TIMEOUT=${E2E_STARTUP_TIMEOUT:-30}
E2E_CLIENT_TIMEOUT=${E2E_CLIENT_TIMEOUT:-300}
E2E_SEED=${E2E_SEED:-$RANDOM$RANDOM}
E2E_EPOCH=1970-01-01T00:00:00Z

E2E_PASSED=0
E2E_FAILED=0
E2E_DEFERRED=()
E2E_WORK=
SCENARIO_DIR=
SCENARIOS=() # the names run_scenarios runs by default; set by each script

REGISTRY_PID=
REGISTRY_PORT=
REGISTRY_HOST=
REGISTRY_DATA=
REGISTRY_LOG=

# ---------------------------------------------------------------- messages and cleanup

note() { printf '# %s\n' "$*"; }

# Extra options for berth serve, set by a scenario before registry_start.
BERTH_ARGS=()

# die MESSAGE: records the failure reason (the first one wins) and exits the current shell.
die() {
    if [[ -n $SCENARIO_DIR && ! -e $SCENARIO_DIR/reason ]]; then
        printf '%s\n' "$*" >"$SCENARIO_DIR/reason"
    fi
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# defer COMMAND [ARGS...]: runs the command at exit of the current (sub)shell, last first.
defer() {
    E2E_DEFERRED+=("$(printf '%q ' "$@")")
}

run_deferred() {
    local i
    for ((i = ${#E2E_DEFERRED[@]} - 1; i >= 0; i--)); do
        eval "${E2E_DEFERRED[i]}" || true
    done
    E2E_DEFERRED=()
}

install_exit_trap() {
    trap run_deferred EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# e2e_init: creates the work directory ($E2E_WORK) and installs the exit trap.
e2e_init() {
    E2E_WORK=$(mktemp -d "${TMPDIR:-/tmp}/berth-e2e.XXXXXX")
    if [[ ${E2E_KEEP:-0} == 1 ]]; then
        note "work directory kept: $E2E_WORK"
    else
        defer rm -rf "$E2E_WORK"
    fi
    install_exit_trap
    note "registry: $E2E_REGISTRY, seed: $E2E_SEED"
}

# ---------------------------------------------------------------- pass / fail bookkeeping

pass() {
    E2E_PASSED=$((E2E_PASSED + 1))
    printf 'ok %s\n' "$1"
}

fail() {
    E2E_FAILED=$((E2E_FAILED + 1))
    printf 'FAIL %s: %s\n' "$1" "$2"
}

# summary LABEL: prints the closing line; returns non-zero when anything failed.
summary() {
    printf 'e2e %s: %d passed, %d failed\n' "$1" "$E2E_PASSED" "$E2E_FAILED"
    ((E2E_FAILED == 0))
}

scenario_error() {
    local status=$1 command=$2 where=$3
    die "command failed (exit $status) at $where: $command"
}

# scenario_shell COMMAND [ARGS...]: runs COMMAND in $SCENARIO_DIR in a subshell with
# errexit, an ERR trap that records the failing command, and a cleanup list of its own.
scenario_shell() (
    set -eE -o pipefail
    shopt -s inherit_errexit
    E2E_DEFERRED=()
    install_exit_trap
    trap 'scenario_error $? "$BASH_COMMAND" "${BASH_SOURCE[0]##*/}:$LINENO"' ERR
    cd "$SCENARIO_DIR"
    "$@"
)

# run_scenario NAME COMMAND [ARGS...]: runs one independent scenario and records the result.
# On failure the tail of its log is shown, indented, before the FAIL line.
run_scenario() {
    local name=$1 dir=$E2E_WORK/$1 status
    shift
    mkdir -p "$dir"
    SCENARIO_DIR=$dir
    set +e # errexit must not be ignored inside the scenario, so no `if` or `||` here
    scenario_shell "$@" >"$dir/log" 2>&1
    status=$?
    set -e
    SCENARIO_DIR=
    if ((status == 0)); then
        pass "$name"
    else
        tail -n 15 "$dir/log" | sed 's/^/    /'
        fail "$name" "$(cat "$dir/reason" 2>/dev/null || echo "exit status $status")"
    fi
}

# run_scenarios [NAME...]: runs scenario_NAME (dashes become underscores) for each NAME,
# by default for each name in the calling script's SCENARIOS array.
run_scenarios() {
    local name function
    (($# > 0)) || set -- "${SCENARIOS[@]}"
    for name in "$@"; do
        function=scenario_${name//-/_}
        if declare -F "$function" >/dev/null; then
            run_scenario "$name" "$function"
        else
            fail "$name" "no such scenario (known: ${SCENARIOS[*]})"
        fi
    done
}

# ---------------------------------------------------------------- assertions

assert_eq() {
    local what=$1 expected=$2 actual=$3
    [[ $expected == "$actual" ]] || die "$what: expected '$expected', got '$actual'"
}

assert_digest() {
    local what=$1 value=$2
    [[ $value =~ ^sha256:[0-9a-f]{64}$ ]] || die "$what: not a sha256 digest: '$value'"
}

# ---------------------------------------------------------------- waiting

# wait_until SECONDS DESCRIPTION COMMAND [ARGS...]: polls COMMAND every 0.2 s until it
# succeeds, for at most SECONDS (counted both in polls and in wall-clock time).
wait_until() {
    local seconds=$1 what=$2 i deadline
    shift 2
    deadline=$((SECONDS + seconds))
    for ((i = 0; i < seconds * 5 && SECONDS <= deadline; i++)); do
        if "$@"; then
            return 0
        fi
        sleep 0.2
    done
    printf 'timed out after %ss waiting for %s\n' "$seconds" "$what" >&2
    return 1
}

pid_alive() {
    kill -0 "$1" 2>/dev/null
}

pid_gone() {
    ! pid_alive "$1"
}

# bounded COMMAND [ARGS...]: runs a client command with a time limit.
bounded() {
    timeout --foreground --kill-after=10 "$E2E_CLIENT_TIMEOUT" "$@"
}

# stop_pid PID [SIGNAL]: signals a process we started and reaps it; escalates to
# SIGKILL after 10 s.
stop_pid() {
    local pid=$1 signal=${2:-TERM}
    pid_alive "$pid" || return 0
    kill -s "$signal" "$pid" 2>/dev/null || true
    if ! wait_until 10 "pid $pid to exit" pid_gone "$pid"; then
        kill -s KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# ---------------------------------------------------------------- ports and registry

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# free_port: prints a loopback port nobody listens on, below the ephemeral range (so no
# outgoing connection holds it).
free_port() {
    local i port ephemeral_start=32768
    if [[ -r /proc/sys/net/ipv4/ip_local_port_range ]]; then
        read -r ephemeral_start _ </proc/sys/net/ipv4/ip_local_port_range
    fi
    ((ephemeral_start > 11000)) || ephemeral_start=65536
    for ((i = 0; i < 100; i++)); do
        port=$((10000 + RANDOM % (ephemeral_start - 10000)))
        if ! port_in_use "$port"; then
            printf '%s\n' "$port"
            return 0
        fi
    done
    echo "no free port found" >&2
    return 1
}

# distribution_config DATA_DIR PORT: CNCF Distribution's configuration. The fixed
# http.secret signs upload state, so an upload survives a restart (restart.sh).
distribution_config() {
    local data_dir=$1 port=$2
    cat <<EOF
version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $data_dir
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
  secret: berth-e2e-fixed-secret
EOF
}

# registry_launch DATA_DIR PORT LOG: the one place that knows how to run each registry.
# Starts it in the background and sets REGISTRY_PID. berth gets the options in the
# BERTH_ARGS array too, when a scenario sets it.
registry_launch() {
    local data_dir=$1 port=$2 log=$3
    case $E2E_REGISTRY in
    berth)
        "$BERTH_BIN" serve --plain-http --data-dir "$data_dir" --listen "127.0.0.1:$port" \
            "${BERTH_ARGS[@]}" >>"$log" 2>&1 &
        ;;
    distribution)
        distribution_config "$data_dir" "$port" >"$data_dir.distribution.yml"
        docker-registry serve "$data_dir.distribution.yml" >>"$log" 2>&1 &
        ;;
    *)
        echo "unknown E2E_REGISTRY '$E2E_REGISTRY' (berth or distribution)" >&2
        return 1
        ;;
    esac
    REGISTRY_PID=$!
}

# registry_answers: /v2/ answers 200, or 401 when the registry requires sign-in.
registry_answers() {
    [[ $(http_status GET "http://$REGISTRY_HOST/v2/" --max-time 2 2>/dev/null) =~ ^(200|401)$ ]]
}

registry_answers_or_exited() {
    pid_gone "$REGISTRY_PID" || registry_answers
}

# registry_wait_ready: /v2/ answers and, half a second later, our process still runs (so
# the answer did not come from another server that got the port first).
registry_wait_ready() {
    if wait_until "$E2E_STARTUP_TIMEOUT" "$E2E_REGISTRY to answer /v2/" registry_answers_or_exited &&
        sleep 0.5 && pid_alive "$REGISTRY_PID"; then
        return 0
    fi
    echo "$E2E_REGISTRY did not start on $REGISTRY_HOST; log tail:" >&2
    tail -n 20 "$REGISTRY_LOG" >&2
    return 1
}

# registry_start_on DATA_DIR PORT: one attempt to start the registry and wait for /v2/.
registry_start_on() {
    REGISTRY_PID=
    REGISTRY_DATA=$1
    REGISTRY_PORT=$2
    REGISTRY_HOST=127.0.0.1:$REGISTRY_PORT
    REGISTRY_LOG=$REGISTRY_DATA.log
    mkdir -p "$REGISTRY_DATA" || return 1
    if [[ $E2E_REGISTRY == berth && ! -x $BERTH_BIN ]]; then
        echo "berth binary not found: $BERTH_BIN (set BERTH_BIN or E2E_REGISTRY=distribution)" >&2
        return 1
    fi
    registry_launch "$REGISTRY_DATA" "$REGISTRY_PORT" "$REGISTRY_LOG" || return 1
    registry_wait_ready
}

# registry_start DATA_DIR [PORT]: starts the registry and waits for /v2/. Sets
# REGISTRY_PID, REGISTRY_PORT, REGISTRY_HOST (127.0.0.1:PORT), REGISTRY_DATA, REGISTRY_LOG.
# Restarting on the same data directory and port is registry_start again. Without PORT,
# a registry that exits at startup (its free port taken meanwhile) gets two more ports.
registry_start() {
    local data=$1 port=${2:-} attempt
    if [[ -n $port ]]; then
        registry_start_on "$data" "$port"
        return
    fi
    for attempt in 1 2 3; do
        port=$(free_port) || return 1
        if registry_start_on "$data" "$port"; then
            return 0
        fi
        if [[ -z $REGISTRY_PID ]] || pid_alive "$REGISTRY_PID"; then
            return 1 # not launched, or running but not answering: no retry
        fi
        echo "start attempt $attempt on port $port failed" >&2
    done
    return 1
}

# registry_stop [SIGNAL]: stops the registry we started (SIGTERM by default, KILL for a crash).
registry_stop() {
    [[ -n $REGISTRY_PID ]] || return 0
    stop_pid "$REGISTRY_PID" "${1:-TERM}"
    REGISTRY_PID=
}

# ---------------------------------------------------------------- test images (offline)

sha256_hex() {
    sha256sum | cut -d' ' -f1
}

# random_bytes SIZE SEED: SIZE reproducible, incompressible bytes derived from SEED.
random_bytes() {
    local size=$1 key
    key=$(printf '%s' "$E2E_SEED/$2" | sha256_hex | cut -c1-32)
    { openssl enc -aes-128-ctr -K "$key" -iv 0 -nosalt </dev/zero 2>/dev/null || true; } |
        head -c "$size"
}

# make_image LAYOUT TAG ARCH [LAYERS] [LAYER_SIZE]: adds an image with LAYERS random
# layers (one file each) to the OCI layout LAYOUT (created if missing).
make_image() {
    local layout=$1 tag=$2 arch=$3 layers=${4:-2} size=${5:-262144} i
    [[ -d $layout ]] || umoci init --layout "$layout"
    umoci new --image "$layout:$tag"
    umoci config --image "$layout:$tag" --no-history --created "$E2E_EPOCH" \
        --os linux --architecture "$arch" --config.cmd /bin/true
    for ((i = 1; i <= layers; i++)); do
        random_bytes "$size" "$layout/$tag/$i" >"$layout.layer"
        umoci insert --image "$layout:$tag" --history.created "$E2E_EPOCH" \
            "$layout.layer" "/data/$tag-$i"
    done
    rm -f "$layout.layer"
}

layout_blob() {
    local layout=$1 digest=$2
    cat "$layout/blobs/sha256/${digest#sha256:}"
}

# layout_descriptor LAYOUT TAG: the descriptor of TAG in LAYOUT's index.json.
layout_descriptor() {
    local layout=$1 tag=$2
    jq -ce --arg tag "$tag" \
        '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $tag)' \
        "$layout/index.json"
}

layout_digest() {
    layout_descriptor "$1" "$2" | jq -r .digest
}

# image_config_digest LAYOUT TAG: the config digest (the image ID for podman and docker).
image_config_digest() {
    layout_blob "$1" "$(layout_digest "$1" "$2")" | jq -r .config.digest
}

# layout_add_blob LAYOUT FILE: stores FILE as a blob and prints its digest.
layout_add_blob() {
    local layout=$1 file=$2 hex
    hex=$(sha256_hex <"$file")
    cp "$file" "$layout/blobs/sha256/$hex"
    printf 'sha256:%s\n' "$hex"
}

# make_index LAYOUT TAG CHILD_TAG...: writes an OCI image index over the child images,
# with their platforms taken from their configs, and tags it TAG in LAYOUT.
make_index() {
    local layout=$1 tag=$2 child descriptor platform digest
    shift 2
    for child in "$@"; do
        descriptor=$(layout_descriptor "$layout" "$child")
        platform=$(layout_blob "$layout" "$(image_config_digest "$layout" "$child")" |
            jq -c '{architecture, os}')
        jq -c --argjson platform "$platform" \
            '{mediaType, digest, size, platform: $platform}' <<<"$descriptor"
    done | jq -sc '{schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests: .}' \
        >"$layout.index"
    digest=$(layout_add_blob "$layout" "$layout.index")
    jq --arg digest "$digest" --arg tag "$tag" --argjson size "$(wc -c <"$layout.index")" \
        '.manifests += [{mediaType: "application/vnd.oci.image.index.v1+json",
            digest: $digest, size: $size,
            annotations: {"org.opencontainers.image.ref.name": $tag}}]' \
        "$layout/index.json" >"$layout.index.json"
    mv "$layout.index.json" "$layout/index.json"
    rm -f "$layout.index"
    umoci gc --layout "$layout"
}

# make_multiarch LAYOUT TAG: an index TAG over fresh TAG-amd64 and TAG-arm64 images.
make_multiarch() {
    local layout=$1 tag=$2 arch
    for arch in amd64 arm64; do
        make_image "$layout" "$tag-$arch" "$arch"
    done
    make_index "$layout" "$tag" "$tag-amd64" "$tag-arm64"
}

# oci_archive LAYOUT ARCHIVE: packs a layout as an oci-archive (podman load, ctr import).
oci_archive() {
    tar -C "$1" -cf "$2" .
}

# layout_check_blob LAYOUT DIGEST: the blob is in LAYOUT and its sha256 matches.
layout_check_blob() {
    local layout=$1 digest=$2 file
    file=$layout/blobs/sha256/${digest#sha256:}
    [[ -f $file ]] || die "$layout: blob $digest missing"
    assert_eq "$layout: sha256 of blob" "$digest" "sha256:$(sha256_hex <"$file")"
}

# image_blobs LAYOUT DIGEST: DIGEST and, read from LAYOUT, every digest it references,
# recursively (index -> manifests -> config and layers).
image_blobs() {
    local layout=$1 digest=$2 child
    printf '%s\n' "$digest"
    for child in $(layout_blob "$layout" "$digest" | jq -r '.manifests[]?.digest'); do
        image_blobs "$layout" "$child"
    done
    layout_blob "$layout" "$digest" | jq -r '(.config.digest // empty), .layers[]?.digest'
}

# layout_check_image LAYOUT DIGEST: the manifest DIGEST (an image or an index) and every
# blob it references are in LAYOUT with matching sha256 sums.
layout_check_image() {
    local layout=$1 digest
    for digest in $(image_blobs "$layout" "$2"); do
        layout_check_blob "$layout" "$digest"
    done
}

# ---------------------------------------------------------------- registry access

MANIFEST_ACCEPT=application/vnd.oci.image.manifest.v1+json
MANIFEST_ACCEPT+=,application/vnd.oci.image.index.v1+json
MANIFEST_ACCEPT+=,application/vnd.docker.distribution.manifest.v2+json
MANIFEST_ACCEPT+=,application/vnd.docker.distribution.manifest.list.v2+json

# curl_method METHOD: the curl option for METHOD (HEAD needs -I, or curl waits for a body).
curl_method() {
    if [[ $1 == HEAD ]]; then
        printf '%s\n' -I
    else
        printf '%s\n' "-X$1"
    fi
}

# http_status METHOD URL [CURL ARGS...]: prints the status code of one request.
http_status() {
    local method=$1 url=$2
    shift 2
    curl -sS -o /dev/null -w '%{http_code}' --max-time 30 "$(curl_method "$method")" "$@" "$url"
}

# skopeo_push SOURCE REPO:TAG [OPTIONS...] and skopeo_pull REPO:TAG DESTINATION [OPTIONS...]
# copy to and from the registry under test over plain HTTP.
skopeo_push() {
    local source=$1 destination=$2
    shift 2
    bounded skopeo copy --dest-tls-verify=false "$@" "$source" "docker://$REGISTRY_HOST/$destination"
}

skopeo_pull() {
    local source=$1 destination=$2
    shift 2
    bounded skopeo copy --src-tls-verify=false "$@" "docker://$REGISTRY_HOST/$source" "$destination"
}

# http_request METHOD URL [CURL ARGS...]: one request; prints the status code and keeps
# the response headers and body in $SCENARIO_DIR/response.{headers,body}.
http_request() {
    local method=$1 url=$2
    shift 2
    curl -sS --max-time 60 "$(curl_method "$method")" -D "$SCENARIO_DIR/response.headers" \
        -o "$SCENARIO_DIR/response.body" -w '%{http_code}' "$@" "$url"
}

# response_header NAME: a header of the last http_request response.
response_header() {
    tr -d '\r' <"$SCENARIO_DIR/response.headers" |
        awk -v name="$(tr '[:upper:]' '[:lower:]' <<<"$1"):" \
            'tolower($1) == name { sub(/^[^:]*: */, ""); value = $0 } END { print value }'
}

# next_upload_url CURRENT: the upload URL to use next: the Location of the last response
# (made absolute), or CURRENT when there was none.
next_upload_url() {
    local location
    location=$(response_header Location)
    if [[ -n $location ]]; then
        registry_url "$location"
    else
        printf '%s\n' "$1"
    fi
}

# registry_url PATH_OR_URL: an absolute URL for a Location the registry handed out.
registry_url() {
    case $1 in
    http://* | https://*) printf '%s\n' "$1" ;;
    *) printf 'http://%s%s\n' "$REGISTRY_HOST" "$1" ;;
    esac
}

# manifest_status REPO REFERENCE: the status of a manifest HEAD.
manifest_status() {
    http_status HEAD "http://$REGISTRY_HOST/v2/$1/manifests/$2" -H "Accept: $MANIFEST_ACCEPT"
}

# manifest_digest REPO REFERENCE: the Docker-Content-Digest the registry answers with.
manifest_digest() {
    curl -fsS --max-time 30 -I -H "Accept: $MANIFEST_ACCEPT" \
        "http://$REGISTRY_HOST/v2/$1/manifests/$2" |
        tr -d '\r' | awk 'tolower($1) == "docker-content-digest:" { print $2 }'
}

# dir_check_image DIR DIGEST: a `skopeo copy … dir:DIR` holds the manifest DIGEST (the same
# bytes) and its config and every layer, each matching its sha256.
dir_check_image() {
    local dir=$1 digest=$2 blob file
    [[ -f $dir/manifest.json ]] || die "$dir: no manifest.json"
    assert_eq "$dir: sha256 of the manifest" "$digest" "sha256:$(sha256_hex <"$dir/manifest.json")"
    for blob in $(jq -r '.config.digest, .layers[].digest' "$dir/manifest.json"); do
        file=$dir/${blob#sha256:}
        [[ -f $file ]] || die "$dir: blob $blob missing"
        assert_eq "$dir: sha256 of blob" "$blob" "sha256:$(sha256_hex <"$file")"
    done
}

# ---------------------------------------------------------------- docker and podman

# make_rootfs DIR: a few random files to `docker import`.
make_rootfs() {
    local dir=$1 i
    mkdir -p "$dir/data"
    for i in 1 2 3; do
        random_bytes 200000 "$dir/$i" >"$dir/data/file$i"
    done
}

# docker_image REF: a fresh image of random layers, imported and tagged REF.
docker_image() {
    local ref=$1 dir
    dir=$(mktemp -d "$SCENARIO_DIR/rootfs.XXXXXX")
    make_rootfs "$dir"
    tar -C "$dir" -c . | bounded docker import - "$ref" >/dev/null
}

# docker_push REF: pushes and prints the manifest digest docker reports.
docker_push() {
    bounded docker push "$1" | tee /dev/stderr |
        sed -n 's/.*digest: \(sha256:[0-9a-f]\{64\}\).*/\1/p'
}

# docker_remove REF...: removes our own tags (and digest references) only.
docker_remove() {
    docker image rm "$@" >/dev/null 2>&1 || true
}

# podman_cmd ARGS...: podman with its storage in $SCENARIO_DIR/podman. Podman refuses a
# runroot longer than 50 characters: set PODMAN_RUNROOT to a shorter one if need be.
podman_cmd() {
    bounded podman --root "$SCENARIO_DIR/podman/root" \
        --runroot "${PODMAN_RUNROOT:-$SCENARIO_DIR/podman/run}" \
        --storage-driver vfs --cgroup-manager cgroupfs --events-backend file "$@"
}

# ---------------------------------------------------------------- ports of several nodes

# new_port: sets NEW_PORT to a free port not handed out before (the caller
# keeps USED_PORTS, and NODE_PORT for node_host).
new_port() {
    local i port
    for ((i = 0; i < 20; i++)); do
        port=$(free_port) || return 1
        if [[ " ${USED_PORTS[*]} " != *" $port "* ]]; then
            USED_PORTS+=("$port")
            NEW_PORT=$port
            return 0
        fi
    done
    echo "no unused free port found" >&2
    return 1
}

node_host() {
    printf '127.0.0.1:%s\n' "${NODE_PORT[$1]}"
}

# ---------------------------------------------------------------- TLS

# make_certs DIR: a CA, and a certificate for 127.0.0.1 and localhost it signed.
make_certs() {
    local dir=$1
    mkdir -p "$dir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=berth e2e CA" -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj "/CN=berth e2e" -keyout "$dir/node.key" -out "$dir/node.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$dir/san.ext"
    openssl x509 -req -in "$dir/node.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
        -CAcreateserial -days 2 -extfile "$dir/san.ext" -out "$dir/node.crt" 2>/dev/null
    # skopeo and podman read a directory: *.crt files are CAs to trust.
    mkdir -p "$dir/trust" && cp "$dir/ca.crt" "$dir/trust/ca.crt"
}

# ---------------------------------------------------------------- containerd

CTR_SOCKET=

containerd_config() {
    local dir=$1
    cat <<EOF
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "$dir/containerd.sock"

[ttrpc]
  address = "$dir/containerd.ttrpc.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/opt"
EOF
}

ctr_cmd() {
    CONTAINERD_SNAPSHOTTER=native bounded ctr --address "$CTR_SOCKET" --namespace e2e "$@"
}

ctr_answers_or_exited() {
    pid_gone "$1" || ctr_cmd version >/dev/null 2>&1
}

# containerd_start: a private containerd in $SCENARIO_DIR/containerd, stopped on exit.
containerd_start() {
    local dir=$SCENARIO_DIR/containerd pid
    mkdir -p "$dir"
    containerd_config "$dir" >"$dir/config.toml"
    containerd --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 &
    pid=$!
    defer stop_pid "$pid"
    CTR_SOCKET=$dir/containerd.sock
    if ! wait_until 30 "containerd" ctr_answers_or_exited "$pid" || pid_gone "$pid"; then
        die "containerd did not start: $(tail -n 5 "$dir/containerd.log")"
    fi
}

# ctr_transfer push|pull ARGS...: `ctr images push|pull`, retried once when it fails with a
# gRPC error between ctr and containerd ("rpc error: code = Internal desc = unexpected
# EOF" reading local content, seen under load): that is not the registry's fault.
ctr_transfer() {
    local log=$SCENARIO_DIR/ctr-$1.log status=0
    ctr_cmd images "$@" 2>&1 | tee "$log" || status=$?
    ((status != 0)) || return 0
    if grep -q 'rpc error: code = Internal' "$log"; then
        echo "# containerd-internal error, retrying once"
        status=0
        ctr_cmd images "$@" 2>&1 | tee "$log" || status=$?
    fi
    ((status == 0)) || die "ctr images $1 failed: $(tail -n 1 "$log")"
}

# ctr_image_digest REF: the target digest of a containerd image.
ctr_image_digest() {
    ctr_cmd images ls "name==$1" | awk 'NR == 2 { print $3 }'
}

# ---------------------------------------------------------------- scenario notes

# scenario_note MESSAGE: logs MESSAGE and keeps it for show_notes (figures worth showing
# even when the scenario passes).
scenario_note() {
    note "$*"
    printf '%s\n' "$*" >>"$SCENARIO_DIR/notes"
}

# show_notes NAME: prints the notes scenario NAME kept, as comment lines.
show_notes() {
    local file=$E2E_WORK/$1/notes
    [[ ! -s $file ]] || sed 's/^/# /' "$file"
}

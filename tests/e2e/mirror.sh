#!/usr/bin/env bash
# End-to-end tests of berth's pull-through mirrors with real clients. Two upstreams run
# here: CNCF Distribution over HTTPS with an htpasswd user (mirror `dist`, the default
# mirror) and a berth node with sign-in on, which hands out Bearer tokens (mirror `tok`).
# The berth node under test serves plain HTTP without sign-in and mirrors both.
#   mirror-docker         a private dockerd whose registry-mirrors names berth pulls a
#                         Docker Hub style short name (e2eimg:v1) through the default mirror
#   mirror-containerd     containerd with hosts.toml mirrors (?ns=) pulls from both upstreams
#                         through berth; the mirror status shows both served content
#   mirror-skopeo         skopeo pulls by path prefix (dist/library/...); podman pulls
#                         through a registries.conf mirror location with a path
#   mirror-single-flight  20 concurrent pulls of a fresh image over a three-node cluster:
#                         identical bytes everywhere, and each blob fetched upstream once
#   mirror-mixed          pushes to new local repositories work, also of an image whose
#                         blobs the mirror holds; a push into the mirror's namespace is
#                         refused with "takes no pushes"
#   mirror-upstream-down  Distribution stopped: cached content (by tag past its TTL, and by
#                         digest) is still served; an uncached tag fails at once with 502
#                         UNAVAILABLE naming the upstream. Run it last: Distribution stays down.
#
# Usage: tests/e2e/mirror.sh [SCENARIO...]   (default: all, in order; see SCENARIOS below)
# Environment: see lib.sh.
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$E2E_DIR/lib.sh"

SCENARIOS=(mirror-docker mirror-containerd mirror-skopeo mirror-single-flight mirror-mixed
    mirror-upstream-down)

USER_NAME=mirror
PASSWORD='a long password for the mirror'
DIST_TAG_TTL=2 # seconds: the dist mirror checks a cached tag upstream again after this

CERTS=          # the CA and 127.0.0.1's certificate (make_certs), the htpasswd file
IMAGES=         # an OCI layout with the test images
MIRROR_CONFIG=  # berth's configuration file with the two mirrors
DIST_PID=
DIST_HOST=
DIST_DATA=
DIST_LOG=       # Distribution's output, its access log included
UPSTREAM_PID=   # berth with sign-in on: the token upstream
UPSTREAM_HOST=
UPSTREAM_LOG=

# ---------------------------------------------------------------- processes

# proc_exited PID: the process is gone, or has exited and waits to be reaped (a zombie:
# what a process this shell started looks like to a scenario's subshell once it is dead).
proc_exited() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    stat=${stat##*) }
    [[ ${stat%% *} == Z ]]
}

# proc_stop PID: stops a process this shell started; one that already exited is reaped.
proc_stop() {
    [[ -n $1 ]] || return 0
    if proc_exited "$1"; then
        wait "$1" 2>/dev/null || true
        return 0
    fi
    stop_pid "$1"
}

# umount_under DIR: lazily unmounts whatever is still mounted at or below DIR.
umount_under() {
    local dir=$1 mount_point
    awk -v dir="$dir" 'index($5, dir "/") == 1 || $5 == dir { print $5 }' /proc/self/mountinfo |
        sort -r | while read -r mount_point; do
        umount -l "$mount_point" 2>/dev/null || true
    done
}

# ---------------------------------------------------------------- the upstreams

dist_config() {
    local port=$1
    cat <<EOF
version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $DIST_DATA
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
  secret: berth-e2e-fixed-secret
  tls:
    certificate: $CERTS/node.crt
    key: $CERTS/node.key
auth:
  htpasswd:
    realm: berth-e2e
    path: $CERTS/htpasswd
EOF
}

dist_answers_or_exited() {
    proc_exited "$DIST_PID" ||
        [[ $(http_status GET "https://$DIST_HOST/v2/" --cacert "$CERTS/ca.crt" --max-time 2 \
            2>/dev/null) == 401 ]]
}

# dist_start: Distribution over HTTPS with basic authentication, its access log on.
dist_start() {
    local attempt port
    DIST_DATA=$E2E_WORK/distribution
    DIST_LOG=$DIST_DATA.log
    mkdir -p "$DIST_DATA"
    for attempt in 1 2 3; do
        port=$(free_port) || return 1
        DIST_HOST=127.0.0.1:$port
        dist_config "$port" >"$DIST_DATA.yml"
        docker-registry serve "$DIST_DATA.yml" >>"$DIST_LOG" 2>&1 &
        DIST_PID=$!
        if wait_until "$E2E_STARTUP_TIMEOUT" "Distribution to answer" dist_answers_or_exited &&
            sleep 0.5 && ! proc_exited "$DIST_PID"; then
            return 0
        fi
        proc_stop "$DIST_PID"
        echo "Distribution start attempt $attempt on port $port failed" >&2
    done
    tail -n 10 "$DIST_LOG" >&2
    return 1
}

upstream_answers_or_exited() {
    proc_exited "$UPSTREAM_PID" ||
        [[ $(http_status GET "http://$UPSTREAM_HOST/v2/" --max-time 2 2>/dev/null) == 401 ]]
}

# upstream_start: berth with sign-in on (Bearer tokens), plain HTTP.
upstream_start() {
    local attempt port data=$E2E_WORK/upstream
    UPSTREAM_LOG=$data.log
    for attempt in 1 2 3; do
        port=$(free_port) || return 1
        UPSTREAM_HOST=127.0.0.1:$port
        "$BERTH_BIN" serve --plain-http --data-dir "$data" --listen "$UPSTREAM_HOST" \
            --htpasswd "$CERTS/htpasswd" --admins "$USER_NAME" >>"$UPSTREAM_LOG" 2>&1 &
        UPSTREAM_PID=$!
        if wait_until "$E2E_STARTUP_TIMEOUT" "the berth upstream to answer" \
            upstream_answers_or_exited && sleep 0.5 && ! proc_exited "$UPSTREAM_PID"; then
            return 0
        fi
        proc_stop "$UPSTREAM_PID"
        echo "berth upstream start attempt $attempt on port $port failed" >&2
    done
    tail -n 10 "$UPSTREAM_LOG" >&2
    return 1
}

# need_dist: Distribution still runs (mirror-upstream-down stops it for good).
need_dist() {
    ! proc_exited "$DIST_PID" || die "Distribution is down (mirror-upstream-down stops it: run that last)"
}

upstreams_stop() {
    proc_stop "$DIST_PID"
    proc_stop "$UPSTREAM_PID"
}

# dist_push TAG REPO:TAG: copies the layout image TAG into Distribution.
dist_push() {
    bounded skopeo copy --dest-creds "$USER_NAME:$PASSWORD" --dest-cert-dir "$CERTS/trust" \
        "oci:$IMAGES:$1" "docker://$DIST_HOST/$2"
}

upstream_push() {
    bounded skopeo copy --dest-creds "$USER_NAME:$PASSWORD" --dest-tls-verify=false \
        "oci:$IMAGES:$1" "docker://$UPSTREAM_HOST/$2"
}

mirror_config() {
    cat <<EOF
mirrors:
  - name: dist
    url: https://$DIST_HOST
    ca: $CERTS/ca.crt
    credentials-file: $CERTS/credentials
    default: true
    anonymous: true
    tag-ttl: $DIST_TAG_TTL
  - name: tok
    url: http://$UPSTREAM_HOST
    credentials-file: $CERTS/credentials
    anonymous: true
EOF
}

# ---------------------------------------------------------------- mirror status

# mirror_status [HOST]: `berth mirror status --json` of the node (the mirror node by default).
mirror_status() {
    bounded "$BERTH_BIN" mirror status --json --node "http://${1:-$REGISTRY_HOST}"
}

# mirror_field NAME FIELD [HOST]: one figure of mirror NAME's status.
mirror_field() {
    mirror_status "${3:-}" | jq -er --arg name "$1" --arg field "$2" \
        '.[] | select(.name == $name) | .[$field]'
}

# mirror_requests NAME: hits + misses of mirror NAME on the mirror node.
mirror_requests() {
    mirror_status | jq -er --arg name "$1" '.[] | select(.name == $name) | .hits + .misses'
}

# ---------------------------------------------------------------- mirror-docker

DOCKERD_SOCKET=

dockerd_answers_or_exited() {
    proc_exited "$1" ||
        timeout 5 docker --host "unix://$DOCKERD_SOCKET" version --format '{{.Server.Version}}' \
            >/dev/null 2>&1
}

# private_docker ARGS...: the docker CLI against the private daemon, with its own config.
private_docker() {
    DOCKER_CONFIG=$SCENARIO_DIR/docker-config bounded docker --host "unix://$DOCKERD_SOCKET" "$@"
}

# dockerd_start: a dockerd of our own in the host's network namespace: its files under
# $SCENARIO_DIR/docker, our containerd (containerd_start), no bridge and no firewall
# rules, and berth as its registry mirror.
dockerd_start() {
    local dir=$SCENARIO_DIR/docker pid ip6tables=
    DOCKERD_SOCKET=$dir/d.sock
    ((${#DOCKERD_SOCKET} < 100)) ||
        die "socket path too long for a unix socket (${#DOCKERD_SOCKET} chars): set a shorter TMPDIR"
    mkdir -p "$dir/data" "$dir/exec" "$SCENARIO_DIR/docker-config"
    # A bridge of its own: a dockerd told "bridge": "none" deletes docker0, the host
    # daemon's bridge, in the network namespace they share.
    DOCKERD_BRIDGE=bm$((RANDOM % 100000))
    ip link add "$DOCKERD_BRIDGE" type bridge || die "cannot add bridge $DOCKERD_BRIDGE"
    defer ip link del "$DOCKERD_BRIDGE"
    ip addr add "10.213.$((RANDOM % 250)).1/24" dev "$DOCKERD_BRIDGE"
    ip link set "$DOCKERD_BRIDGE" up
    if [[ $(dockerd --help 2>&1) == *--ip6tables* ]]; then
        ip6tables=$'\n  "ip6tables": false,'
    fi
    containerd_start
    cat >"$dir/daemon.json" <<EOF
{
  "hosts": ["unix://$DOCKERD_SOCKET"],
  "data-root": "$dir/data",
  "exec-root": "$dir/exec",
  "pidfile": "$dir/dockerd.pid",
  "deprecated-key-path": "$dir/key.json",
  "containerd": "$CTR_SOCKET",
  "storage-driver": "vfs",
  "bridge": "$DOCKERD_BRIDGE",
  "iptables": false,$ip6tables
  "ip-forward": false,
  "ip-masq": false,
  "exec-opts": ["native.cgroupdriver=cgroupfs"],
  "shutdown-timeout": 5,
  "registry-mirrors": ["http://$REGISTRY_HOST"]
}
EOF
    defer umount_under "$dir"
    dockerd --config-file "$dir/daemon.json" >"$dir/dockerd.log" 2>&1 </dev/null &
    pid=$!
    defer stop_pid "$pid"
    if ! wait_until 60 "the private dockerd" dockerd_answers_or_exited "$pid" ||
        proc_exited "$pid"; then
        die "the private dockerd did not start: $(tail -n 5 "$dir/dockerd.log")"
    fi
    note "private dockerd (pid $pid) on unix://$DOCKERD_SOCKET"
}

scenario_mirror_docker() {
    local before image_id
    need_dist
    command -v dockerd >/dev/null || die "dockerd is not installed"
    dockerd_start
    assert_eq "the daemon's registry mirrors" "http://$REGISTRY_HOST/" \
        "$(private_docker info --format '{{join .RegistryConfig.Mirrors " "}}')"
    before=$(mirror_requests dist)
    private_docker pull e2eimg:v1
    image_id=$(private_docker image inspect --format '{{.Id}}' e2eimg:v1)
    assert_eq "image ID of e2eimg:v1" "$(image_config_digest "$IMAGES" e2eimg)" "$image_id"
    (($(mirror_field dist misses) > 0)) || die "mirror dist counts no miss: $(mirror_status)"
    (($(mirror_requests dist) > before)) ||
        die "mirror dist served no request for the pull: $(mirror_status)"
    grep -q "path=/v2/library/e2eimg/manifests/v1 " "$REGISTRY_LOG" ||
        die "berth's log shows no request for library/e2eimg (the daemon asked elsewhere)"
    assert_eq "the tag cached as dist/library/e2eimg:v1" 200 "$(manifest_status dist/library/e2eimg v1)"
}

# ---------------------------------------------------------------- mirror-containerd

# hosts_toml HOSTS_DIR UPSTREAM_HOST SERVER [SERVER OPTIONS]: UPSTREAM_HOST's hosts.toml,
# with berth as a pull mirror in front of SERVER.
hosts_toml() {
    local dir=$1/$2
    mkdir -p "$dir"
    cat >"$dir/hosts.toml" <<EOF
server = "$3"
${4:-}

[host."http://$REGISTRY_HOST"]
  capabilities = ["pull", "resolve"]
EOF
}

scenario_mirror_containerd() {
    local hosts=$SCENARIO_DIR/hosts dist_before tok_before ref
    need_dist
    containerd_start
    hosts_toml "$hosts" "$DIST_HOST" "https://$DIST_HOST" "ca = \"$CERTS/ca.crt\""
    hosts_toml "$hosts" "$UPSTREAM_HOST" "http://$UPSTREAM_HOST"
    dist_before=$(mirror_requests dist)
    tok_before=$(mirror_requests tok)

    # ctr has no credentials for either upstream: were berth passed over, containerd's
    # fallback to the upstream itself would be refused (401).
    ref=$DIST_HOST/library/e2eimg:v1
    ctr_transfer pull --hosts-dir "$hosts" "$ref"
    assert_eq "digest of $ref" "$(layout_digest "$IMAGES" e2eimg)" "$(ctr_image_digest "$ref")"
    ref=$UPSTREAM_HOST/team/tool:v1
    ctr_transfer pull --hosts-dir "$hosts" "$ref"
    assert_eq "digest of $ref" "$(layout_digest "$IMAGES" tool)" "$(ctr_image_digest "$ref")"

    mirror_status >status.json
    jq -e --argjson dist "$dist_before" --argjson tok "$tok_before" '
        (.[] | select(.name == "dist") | .cached_blobs > 0 and .hits + .misses > $dist) and
        (.[] | select(.name == "tok") | .cached_blobs > 0 and .cached_repositories > 0
            and .misses > 0 and .hits + .misses > $tok)' status.json >/dev/null ||
        die "the mirror status does not show both mirrors serving the pulls: $(jq -c . status.json)"
    assert_eq "tok cached by berth" 200 "$(manifest_status tok/team/tool v1)"
}

# ---------------------------------------------------------------- mirror-skopeo

scenario_mirror_skopeo() {
    local digest image_id before ref
    need_dist
    digest=$(layout_digest "$IMAGES" e2eimg)
    image_id=$(image_config_digest "$IMAGES" e2eimg)
    skopeo_pull dist/library/e2eimg:v1 dir:out
    dir_check_image out "$digest"

    # podman: the upstream is the primary location (it would need a CA and credentials
    # podman does not have); berth, by path, is the mirror.
    cat >registries.conf <<EOF
unqualified-search-registries = []

[[registry]]
prefix = "$DIST_HOST"
location = "$DIST_HOST"

[[registry.mirror]]
location = "$REGISTRY_HOST/dist"
insecure = true
EOF
    export CONTAINERS_REGISTRIES_CONF=$SCENARIO_DIR/registries.conf
    export REGISTRY_AUTH_FILE=$SCENARIO_DIR/auth.json
    printf '{"auths": {}}\n' >"$REGISTRY_AUTH_FILE"
    PODMAN_RUNROOT=$(mktemp -d /tmp/berth-podman.XXXXXX)
    defer rm -rf "$PODMAN_RUNROOT"
    ref=$DIST_HOST/library/e2eimg:v1
    before=$(mirror_requests dist)
    podman_cmd pull "$ref"
    assert_eq "podman image ID" "${image_id#sha256:}" \
        "$(podman_cmd image inspect --format '{{.Id}}' "$ref")"
    assert_eq "podman image digest" "$digest" \
        "$(podman_cmd image inspect --format '{{.Digest}}' "$ref")"
    (($(mirror_requests dist) > before)) || die "podman's pull did not go through berth"
}

# ---------------------------------------------------------------- mirror-single-flight

FLIGHT_PULLS=20
CLUSTER_SECRET=
NODE_PID=()
NODE_PORT=()
NODE_PEER_PORT=()
NODE_DATA=()
USED_PORTS=()
NEW_PORT=

node_status() {
    curl -fsS --max-time 5 "http://$(node_host "$1")/_berth/cluster/status"
}

node_leader() {
    node_status "$1" | jq -r '.members[] | select(.leader) | .api_addr'
}

# cluster_formed: every node answers /v2/, sees three voters and names the same leader.
cluster_formed() {
    local n leaders=()
    for n in 1 2 3; do
        [[ $(http_status GET "http://$(node_host "$n")/v2/" --max-time 2 2>/dev/null) == 200 ]] ||
            return 1
        node_status "$n" 2>/dev/null | jq -e \
            '.leader_id != null and ([.members[] | select(.voter)] | length) == 3' >/dev/null ||
            return 1
        leaders+=("$(node_leader "$n")")
    done
    [[ -n ${leaders[0]} && $(printf '%s\n' "${leaders[@]}" | sort -u | wc -l) == 1 ]]
}

cluster_stop() {
    local n
    for n in "${!NODE_PID[@]}"; do
        stop_pid "${NODE_PID[n]}"
    done
}

# cluster_start: three berth nodes with the mirror configuration (--bootstrap-expect 3).
cluster_start() {
    local n peers=
    CLUSTER_SECRET=$SCENARIO_DIR/cluster-secret
    (umask 077 && printf 'berth-e2e-%s\n' "$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')" \
        >"$CLUSTER_SECRET")
    for n in 1 2 3; do
        new_port && NODE_PORT[n]=$NEW_PORT
        new_port && NODE_PEER_PORT[n]=$NEW_PORT
        NODE_DATA[n]=$SCENARIO_DIR/node$n
        peers+=${peers:+,}127.0.0.1:${NODE_PEER_PORT[n]}
    done
    defer cluster_stop
    for n in 1 2 3; do
        mkdir -p "${NODE_DATA[n]}"
        "$BERTH_BIN" serve --plain-http --config "$MIRROR_CONFIG" --data-dir "${NODE_DATA[n]}" \
            --listen "$(node_host "$n")" --peer-listen "127.0.0.1:${NODE_PEER_PORT[n]}" \
            --cluster-secret-file "$CLUSTER_SECRET" --peers "$peers" --bootstrap-expect 3 \
            >>"${NODE_DATA[n]}.log" 2>&1 &
        NODE_PID[n]=$!
    done
    if ! wait_until $((2 * E2E_STARTUP_TIMEOUT)) "three nodes to form a cluster" cluster_formed; then
        for n in 1 2 3; do
            echo "node $n log tail:" >&2
            tail -n 5 "${NODE_DATA[n]}.log" >&2
        done
        die "the three nodes did not form a cluster"
    fi
}

# flight_pull I REPO:TAG: pull I, from node (I mod 3) + 1, into pulls/I; its exit status
# goes to pulls/I.status.
flight_pull() {
    local i=$1 status=0
    REGISTRY_HOST=$(node_host $((i % 3 + 1))) \
        skopeo_pull "$2" "dir:pulls/$i" >"pulls/$i.log" 2>&1 || status=$?
    printf '%s\n' "$status" >"pulls/$i.status"
}

# blob_fetches DIGEST: how many GETs of the blob Distribution answered 200.
blob_fetches() {
    grep -cE "\"GET /v2/library/flight/blobs/$1 HTTP/[0-9.]+\" 200 " "$DIST_LOG" || true
}

scenario_mirror_single_flight() {
    local i pids=() digest blob start elapsed fetches failed=0 total
    need_dist
    make_image flight v1 amd64 4 4194304
    digest=$(layout_digest flight v1)
    bounded skopeo copy --dest-creds "$USER_NAME:$PASSWORD" --dest-cert-dir "$CERTS/trust" \
        oci:flight:v1 "docker://$DIST_HOST/library/flight:v1"
    cluster_start
    for i in 1 2 3; do
        note "node $i at $(node_host "$i") (pid ${NODE_PID[i]})"
    done

    mkdir -p pulls
    start=$(date +%s.%N)
    for ((i = 1; i <= FLIGHT_PULLS; i++)); do
        flight_pull "$i" dist/library/flight:v1 &
        pids+=("$!")
    done
    for i in "${pids[@]}"; do
        wait "$i" || true
    done
    elapsed=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    for ((i = 1; i <= FLIGHT_PULLS; i++)); do
        if [[ $(cat "pulls/$i.status") != 0 ]]; then
            failed=$((failed + 1))
            note "pull $i (node $((i % 3 + 1))) failed: $(grep -v '^ *$' "pulls/$i.log" | tail -n 1)"
        fi
    done
    ((failed == 0)) || die "$failed of $FLIGHT_PULLS concurrent pulls failed"
    for ((i = 1; i <= FLIGHT_PULLS; i++)); do
        dir_check_image "pulls/$i" "$digest"
        cmp -s pulls/1/manifest.json "pulls/$i/manifest.json" || die "pull $i: other manifest bytes"
    done
    scenario_note "$FLIGHT_PULLS concurrent pulls of 4 x 4 MiB layers over 3 nodes: ${elapsed}s"

    total=0
    for blob in $(layout_blob flight "$digest" | jq -r '.config.digest, .layers[].digest'); do
        fetches=$(blob_fetches "$blob")
        total=$((total + fetches))
        assert_eq "Distribution's 200 answers to GET of blob $blob" 1 "$fetches"
    done
    scenario_note "Distribution served $total blob GETs for the $FLIGHT_PULLS pulls"
    for i in 1 2 3; do
        scenario_note "node $i: $(mirror_status "$(node_host "$i")" |
            jq -c '.[] | select(.name == "dist") | {hits, misses, upstream_bytes}')"
    done
}

# ---------------------------------------------------------------- mirror-mixed

scenario_mirror_mixed() {
    local digest
    need_dist
    # An image none of whose blobs the mirror holds.
    make_image fresh v1 amd64 1
    skopeo_push oci:fresh:v1 local/fresh:v1
    assert_eq "digest of local/fresh:v1" "$(layout_digest fresh v1)" "$(manifest_digest local/fresh v1)"
    scenario_note "requests for local/fresh that reached Distribution during the push: \
$(grep -c '"[A-Z]* /v2/local/fresh/' "$DIST_LOG" || true)"

    digest=$(layout_digest "$IMAGES" e2eimg)
    # What a build does: its base image comes through the mirror, then the image made
    # from it (here: the same blobs) goes to a local repository that does not exist yet.
    skopeo_pull dist/library/e2eimg:v1 dir:base
    if ! skopeo_push "oci:$IMAGES:e2eimg" local/app:v1 >push.out 2>&1; then
        cat push.out
        die "push to the local repository local/app failed: $(grep -v '^ *$' push.out | tail -n 1);
berth's log: $(grep 'path=/v2/local/app/' "$REGISTRY_LOG" | sed 's/.*method=//' | tr '\n' ';')"
    fi
    assert_eq "digest of local/app:v1" "$digest" "$(manifest_digest local/app v1)"
    skopeo_pull local/app:v1 dir:app
    dir_check_image app "$digest"

    if skopeo_push "oci:$IMAGES:tool" dist/library/e2eimg:v2 >refused.out 2>&1; then
        die "a push into the mirror's namespace was accepted"
    fi
    grep -q "takes no pushes" refused.out || die "skopeo did not show why: $(cat refused.out)"
    assert_eq "dist/library/e2eimg:v2 after the refused push" 404 \
        "$(manifest_status dist/library/e2eimg v2)"
}

# ---------------------------------------------------------------- mirror-upstream-down

scenario_mirror_upstream_down() {
    local digest start status
    need_dist
    digest=$(layout_digest "$IMAGES" e2eimg)
    # Cached first (when this scenario runs alone).
    skopeo_pull dist/library/e2eimg:v1 dir:before
    dir_check_image before "$digest"

    kill -s TERM "$DIST_PID"
    wait_until 15 "Distribution to exit" proc_exited "$DIST_PID" || die "Distribution did not exit"
    [[ $(http_status GET "https://$DIST_HOST/v2/" -k --max-time 2 2>/dev/null) == 000 ]] ||
        die "something still answers on $DIST_HOST"
    sleep "$DIST_TAG_TTL" # past the tag's TTL: berth must ask the upstream and fall back

    skopeo_pull dist/library/e2eimg:v1 dir:by-tag
    dir_check_image by-tag "$digest"
    skopeo_pull "dist/library/e2eimg@$digest" dir:by-digest
    dir_check_image by-digest "$digest"

    grep -q "WARN.*upstream failed; serving the cached tag mirror=dist repository=library/e2eimg tag=\"v1\"" \
        "$REGISTRY_LOG" || die "berth logged no warning about serving the cached tag"

    # skopeo shows only the status of a 5xx answer; curl shows berth's error too.
    start=$SECONDS
    status=0
    timeout 30 skopeo copy --src-tls-verify=false \
        "docker://$REGISTRY_HOST/dist/library/e2eimg:uncached" dir:uncached >uncached.out 2>&1 ||
        status=$?
    ((status != 0)) || die "a tag never cached was served with the upstream down"
    ((status != 124)) || die "the pull of an uncached tag was still running after 30s"
    grep -q "502 Bad Gateway" uncached.out || die "skopeo shows no 502: $(cat uncached.out)"
    scenario_note "uncached tag refused after $((SECONDS - start))s: $(grep -v '^ *$' uncached.out | tail -n 1)"
    assert_eq "status of the uncached tag's manifest" 502 \
        "$(http_request GET "http://$REGISTRY_HOST/v2/dist/library/e2eimg/manifests/uncached" \
            -H "Accept: $MANIFEST_ACCEPT")"
    jq -e '.errors[0].code == "UNAVAILABLE" and (.errors[0].message | contains("upstream dist"))' \
        response.body >/dev/null || die "the 502 does not name the upstream: $(cat response.body)"
    scenario_note "berth's answer: $(jq -c '.errors[0] | {code, message}' response.body)"
    mirror_status >status.json
    jq -e '.[] | select(.name == "dist") | .last_error | tostring | contains("upstream dist")' status.json \
        >/dev/null || die "the mirror status shows no upstream error: $(jq -c . status.json)"
}

# ---------------------------------------------------------------- main

# setup: certificates, users, both upstreams with their images, and the mirror node.
setup() {
    local tool
    for tool in docker-registry htpasswd skopeo umoci jq openssl; do
        command -v "$tool" >/dev/null || {
            echo "$tool is not installed" >&2
            return 1
        }
    done
    CERTS=$E2E_WORK/certs
    make_certs "$CERTS" || return 1
    htpasswd -Bbn "$USER_NAME" "$PASSWORD" >"$CERTS/htpasswd" 2>/dev/null || return 1
    (umask 077 && printf '%s:%s\n' "$USER_NAME" "$PASSWORD" >"$CERTS/credentials") || return 1

    IMAGES=$E2E_WORK/images
    make_image "$IMAGES" e2eimg amd64 2 || return 1
    make_image "$IMAGES" tool amd64 2 || return 1

    defer upstreams_stop
    dist_start || return 1
    upstream_start || return 1
    note "Distribution (HTTPS, htpasswd) at $DIST_HOST (pid $DIST_PID)"
    note "berth upstream (token sign-in) at $UPSTREAM_HOST (pid $UPSTREAM_PID)"
    dist_push e2eimg library/e2eimg:v1 || return 1
    upstream_push tool team/tool:v1 || return 1

    MIRROR_CONFIG=$E2E_WORK/mirror.yml
    mirror_config >"$MIRROR_CONFIG"
    BERTH_ARGS=(--config "$MIRROR_CONFIG")
    defer registry_stop
    registry_start "$E2E_WORK/mirror" || return 1
    note "berth mirror node at $REGISTRY_HOST (pid $REGISTRY_PID)"
}

main() {
    local name start
    e2e_init
    if [[ $E2E_REGISTRY != berth ]]; then
        note "mirror tests need berth; skipped for $E2E_REGISTRY"
        summary mirror
        return
    fi
    # The cleanups setup defers (by process id) must be this shell's, not a subshell's.
    if ! setup >"$E2E_WORK/setup.log" 2>&1; then
        tail -n 20 "$E2E_WORK/setup.log" | sed 's/^/    /'
        fail setup "could not start the upstreams and the mirror node"
        summary mirror
        return 1
    fi
    grep '^# ' "$E2E_WORK/setup.log" || true
    (($# > 0)) || set -- "${SCENARIOS[@]}"
    for name in "$@"; do
        start=$SECONDS
        run_scenarios "$name"
        show_notes "$name"
        note "$name took $((SECONDS - start))s"
    done
    summary mirror
}

main "$@"

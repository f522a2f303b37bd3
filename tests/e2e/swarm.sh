#!/usr/bin/env bash
# berth on a real Docker Swarm, installed the way its users install it: the image built
# from the project's Dockerfile (offline, from a Debian base made with debootstrap and
# the berth binary under test), three Docker daemons in network namespaces joined into
# one Swarm (swarm-lib.sh), and `docker stack deploy -c stack.yml`, so `mode: global`
# runs one berth per node. Each node's daemon reaches its own berth at 127.0.0.1:5000.
# The steps image, swarm-up and swarm-load-image come first; then:
#   swarm-deploy        the stack forms one cluster: every node is ready and a voter
#   swarm-push-pull     docker push on node 1, docker pull on nodes 2 and 3: same image
#   swarm-service       docker service create --replicas 5 of the pushed image: every
#                       node pulls it from its own berth and runs it
#   swarm-task-restart  docker kill of node 2's berth: Swarm restarts it at a new address,
#                       it rejoins, and pulls and pushes keep working with nothing lost
#   swarm-teardown      nothing is left once the swarm is taken down
#
# Usage: tests/e2e/swarm.sh
# Environment: see lib.sh and swarm-lib.sh, and
#   E2E_SWARM=0          skip (prints an empty summary)
#   E2E_SWARM_TIMEOUT    seconds to wait for the cluster to form or recover (default 180)
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$E2E_DIR/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$E2E_DIR/lib.sh"
# shellcheck source=tests/e2e/swarm-lib.sh
source "$E2E_DIR/swarm-lib.sh"

E2E_SWARM=${E2E_SWARM:-1}
E2E_SWARM_TIMEOUT=${E2E_SWARM_TIMEOUT:-180}

BASE_IMAGE=berth-e2e/debian:bookworm
BASE_TAR=/var/cache/berth/images/debian-bookworm-minbase.tar
IMAGE=berth-e2e/berth:swarm
APP_IMAGE=berth-e2e/app:1
STACK=berth
SERVICE=${STACK}_berth
SECRET=berth-cluster-secret
APP=127.0.0.1:5000/e2e/app
APP_SERVICE=e2e-app
NODES=3

SCENARIOS=(swarm-deploy swarm-push-pull swarm-service swarm-task-restart)

# ---------------------------------------------------------------- images

# base_image: a Debian 12 image made locally, from a debootstrap tarball kept in the cache.
base_image() {
    docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 && return 0
    if [[ ! -s $BASE_TAR ]]; then
        command -v debootstrap >/dev/null ||
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
        note "debootstrap of a minimal Debian 12 (cached in $BASE_TAR)"
        debootstrap --variant=minbase bookworm "$E2E_WORK/rootfs" http://deb.debian.org/debian >/dev/null
        mkdir -p "${BASE_TAR%/*}"
        tar -C "$E2E_WORK/rootfs" -cf "$BASE_TAR.tmp" . && mv "$BASE_TAR.tmp" "$BASE_TAR"
        rm -rf "$E2E_WORK/rootfs"
    fi
    docker import "$BASE_TAR" "$BASE_IMAGE" >/dev/null
}

# berth_image: the project's Dockerfile, with the binary under test as the build context.
berth_image() {
    local ctx=$E2E_WORK/context
    mkdir -p "$ctx"
    cp "$BERTH_BIN" "$ctx/berth"
    docker build -q -f "$ROOT/Dockerfile" -t "$IMAGE" \
        --build-arg BUILDER_IMAGE="$BASE_IMAGE" --build-arg RUNTIME_IMAGE="$BASE_IMAGE" "$ctx" >/dev/null
    rm -rf "$ctx"
    docker run --rm "$IMAGE" --version
}

# app_image TAG: a runnable image (static busybox) with 8 MiB of random data.
app_image() {
    local root=$E2E_WORK/app-rootfs busybox
    busybox=$(command -v busybox || true)
    if [[ -z $busybox ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null
        busybox=$(command -v busybox)
    fi
    ldd "$busybox" >/dev/null 2>&1 && die "$busybox is not statically linked"
    rm -rf "$root" && mkdir -p "$root/bin" "$root/data"
    cp "$busybox" "$root/bin/busybox"
    ln -s busybox "$root/bin/sh"
    random_bytes $((8 << 20)) swarm-app >"$root/data/random"
    tar -C "$root" -c . | docker import -c 'CMD ["/bin/busybox", "sleep", "3600"]' - "$1" >/dev/null
    rm -rf "$root"
}

images() {
    base_image
    berth_image
    app_image "$APP_IMAGE"
}

remove_host_images() {
    docker image rm "$IMAGE" "$APP_IMAGE" >/dev/null 2>&1 || true
}

# ---------------------------------------------------------------- helpers

# node_http I PATH: the body of GET PATH on node I's own berth (127.0.0.1:5000 in its netns).
node_http() {
    swarm_netns_exec "$1" curl -fsS --max-time 5 "http://127.0.0.1:5000$2"
}

every_node_ready() {
    local i
    for ((i = 1; i <= NODES; i++)); do
        node_http "$i" /readyz >/dev/null 2>&1 || return 1
    done
}

# berth_status I: `berth cluster status --json` from inside node I's berth task.
berth_status() {
    local cid
    cid=$(swarm_task_containers "$1" "$SERVICE" | head -n 1)
    [[ -n $cid ]] || return 1
    swarm_docker "$1" exec "$cid" berth cluster status --json
}

voters_are() {
    local status
    status=$(berth_status "$1" 2>/dev/null) || return 1
    [[ $(jq '[.members[] | select(.voter)] | length' <<<"$status") == "$2" ]] &&
        [[ $(jq -r '.leader_id // empty' <<<"$status") != "" ]]
}

image_id() {
    swarm_docker "$1" image inspect -f '{{.Id}}' "$2"
}

running_tasks() {
    swarm_docker 1 service ps "$1" --filter desired-state=running --format '{{.Node}} {{.CurrentState}}' |
        awk '$2 == "Running" { print $1 }'
}

service_runs_everywhere() {
    local tasks
    tasks=$(running_tasks "$1") || return 1
    [[ $(wc -l <<<"$tasks") -ge $2 && $(sort -u <<<"$tasks" | wc -l) == "$NODES" ]]
}

replaced() {
    local cid
    cid=$(swarm_task_containers "$1" "$SERVICE" | head -n 1)
    [[ -n $cid && $cid != "$2" ]]
}

overlay_ip() {
    swarm_docker "$1" inspect -f "{{(index .NetworkSettings.Networks \"${STACK}_peers\").IPAddress}}" "$2"
}

# listed_at I NODE_ADDRESS: node I's cluster status lists a voter at NODE_ADDRESS:5001.
listed_at() {
    local status
    status=$(berth_status "$1" 2>/dev/null) || return 1
    jq -e --arg peer "$2:5001" '.members[] | select(.voter and .peer_addr == $peer)' <<<"$status" >/dev/null
}

# berth_state_notes [CID...]: keeps, as scenario notes, node 1's view of the cluster and
# the last lines each node's berth (and each given container) logged: what a failed
# recovery needs to be diagnosed after the swarm is gone.
berth_state_notes() {
    local i cid
    scenario_note "cluster status on node 1: $(berth_status 1 2>&1 | jq -c '{leader_id, members}' 2>&1)"
    for ((i = 1; i <= NODES; i++)); do
        for cid in $(swarm_task_containers "$i" "$SERVICE") "$@"; do
            swarm_docker "$i" inspect "$cid" >/dev/null 2>&1 || continue
            scenario_note "--- node $i, container ${cid:0:12}:"
            while IFS= read -r line; do
                scenario_note "$line"
            done < <(swarm_docker "$i" logs --tail 40 "$cid" 2>&1)
        done
    done
}

# ---------------------------------------------------------------- scenarios

scenario_swarm_deploy() {
    local started=$SECONDS
    openssl rand -hex 32 | swarm_docker 1 secret create "$SECRET" - >/dev/null
    BERTH_NODES=$NODES BERTH_IMAGE=$IMAGE \
        swarm_docker 1 stack deploy --resolve-image never -c "$ROOT/stack.yml" "$STACK"
    wait_until "$E2E_SWARM_TIMEOUT" "every node's berth to be ready" every_node_ready
    wait_until 30 "three voters and a leader" voters_are 1 3
    scenario_note "cluster of $NODES formed and ready $((SECONDS - started)) s after docker stack deploy"
}

scenario_swarm_push_pull() {
    swarm_docker 1 tag "$APP_IMAGE" "$APP:1"
    swarm_docker 1 push -q "$APP:1" >/dev/null
    local want i
    want=$(image_id 1 "$APP:1")
    for i in 2 3; do
        swarm_docker "$i" pull -q "$APP:1" >/dev/null
        assert_eq "image on node $i" "$want" "$(image_id "$i" "$APP:1")"
    done
}

scenario_swarm_service() {
    swarm_docker 1 service create -q --detach --name "$APP_SERVICE" --replicas 5 "$APP:1" >/dev/null
    wait_until 120 "5 running tasks of $APP:1 spread over every node" service_runs_everywhere "$APP_SERVICE" 5
    swarm_docker 1 service rm "$APP_SERVICE" >/dev/null
}

scenario_swarm_task_restart() {
    local node=2 old_cid old_ip new_cid new_ip want
    old_cid=$(swarm_task_containers "$node" "$SERVICE" | head -n 1)
    [[ -n $old_cid ]] || die "no berth task runs on node $node"
    old_ip=$(overlay_ip "$node" "$old_cid")
    swarm_docker "$node" kill "$old_cid" >/dev/null
    wait_until 60 "Swarm to restart node $node's berth" replaced "$node" "$old_cid"
    new_cid=$(swarm_task_containers "$node" "$SERVICE" | head -n 1)
    new_ip=$(overlay_ip "$node" "$new_cid")
    scenario_note "node $node's berth restarted at $new_ip (was $old_ip)"
    wait_until "$E2E_SWARM_TIMEOUT" "node $node's berth to be ready again" node_http "$node" /readyz &&
        wait_until 60 "the cluster to list node $node at $new_ip" listed_at 1 "$new_ip" &&
        wait_until 30 "three voters and a leader" voters_are 1 3 ||
        { berth_state_notes "$old_cid" || true; die "node $node did not rejoin at $new_ip"; }
    # Nothing was lost: the restarted node serves the image pushed before the kill...
    want=$(image_id 1 "$APP:1")
    swarm_docker "$node" image rm -f "$APP:1" >/dev/null
    swarm_docker "$node" pull -q "$APP:1" >/dev/null
    assert_eq "image on node $node after its restart" "$want" "$(image_id "$node" "$APP:1")"
    # ...and takes new pushes, which the other nodes serve.
    swarm_docker "$node" tag "$APP:1" "$APP:2"
    swarm_docker "$node" push -q "$APP:2" >/dev/null
    swarm_docker 3 pull -q "$APP:2" >/dev/null
    assert_eq "image pushed through the restarted node" "$want" "$(image_id 3 "$APP:2")"
}

scenario_swarm_teardown() {
    local left
    left=$(swarm_leftovers)
    [[ -z $left ]] || die "left behind: $left"
}

# ---------------------------------------------------------------- main

# step NAME COMMAND...: runs COMMAND in this shell (later steps need its state), its
# output in $E2E_WORK/NAME.log, and records the result.
step() {
    local name=$1
    shift
    if "$@" >"$E2E_WORK/$name.log" 2>&1; then
        pass "$name"
    else
        tail -n 20 "$E2E_WORK/$name.log" | sed 's/^/    /'
        fail "$name" "see the log above"
        return 1
    fi
}

main() {
    local name
    if [[ $E2E_SWARM == 0 || $E2E_REGISTRY != berth ]]; then
        note "swarm tests skipped (E2E_SWARM=$E2E_SWARM, E2E_REGISTRY=$E2E_REGISTRY)"
        summary swarm
        return
    fi
    e2e_init
    export SWARM_LOGS=$E2E_WORK/swarm-logs
    defer remove_host_images
    defer swarm_down
    if step swarm-preflight swarm_preflight &&
        step image images &&
        step swarm-up swarm_up "$NODES" &&
        step swarm-load-image swarm_load_image "$IMAGE" "$APP_IMAGE"; then
        note "swarm of $SWARM_N nodes up in $SWARM_UP_SECONDS s, storage driver $SWARM_DRIVER"
        for name in "${SCENARIOS[@]}"; do
            run_scenario "$name" "scenario_${name//-/_}"
            show_notes "$name"
        done
    fi
    swarm_down
    note "swarm down in $SWARM_DOWN_SECONDS s"
    run_scenario swarm-teardown scenario_swarm_teardown
    summary swarm
}

main "$@"

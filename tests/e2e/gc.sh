#!/usr/bin/env bash
# End-to-end tests of garbage collection with docker, replaying what breaks other
# registries: a re-push after a collection must upload again what was collected
# (never skip a layer that is gone), and a push while collections run with no grace
# either succeeds and pulls whole, or fails leaving no tag (its manifest gets
# MANIFEST_BLOB_UNKNOWN, or docker finds a layer it just uploaded collected and
# stops); never 201 with a layer missing.
#
# Usage: tests/e2e/gc.sh [SCENARIO...]   (default: all; see SCENARIOS below)
# Environment: see lib.sh.
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$E2E_DIR/lib.sh"

SCENARIOS=(docker-repush docker-push-during-gc)
# Collections run only when a scenario asks.
BERTH_ARGS=(--gc-interval 0)

# gc_run ARGS...: one collection with no grace through the admin API.
gc_run() {
    bounded "$BERTH_BIN" gc run --grace 0 --node "http://$REGISTRY_HOST" "$@"
}

# blob_status REPO DIGEST: the HTTP status of a blob HEAD.
blob_status() {
    http_status HEAD "$(registry_url "/v2/$1/blobs/$2")"
}

# pull_matches REF IMAGE_ID: removes REF locally, pulls it, and checks the image id.
pull_matches() {
    local ref=$1 image_id=$2
    docker image rm "$ref" >/dev/null
    bounded docker pull "$ref" >/dev/null
    assert_eq "image id after pull of $ref" "$image_id" "$(docker image inspect --format '{{.Id}}' "$ref")"
}

# push_refused REPO TAG: a failed push left nothing behind: its manifest PUT never
# got 201 and the tag does not exist. Prints how it was refused: the manifest PUT got
# 400 MANIFEST_BLOB_UNKNOWN (docker words it in more than one way), or docker saw a
# layer it had just uploaded collected (404) and never sent the manifest.
push_refused() {
    local put="method=PUT path=/v2/$1/manifests/$2 status"
    ! grep -qF "$put=201" "$REGISTRY_LOG" && [[ $(manifest_status "$1" "$2") == 404 ]] || return 1
    if grep -qF "$put=400" "$REGISTRY_LOG"; then echo manifest; else echo layer; fi
}

scenario_docker_repush() {
    local repo=e2e/gc-repush ref image_id pushed layers digest
    ref=$REGISTRY_HOST/$repo:t$E2E_SEED
    docker version >/dev/null || die "docker daemon not reachable"
    defer docker_remove "$ref"
    docker_image "$ref"
    image_id=$(docker image inspect --format '{{.Id}}' "$ref")
    pushed=$(docker_push "$ref")
    assert_digest "docker push digest" "$pushed"
    layers=$(bounded curl -fsS -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
        "$(registry_url "/v2/$repo/manifests/$pushed")" | jq -r '.config.digest, .layers[].digest')
    [[ -n $layers ]] || die "no layers in the pushed manifest"

    assert_eq "delete status" 202 "$(http_status DELETE "$(registry_url "/v2/$repo/manifests/$pushed")")"
    gc_run >"$SCENARIO_DIR/gc.out"
    for digest in $layers; do
        assert_eq "HEAD of collected $digest" 404 "$(blob_status "$repo" "$digest")"
    done
    # docker still has the image and believes the registry has its layers.
    assert_eq "re-push digest" "$pushed" "$(docker_push "$ref")"
    for digest in $layers; do
        assert_eq "HEAD of re-pushed $digest" 200 "$(blob_status "$repo" "$digest")"
    done
    pull_matches "$ref" "$image_id"
}

scenario_docker_push_during_gc() {
    local repo=e2e/gc-race round ref image_id out how gc_pid ok=0 manifest=0 layer=0
    docker version >/dev/null || die "docker daemon not reachable"
    (for _ in $(seq 1 200); do gc_run >/dev/null 2>&1 || true; done) &
    gc_pid=$!
    defer stop_pid "$gc_pid"
    for round in 1 2 3 4 5 6; do
        ref=$REGISTRY_HOST/$repo:r$round-$E2E_SEED
        defer docker_remove "$ref"
        docker_image "$ref"
        image_id=$(docker image inspect --format '{{.Id}}' "$ref")
        if out=$(bounded docker push "$ref" 2>&1); then
            ok=$((ok + 1))
            pull_matches "$ref" "$image_id"
        elif how=$(push_refused "$repo" "r$round-$E2E_SEED"); then
            if [[ $how == manifest ]]; then manifest=$((manifest + 1)); else layer=$((layer + 1)); fi
        else
            printf '%s\n' "$out" >&2
            die "push $round failed, and left its tag behind"
        fi
    done
    pid_alive "$gc_pid" || die "the collections stopped before the pushes did"
    scenario_note "pushes during collections with no grace: $ok pulled whole, $manifest refused with MANIFEST_BLOB_UNKNOWN, $layer stopped by docker on a layer collected after its upload"
}

main() {
    e2e_init
    defer registry_stop
    if ! registry_start "$E2E_WORK/registry"; then
        fail registry "could not start $E2E_REGISTRY"
        summary gc
        return 1
    fi
    note "registry at $REGISTRY_HOST (pid $REGISTRY_PID)"
    run_scenarios "$@"
    show_notes docker-push-during-gc
    summary gc
}

main "$@"

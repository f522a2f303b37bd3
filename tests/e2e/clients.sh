#!/usr/bin/env bash
# End-to-end tests: real registry clients (docker, skopeo, podman, containerd) push to
# and pull from a registry started here, and the digests must survive the round trip.
#
# Usage: tests/e2e/clients.sh [SCENARIO...]   (default: all; see SCENARIOS below)
# Environment: see lib.sh (E2E_REGISTRY=distribution runs against CNCF Distribution).
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$E2E_DIR/lib.sh"

SCENARIOS=(docker skopeo-oci skopeo-index skopeo-v2s2 skopeo-tags-delete podman
    containerd containerd-index)

# ---------------------------------------------------------------- docker

docker_image_id() {
    docker image inspect --format '{{.Id}}' "$1"
}

scenario_docker() {
    local repo=e2e/docker tag=t$E2E_SEED local_ref remote_ref image_id pushed
    local_ref=berth-e2e/docker:$tag
    remote_ref=$REGISTRY_HOST/$repo:$tag
    docker version >/dev/null || die "docker daemon not reachable"
    defer docker_remove "$local_ref" "$remote_ref"

    make_rootfs rootfs
    tar -C rootfs -c . | bounded docker import - "$local_ref"
    docker tag "$local_ref" "$remote_ref"
    image_id=$(docker_image_id "$remote_ref")

    pushed=$(docker_push "$remote_ref")
    assert_digest "docker push digest" "$pushed"
    assert_eq "registry digest" "$pushed" "$(manifest_digest "$repo" "$tag")"
    defer docker_remove "$REGISTRY_HOST/$repo@$pushed"

    docker image rm "$local_ref" "$remote_ref"
    if docker image inspect "$image_id" >/dev/null 2>&1; then
        die "image $image_id still present after docker image rm"
    fi
    bounded docker pull "$remote_ref"
    assert_eq "image id after pull" "$image_id" "$(docker_image_id "$remote_ref")"
    assert_eq "repo digest after pull" "$REGISTRY_HOST/$repo@$pushed" \
        "$(docker image inspect --format '{{join .RepoDigests " "}}' "$remote_ref")"
}

# ---------------------------------------------------------------- skopeo

scenario_skopeo_oci() {
    local repo=e2e/skopeo-oci source
    make_image src v1 amd64 3
    source=$(layout_digest src v1)

    skopeo_push oci:src:v1 "$repo:v1"
    assert_eq "registry digest" "$source" "$(manifest_digest "$repo" v1)"
    assert_eq "skopeo inspect digest" "$source" \
        "$(bounded skopeo inspect --tls-verify=false --format '{{.Digest}}' "docker://$REGISTRY_HOST/$repo:v1")"

    skopeo_pull "$repo:v1" oci:out:v1
    assert_eq "pulled digest" "$source" "$(layout_digest out v1)"
    layout_check_image out "$source"
}

scenario_skopeo_index() {
    local repo=e2e/skopeo-index index child
    make_multiarch src multi
    index=$(layout_digest src multi)

    skopeo_push oci:src:multi "$repo:multi" --all
    assert_eq "registry index digest" "$index" "$(manifest_digest "$repo" multi)"
    for child in $(layout_blob src "$index" | jq -r '.manifests[].digest'); do
        assert_eq "registry child digest" "$child" "$(manifest_digest "$repo" "$child")"
    done

    skopeo_pull "$repo:multi" oci:out:multi --all
    assert_eq "pulled index digest" "$index" "$(layout_digest out multi)"
    layout_check_image out "$index"
}

scenario_skopeo_v2s2() {
    local repo=e2e/skopeo-v2s2 raw digest
    make_image src v1 amd64

    skopeo_push oci:src:v1 "$repo:v1" --format v2s2
    raw=$(bounded skopeo inspect --raw --tls-verify=false "docker://$REGISTRY_HOST/$repo:v1")
    assert_eq "manifest media type" application/vnd.docker.distribution.manifest.v2+json \
        "$(jq -r .mediaType <<<"$raw")"
    digest=$(manifest_digest "$repo" v1)
    assert_eq "registry digest of the raw manifest" "sha256:$(printf '%s' "$raw" | sha256_hex)" "$digest"

    skopeo_pull "$repo:v1" dir:out
    assert_eq "pulled manifest digest" "$digest" "sha256:$(sha256_hex <out/manifest.json)"
    assert_eq "pulled config digest" "$(image_config_digest src v1)" \
        "$(jq -r .config.digest out/manifest.json)"
}

scenario_skopeo_tags_delete() {
    local repo=e2e/skopeo-tags tag digest
    make_image src v1 amd64 1
    for tag in alpha beta; do
        skopeo_push oci:src:v1 "$repo:$tag"
    done
    digest=$(manifest_digest "$repo" alpha)
    assert_eq "tags" alpha,beta "$(bounded skopeo list-tags --tls-verify=false \
        "docker://$REGISTRY_HOST/$repo" | jq -r '.Tags | sort | join(",")')"

    # skopeo deletes by digest, so every tag on that manifest goes.
    bounded skopeo delete --tls-verify=false "docker://$REGISTRY_HOST/$repo:alpha"
    for tag in alpha beta "$digest"; do
        assert_eq "manifest $tag after delete" 404 "$(manifest_status "$repo" "$tag")"
    done
}

# ---------------------------------------------------------------- podman

scenario_podman() {
    local repo=e2e/podman ref image_id pushed
    ref=$REGISTRY_HOST/$repo:v1
    make_image src v1 amd64
    oci_archive src src.oci.tar
    image_id=$(image_config_digest src v1)

    podman_cmd load -i src.oci.tar
    podman_cmd tag "${image_id#sha256:}" "$ref"
    podman_cmd push --tls-verify=false --digestfile pushed.digest "$ref"
    pushed=$(cat pushed.digest)
    assert_digest "podman push digest" "$pushed"
    assert_eq "registry digest" "$pushed" "$(manifest_digest "$repo" v1)"

    podman_cmd rmi --all --force
    assert_eq "images left after rmi" "" "$(podman_cmd images --quiet)"
    podman_cmd pull --tls-verify=false "$ref"
    assert_eq "image id after pull" "${image_id#sha256:}" \
        "$(podman_cmd image inspect --format '{{.Id}}' "$ref")"
    assert_eq "digest after pull" "$pushed" \
        "$(podman_cmd image inspect --format '{{.Digest}}' "$ref")"
}

# ---------------------------------------------------------------- containerd

# ctr_has_content DIGEST: the blob is in containerd's content store.
ctr_has_content() {
    ctr_cmd content get "$1" >/dev/null 2>&1
}

# ctr_remove_all: removes every image of the private namespace and collects the content.
ctr_remove_all() {
    local refs
    refs=$(ctr_cmd images ls --quiet)
    # shellcheck disable=SC2086 # image references contain no blanks
    ctr_cmd images rm --sync $refs
}

# ctr_round_trip LAYOUT TAG REPO [OPTIONS...]: imports LAYOUT's TAG into containerd, pushes
# it to REPO:TAG, removes it (content too), pulls it back and compares the digests.
ctr_round_trip() {
    local layout=$1 tag=$2 repo=$3 ref digest
    shift 3
    ref=$REGISTRY_HOST/$repo:$tag
    digest=$(layout_digest "$layout" "$tag")
    oci_archive "$layout" "$layout.oci.tar"

    ctr_cmd images import --base-name "$REGISTRY_HOST/$repo" "$@" "$layout.oci.tar"
    assert_eq "imported digest" "$digest" "$(ctr_image_digest "$ref")"
    ctr_transfer push --plain-http "$ref"
    assert_eq "registry digest" "$digest" "$(manifest_digest "$repo" "$tag")"

    ctr_remove_all
    if ctr_has_content "$digest"; then
        die "content $digest still present after images rm"
    fi
    ctr_transfer pull --plain-http "$@" "$ref"
    assert_eq "pulled digest" "$digest" "$(ctr_image_digest "$ref")"
}

scenario_containerd() {
    containerd_start
    make_image src v1 amd64
    ctr_round_trip src v1 e2e/containerd
}

scenario_containerd_index() {
    local digest
    containerd_start
    make_multiarch src multi
    ctr_round_trip src multi e2e/containerd-index --all-platforms
    for digest in $(image_blobs src "$(layout_digest src multi)"); do
        ctr_has_content "$digest" || die "$digest missing from containerd after the pull"
    done
}

# ---------------------------------------------------------------- main

main() {
    e2e_init
    defer registry_stop
    if ! registry_start "$E2E_WORK/registry"; then
        fail registry "could not start $E2E_REGISTRY"
        summary clients
        return 1
    fi
    note "registry at $REGISTRY_HOST (pid $REGISTRY_PID)"
    run_scenarios "$@"
    summary clients
}

main "$@"

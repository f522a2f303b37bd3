#!/usr/bin/env bash
# End-to-end tests of repository policies with real clients: a push that would move an
# immutable tag fails, and the client shows the rule to the user; a docker push that
# would pass a namespace's quota fails with the usage and the limit, until a delete and a
# garbage collection free room.
#
# Usage: tests/e2e/policies.sh [SCENARIO...]   (default: all; see SCENARIOS below)
# Environment: see lib.sh.
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$E2E_DIR/lib.sh"

SCENARIOS=(docker-immutable skopeo-immutable docker-quota)

# immutable SCOPE PATTERN...: sets the immutable-tag rule of SCOPE.
immutable() {
    bounded "$BERTH_BIN" policy immutable --node "http://$REGISTRY_HOST" "$@" >/dev/null
}

scenario_docker_immutable() {
    local ref out first
    docker version >/dev/null || die "docker daemon not reachable"
    immutable 'e2e-docker/*' 'v*'
    ref=$REGISTRY_HOST/e2e-docker/app:v$E2E_SEED
    defer docker_remove "$ref"
    docker_image "$ref"
    first=$(docker_push "$ref")
    assert_digest "first push" "$first"
    # The same image again is fine.
    assert_eq "second push of the same image" "$first" "$(docker_push "$ref")"
    docker_image "$ref"
    if out=$(bounded docker push "$ref" 2>&1); then
        die "docker moved an immutable tag"
    fi
    grep -q "tag v$E2E_SEED is immutable (rule e2e-docker/\* v\*)" <<<"$out" ||
        die "docker did not show the rule: $out"
    assert_eq "tag after the refused push" "$first" "$(manifest_digest e2e-docker/app "v$E2E_SEED")"
}

scenario_skopeo_immutable() {
    local repo=e2e-skopeo/app out first
    immutable "$repo" '*' '!latest'
    make_image one v1 amd64
    make_image two v1 amd64
    skopeo_push oci:one:v1 "$repo:v1"
    first=$(manifest_digest "$repo" v1)
    if out=$(skopeo_push oci:two:v1 "$repo:v1" 2>&1); then
        die "skopeo moved an immutable tag"
    fi
    grep -q "tag v1 is immutable (rule $repo \*)" <<<"$out" ||
        die "skopeo did not show the rule: $out"
    assert_eq "tag after the refused copy" "$first" "$(manifest_digest "$repo" v1)"
    # latest is exempt: it moves.
    skopeo_push oci:one:v1 "$repo:latest"
    skopeo_push oci:two:v1 "$repo:latest"
    assert_eq "latest after moving" "$(layout_digest two v1)" "$(manifest_digest "$repo" latest)"
}

# usage NAMESPACE: the bytes the namespace uses, as `berth quota show` reports them.
usage() {
    bounded "$BERTH_BIN" quota show --json --node "http://$REGISTRY_HOST" |
        jq -r --arg ns "$1" '(map(select(.namespace == $ns)) | first | .bytes) // 0'
}

scenario_docker_quota() {
    local ns=e2e-quota$E2E_SEED used out first second
    docker version >/dev/null || die "docker daemon not reachable"
    first=$REGISTRY_HOST/$ns/app:one
    second=$REGISTRY_HOST/$ns/app:two
    defer docker_remove "$first" "$second"
    docker_image "$first"
    assert_digest "first push" "$(docker_push "$first")"
    used=$(usage "$ns")
    ((used > 600000)) || die "usage after a 600 kB image: $used"
    # Room for a little more, not for a second image.
    bounded "$BERTH_BIN" quota set --node "http://$REGISTRY_HOST" "$ns" "$((used + 1000))" >/dev/null
    bounded "$BERTH_BIN" quota show --node "http://$REGISTRY_HOST" | grep -q "^$ns: .* of .*%)" ||
        die "quota show does not list $ns"
    docker_image "$second"
    if out=$(bounded docker push "$second" 2>&1); then
        die "docker pushed past the quota"
    fi
    grep -q "would raise the storage used by namespace $ns .* over its quota of .*($((used + 1000)) bytes)" <<<"$out" ||
        die "docker did not show the usage and the limit: $out"
    assert_eq "usage after the refused push" "$used" "$(usage "$ns")"
    # Deleting the tag leaves its manifest; collecting untagged manifests frees the room.
    assert_eq "tag delete" 202 "$(http_status DELETE "http://$REGISTRY_HOST/v2/$ns/app/manifests/one")"
    assert_eq "usage after the tag delete" "$used" "$(usage "$ns")"
    bounded "$BERTH_BIN" gc run --grace 0 --untagged --node "http://$REGISTRY_HOST" >/dev/null
    assert_eq "usage after gc" 0 "$(usage "$ns")"
    assert_digest "push after gc" "$(docker_push "$second")"
    docker_remove "$second"
    bounded docker pull "$second" >/dev/null
}

main() {
    e2e_init
    defer registry_stop
    if ! registry_start "$E2E_WORK/registry"; then
        fail registry "could not start $E2E_REGISTRY"
        summary policies
        return 1
    fi
    note "registry at $REGISTRY_HOST (pid $REGISTRY_PID)"
    run_scenarios "$@"
    summary policies
}

main "$@"

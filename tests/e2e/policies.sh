#!/usr/bin/env bash
# End-to-end tests of immutable tags with real clients: a push that would move an
# immutable tag fails, and the client shows the rule to the user.
#
# Usage: tests/e2e/policies.sh [SCENARIO...]   (default: all; see SCENARIOS below)
# Environment: see lib.sh.
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$E2E_DIR/lib.sh"

SCENARIOS=(docker-immutable skopeo-immutable)

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

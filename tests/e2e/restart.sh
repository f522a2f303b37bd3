#!/usr/bin/env bash
# End-to-end tests: the registry is killed with SIGKILL and restarted on the same data
# directory; pushed images and an unfinished chunked upload must survive.
#
# Usage: tests/e2e/restart.sh [SCENARIO...]   (default: all; see SCENARIOS below)
# Environment: see lib.sh (E2E_REGISTRY=distribution runs against CNCF Distribution).
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$E2E_DIR/lib.sh"

SCENARIOS=(restart-image restart-upload)

# registry_crash_restart: SIGKILL, then a new process on the same data directory and port.
registry_crash_restart() {
    local data=$REGISTRY_DATA port=$REGISTRY_PORT
    registry_stop KILL
    registry_start "$data" "$port" || die "registry did not restart on $data"
}

# scenario_registry: a registry private to the scenario (it gets killed).
scenario_registry() {
    defer registry_stop
    registry_start "$SCENARIO_DIR/data" || die "registry did not start"
}

scenario_restart_image() {
    local repo=e2e/restart source
    scenario_registry
    make_image src v1 amd64 3
    source=$(layout_digest src v1)
    skopeo_push oci:src:v1 "$repo:v1"
    assert_eq "registry digest before the crash" "$source" "$(manifest_digest "$repo" v1)"

    registry_crash_restart
    assert_eq "registry digest after the crash" "$source" "$(manifest_digest "$repo" v1)"
    skopeo_pull "$repo:v1" oci:out:v1
    assert_eq "pulled digest" "$source" "$(layout_digest out v1)"
    layout_check_image out "$source"
}

# upload_patch URL FILE START: sends FILE as the chunk starting at byte START, checks the
# 202 and the Range, and prints the next upload URL.
upload_patch() {
    local url=$1 file=$2 start=$3 size end
    size=$(wc -c <"$file")
    end=$((start + size - 1))
    assert_eq "PATCH status" 202 "$(http_request PATCH "$url" \
        -H 'Content-Type: application/octet-stream' \
        -H "Content-Range: $start-$end" --data-binary "@$file")"
    assert_eq "PATCH Range" "0-$end" "$(response_header Range)"
    next_upload_url "$url"
}

# with_digest URL DIGEST: URL with the digest query parameter added.
with_digest() {
    local separator='?'
    [[ $1 != *\?* ]] || separator='&'
    printf '%s%sdigest=%s\n' "$1" "$separator" "$2"
}

scenario_restart_upload() {
    local repo=e2e/restart-upload size=1000003 half digest url
    scenario_registry
    random_bytes "$size" upload >blob
    digest=sha256:$(sha256_hex <blob)
    half=$((size / 2))
    head -c "$half" blob >first
    tail -c "+$((half + 1))" blob >second

    assert_eq "POST status" 202 "$(http_request POST "http://$REGISTRY_HOST/v2/$repo/blobs/uploads/")"
    url=$(next_upload_url "")
    [[ -n $url ]] || die "POST uploads/ gave no Location"
    url=$(upload_patch "$url" first 0)

    registry_crash_restart
    assert_eq "upload status after the crash" 204 "$(http_request GET "$url")"
    assert_eq "upload Range after the crash" "0-$((half - 1))" "$(response_header Range)"
    url=$(upload_patch "$(next_upload_url "$url")" second "$half")

    assert_eq "PUT status" 201 "$(http_request PUT "$(with_digest "$url" "$digest")")"
    assert_eq "PUT Docker-Content-Digest" "$digest" "$(response_header Docker-Content-Digest)"
    assert_eq "GET blob status" 200 "$(http_request GET "http://$REGISTRY_HOST/v2/$repo/blobs/$digest" -L)"
    assert_eq "sha256 of the blob read back" "$digest" \
        "sha256:$(sha256_hex <"$SCENARIO_DIR/response.body")"
}

main() {
    e2e_init
    run_scenarios "$@"
    summary restart
}

main "$@"

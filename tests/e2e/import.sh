#!/usr/bin/env bash
# End-to-end tests of `berth import`: CNCF Distribution (filesystem storage, delete
# enabled) is filled by skopeo and docker, with a multi-architecture index, a nested
# repository sharing an image, a tag moved to another image (its old manifest stays,
# untagged) and a manifest deleted by digest; Distribution is stopped, and its storage
# root is imported into berth.
#   import-corrupt       one byte flipped in one layer of a copy of the root, imported
#                        into a berth node with sign-in on (--login): the import names
#                        the layer's digest and path, skips it and every manifest naming
#                        it, imports the rest, and exits non-zero; without --login it
#                        fails at once, saying how to sign in
#   import-all           the intact root: every tag resolves to the digest Distribution
#                        answered, the untagged manifest and the index's children are
#                        there by digest, the deleted one is not; skopeo pulls images
#                        byte for byte, and docker pulls the docker-pushed image
#   import-again         a second run uploads, mounts and pushes nothing
#   import-unreferenced  --include-unreferenced-blobs brings the deleted manifest's
#                        layers, which the runs before left out
#
# Usage: tests/e2e/import.sh [SCENARIO...]   (default: all, in order; see SCENARIOS below)
# Environment: see lib.sh.
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$E2E_DIR/lib.sh"

SCENARIOS=(import-corrupt import-all import-again import-unreferenced)

USER_NAME=importer
PASSWORD='a long password for the import'

DIST_ROOT=    # Distribution's storage root
DIST_PID=
DIST_HOST=
IMAGES=       # the OCI layout the images came from
EXPECTED=     # lines "repo tag digest", as Distribution answered
FACTS=        # key=value lines setup learned (digests, image ids)
DOCKER_REF=   # the docker-pushed image, by repository and tag

# ---------------------------------------------------------------- helpers

# fact KEY: a value setup recorded.
fact() {
    awk -F= -v key="$1" '$1 == key { print substr($0, length(key) + 2) }' "$FACTS"
}

# berth_import ARGS...: `berth import` against the berth node under test.
berth_import() {
    bounded "$BERTH_BIN" import --node "http://$REGISTRY_HOST" --progress lines "$@"
}

# flip_byte FILE OFFSET: inverts the lowest bit of one byte in place.
flip_byte() {
    local file=$1 offset=$2 byte
    byte=$(od -An -tu1 -j "$offset" -N1 "$file" | tr -d ' ')
    [[ -n $byte ]] || die "$file has no byte $offset"
    # shellcheck disable=SC2059
    printf "\\$(printf '%03o' $((byte ^ 1)))" |
        dd of="$file" bs=1 seek="$offset" count=1 conv=notrunc status=none
}

# blob_status REPO DIGEST [CURL ARGS...]: the status of a blob HEAD on berth.
blob_status() {
    http_status HEAD "http://$REGISTRY_HOST/v2/$1/blobs/$2" "${@:3}"
}

# signed_manifest_status REPO REFERENCE: a manifest HEAD's status, signed in.
signed_manifest_status() {
    http_status HEAD "http://$REGISTRY_HOST/v2/$1/manifests/$2" -H "Accept: $MANIFEST_ACCEPT" \
        -u "$USER_NAME:$PASSWORD"
}

dist_answers_or_exited() {
    pid_gone "$DIST_PID" ||
        [[ $(http_status GET "http://$DIST_HOST/v2/" --max-time 2 2>/dev/null) == 200 ]]
}

# dist_start: Distribution on a free loopback port, its storage in $DIST_ROOT.
dist_start() {
    local attempt port
    mkdir -p "$DIST_ROOT"
    for attempt in 1 2 3; do
        port=$(free_port) || return 1
        DIST_HOST=127.0.0.1:$port
        distribution_config "$DIST_ROOT" "$port" >"$DIST_ROOT.yml"
        docker-registry serve "$DIST_ROOT.yml" >>"$DIST_ROOT.log" 2>&1 &
        DIST_PID=$!
        if wait_until "$E2E_STARTUP_TIMEOUT" "Distribution to answer" dist_answers_or_exited &&
            sleep 0.5 && pid_alive "$DIST_PID"; then
            return 0
        fi
        stop_pid "$DIST_PID"
        echo "Distribution start attempt $attempt on port $port failed" >&2
    done
    tail -n 10 "$DIST_ROOT.log" >&2
    return 1
}

dist_stop() {
    [[ -z $DIST_PID ]] || stop_pid "$DIST_PID"
    DIST_PID=
}

# dist_push TAG REPO:TAG [OPTIONS...]: copies the layout image TAG into Distribution.
dist_push() {
    local tag=$1 destination=$2
    shift 2
    bounded skopeo copy --dest-tls-verify=false "$@" "oci:$IMAGES:$tag" \
        "docker://$DIST_HOST/$destination"
}

# dist_digest REPO REFERENCE: the Docker-Content-Digest Distribution answers.
dist_digest() {
    curl -fsS --max-time 30 -I -H "Accept: $MANIFEST_ACCEPT" \
        "http://$DIST_HOST/v2/$1/manifests/$2" |
        tr -d '\r' | awk 'tolower($1) == "docker-content-digest:" { print $2 }'
}

# ---------------------------------------------------------------- the source registry

# populate: pushes the images into Distribution, moves and deletes, and records what
# Distribution answers for every tag.
populate() {
    local repo tag digest moved_old deleted big
    IMAGES=$E2E_WORK/images
    make_image "$IMAGES" app amd64 3 || return 1
    make_multiarch "$IMAGES" multi || return 1
    make_image "$IMAGES" first amd64 2 || return 1
    make_image "$IMAGES" second amd64 2 || return 1
    make_image "$IMAGES" doomed amd64 2 || return 1
    make_image "$IMAGES" big amd64 1 $((64 << 20)) || return 1

    dist_push app e2e/app:v1 || return 1
    dist_push app e2e/app:v1-again || return 1
    # A nested name holding the same image: its blobs are mounted, not uploaded again.
    dist_push app team/sub/app:v1 || return 1
    dist_push multi e2e/multi:latest --all || return 1
    dist_push big e2e/big:v1 || return 1
    # A tag moved to another image leaves the first one's manifest untagged.
    dist_push first e2e/moved:stable || return 1
    moved_old=$(dist_digest e2e/moved stable)
    dist_push second e2e/moved:stable || return 1
    # A manifest deleted by digest takes its tag with it; its layers stay linked.
    dist_push doomed e2e/moved:doomed || return 1
    deleted=$(dist_digest e2e/moved doomed)
    [[ $(http_status DELETE "http://$DIST_HOST/v2/e2e/moved/manifests/$deleted") == 202 ]] || {
        echo "Distribution did not delete $deleted" >&2
        return 1
    }

    # docker's own push: Docker media types. docker_image works in $SCENARIO_DIR.
    SCENARIO_DIR=$E2E_WORK/setup
    mkdir -p "$SCENARIO_DIR"
    DOCKER_REF=e2e/docker:t$E2E_SEED
    defer docker_remove "$DIST_HOST/$DOCKER_REF"
    docker_image "$DIST_HOST/$DOCKER_REF" || return 1
    docker_push "$DIST_HOST/$DOCKER_REF" >"$E2E_WORK/docker-push.out" || return 1
    {
        printf 'moved_old=%s\n' "$moved_old"
        printf 'deleted=%s\n' "$deleted"
        printf 'deleted_layer=%s\n' "$(layout_blob "$IMAGES" "$(layout_digest "$IMAGES" doomed)" |
            jq -r '.layers[0].digest')"
        printf 'docker_ref=%s\n' "$DOCKER_REF"
        printf 'docker_id=%s\n' "$(docker image inspect --format '{{.Id}}' "$DIST_HOST/$DOCKER_REF")"
        big=$(layout_digest "$IMAGES" big)
        printf 'big_bytes=%s\n' "$(layout_blob "$IMAGES" "$big" | jq '[.layers[].size] | add')"
    } >"$FACTS"
    docker_remove "$DIST_HOST/$DOCKER_REF"
    SCENARIO_DIR=

    for repo in $(curl -fsS "http://$DIST_HOST/v2/_catalog" | jq -r '.repositories[]'); do
        for tag in $(curl -fsS "http://$DIST_HOST/v2/$repo/tags/list" | jq -r '.tags[]?'); do
            digest=$(dist_digest "$repo" "$tag")
            [[ $digest =~ ^sha256:[0-9a-f]{64}$ ]] || return 1
            printf '%s %s %s\n' "$repo" "$tag" "$digest"
        done
    done >"$EXPECTED"
}

# setup: Distribution filled and stopped, then the berth node under test.
setup() {
    local tool
    for tool in docker-registry skopeo umoci jq openssl htpasswd docker; do
        command -v "$tool" >/dev/null || {
            echo "$tool is not installed" >&2
            return 1
        }
    done
    docker version >/dev/null || return 1
    DIST_ROOT=$E2E_WORK/distribution
    EXPECTED=$E2E_WORK/expected
    FACTS=$E2E_WORK/facts
    defer dist_stop
    dist_start || return 1
    note "Distribution at $DIST_HOST (pid $DIST_PID), storage in $DIST_ROOT"
    populate || return 1
    dist_stop
    note "Distribution holds $(wc -l <"$EXPECTED") tags: $(awk '{ printf "%s:%s ", $1, $2 }' "$EXPECTED")"

    defer registry_stop
    registry_start "$E2E_WORK/berth" || return 1
    note "berth at $REGISTRY_HOST (pid $REGISTRY_PID)"
}

# ---------------------------------------------------------------- scenarios

scenario_import_corrupt() {
    local root=$SCENARIO_DIR/root layer file status=0 out=$SCENARIO_DIR/import.out
    local app multi
    cp -a "$DIST_ROOT" "$root"
    app=$(awk '$1 == "e2e/app" && $2 == "v1" { print $3 }' "$EXPECTED")
    multi=$(awk '$1 == "e2e/multi" && $2 == "latest" { print $3 }' "$EXPECTED")
    layer=$(layout_blob "$IMAGES" "$app" | jq -r '.layers[1].digest')
    assert_digest "a layer of e2e/app:v1" "$layer"
    file=$root/docker/registry/v2/blobs/sha256/${layer:7:2}/${layer#sha256:}/data
    [[ -f $file ]] || die "no data file for $layer in the copy"
    flip_byte "$file" $(($(stat -c %s "$file") / 2))

    # A node with sign-in on, of its own.
    htpasswd -Bbn "$USER_NAME" "$PASSWORD" >htpasswd 2>/dev/null
    BERTH_ARGS=(--htpasswd "$SCENARIO_DIR/htpasswd" --admins "$USER_NAME")
    defer registry_stop
    registry_start "$SCENARIO_DIR/berth"

    berth_import "$root" >anonymous.out 2>&1 && die "an import without --login succeeded"
    grep -q -- '--login' anonymous.out ||
        die "the refusal does not say how to sign in: $(tail -n 3 anonymous.out)"
    BERTH_PASSWORD=wrong berth_import "$root" --login "$USER_NAME" >wrong.out 2>&1 &&
        die "an import with a wrong password succeeded"

    BERTH_PASSWORD=$PASSWORD berth_import "$root" --login "$USER_NAME" --json >"$out" 2>import.err ||
        status=$?
    cat import.err
    ((status != 0)) || die "the import of a corrupt root exited 0"
    jq -e . "$out" >/dev/null || die "no JSON summary: $(head -c 300 "$out")"
    jq -e --arg layer "$layer" --arg path "$file" \
        '.problems | any(contains($layer) and contains($path) and contains("corrupt"))' "$out" \
        >/dev/null || die "no problem names $layer and its path: $(jq -c .problems "$out")"
    jq -e --arg app "$app" '.problems | any(contains("e2e/app: manifest " + $app))' "$out" \
        >/dev/null || die "the manifest naming the layer is not reported: $(jq -c .problems "$out")"
    jq -e '.problems | any(contains("team/sub/app: manifest"))' "$out" >/dev/null ||
        die "the nested repository's manifest is not reported: $(jq -c .problems "$out")"

    # Neither the layer nor what names it reached the node; the rest did.
    local auth=(-u "$USER_NAME:$PASSWORD")
    assert_eq "HEAD of the corrupt layer" 404 "$(blob_status e2e/app "$layer" "${auth[@]}")"
    assert_eq "HEAD of e2e/app:v1" 404 "$(signed_manifest_status e2e/app v1)"
    assert_eq "HEAD of e2e/multi:latest" 200 "$(signed_manifest_status e2e/multi latest)"
    assert_eq "e2e/multi:latest" "$multi" "$(curl -fsS -I -u "$USER_NAME:$PASSWORD" \
        -H "Accept: $MANIFEST_ACCEPT" "http://$REGISTRY_HOST/v2/e2e/multi/manifests/latest" |
        tr -d '\r' | awk 'tolower($1) == "docker-content-digest:" { print $2 }')"
    scenario_note "corrupt root: $(jq '.problems | length' "$out") problems, $(jq .manifests_pushed "$out") manifests and $(jq .blobs_uploaded "$out") blobs imported"
}

scenario_import_all() {
    local out=$SCENARIO_DIR/import.out repo tag digest tags moved_old child big_bytes
    berth_import "$DIST_ROOT" --json >"$out" 2>import.err || {
        cat import.err "$out"
        die "the import exited non-zero"
    }
    cat import.err
    grep -q 'repositories\]' import.err || die "no progress line on stderr"
    assert_eq "problems" "[]" "$(jq -c .problems "$out")"
    tags=$(wc -l <"$EXPECTED")
    assert_eq "tags pushed" "$tags" "$(jq .tags_pushed "$out")"
    assert_eq "repositories" 6 "$(jq .repositories "$out")"
    jq -e '.blobs_mounted > 0' "$out" >/dev/null || die "no blob was mounted: $(jq -c . "$out")"
    jq -e '.blobs_unreferenced_left_out > 0' "$out" >/dev/null ||
        die "the deleted manifest's layers were not left out: $(jq -c . "$out")"

    while read -r repo tag digest; do
        assert_eq "berth's digest of $repo:$tag" "$digest" "$(manifest_digest "$repo" "$tag")"
    done <"$EXPECTED"
    moved_old=$(fact moved_old)
    assert_eq "the untagged revision" 200 "$(manifest_status e2e/moved "$moved_old")"
    assert_eq "the deleted manifest" 404 "$(manifest_status e2e/moved "$(fact deleted)")"
    [[ $(curl -fsS "http://$REGISTRY_HOST/v2/e2e/moved/tags/list" | jq -c .tags) == '["stable"]' ]] ||
        die "e2e/moved has tags $(curl -fsS "http://$REGISTRY_HOST/v2/e2e/moved/tags/list")"
    for child in $(layout_blob "$IMAGES" "$(layout_digest "$IMAGES" multi)" | jq -r '.manifests[].digest'); do
        assert_eq "the index's child $child" 200 "$(manifest_status e2e/multi "$child")"
    done

    # Byte for byte: skopeo's copies match the layout the images came from.
    skopeo_pull e2e/app:v1 dir:app
    dir_check_image app "$(layout_digest "$IMAGES" app)"
    for digest in $(jq -r '.config.digest, .layers[].digest' app/manifest.json); do
        cmp -s "app/${digest#sha256:}" "$IMAGES/blobs/sha256/${digest#sha256:}" ||
            die "blob $digest differs from the source"
    done
    skopeo_pull e2e/multi:latest oci:multi:latest --all
    assert_eq "pulled index" "$(layout_digest "$IMAGES" multi)" "$(layout_digest multi latest)"
    layout_check_image multi "$(layout_digest "$IMAGES" multi)"
    skopeo_pull "e2e/moved@$moved_old" dir:old
    dir_check_image old "$moved_old"

    # docker pulls what docker pushed, to the same image id.
    defer docker_remove "$REGISTRY_HOST/$(fact docker_ref)"
    bounded docker pull "$REGISTRY_HOST/$(fact docker_ref)" >/dev/null
    assert_eq "docker image id" "$(fact docker_id)" \
        "$(docker image inspect --format '{{.Id}}' "$REGISTRY_HOST/$(fact docker_ref)")"

    big_bytes=$(fact big_bytes)
    scenario_note "import: $(jq .repositories "$out") repositories, $(jq .tags_pushed "$out") tags, $(jq .manifests_pushed "$out") manifests, $(jq .blobs_uploaded "$out") blobs uploaded and $(jq .blobs_mounted "$out") mounted, $(jq .bytes_uploaded "$out") bytes (one layer of $big_bytes) in $(jq '.seconds * 100 | round / 100' "$out") s"
}

scenario_import_again() {
    local out=$SCENARIO_DIR/import.out field
    berth_import "$DIST_ROOT" --json >"$out" 2>import.err || {
        cat import.err "$out"
        die "the second import exited non-zero"
    }
    for field in blobs_uploaded blobs_mounted manifests_pushed tags_pushed bytes_uploaded; do
        assert_eq "$field on the second run" 0 "$(jq ".$field" "$out")"
    done
    assert_eq "tags already there" "$(wc -l <"$EXPECTED")" "$(jq .tags_present "$out")"
    jq -e '.blobs_present > 0 and .manifests_present > 0' "$out" >/dev/null ||
        die "nothing was found present: $(jq -c . "$out")"
    assert_eq "problems" "[]" "$(jq -c .problems "$out")"
    # The text summary says the same.
    bounded "$BERTH_BIN" import --node "http://$REGISTRY_HOST" --progress off "$DIST_ROOT" >text.out
    grep -q 'blobs: *0 uploaded, 0 mounted' text.out || die "text summary: $(cat text.out)"
    scenario_note "second run: $(jq .blobs_present "$out") blobs and $(jq .manifests_present "$out") manifests found present in $(jq '.seconds * 100 | round / 100' "$out") s"
}

scenario_import_unreferenced() {
    local out=$SCENARIO_DIR/import.out layer
    layer=$(fact deleted_layer)
    assert_digest "a layer of the deleted manifest" "$layer"
    assert_eq "HEAD of the left-out layer" 404 "$(blob_status e2e/moved "$layer")"
    berth_import "$DIST_ROOT" --repository e2e/moved --include-unreferenced-blobs --json \
        >"$out" 2>import.err || {
        cat import.err "$out"
        die "the import exited non-zero"
    }
    assert_eq "repositories" 1 "$(jq .repositories "$out")"
    assert_eq "left out" 0 "$(jq .blobs_unreferenced_left_out "$out")"
    jq -e '.blobs_uploaded >= 2' "$out" >/dev/null || die "the layers were not uploaded: $(jq -c . "$out")"
    assert_eq "HEAD of the imported layer" 200 "$(blob_status e2e/moved "$layer")"
    assert_eq "the deleted manifest, still" 404 "$(manifest_status e2e/moved "$(fact deleted)")"
}

# ---------------------------------------------------------------- main

main() {
    local name start
    e2e_init
    if [[ $E2E_REGISTRY != berth ]]; then
        note "import tests need berth; skipped for $E2E_REGISTRY"
        summary import
        return
    fi
    # The cleanups setup defers (by process id) must be this shell's, not a subshell's.
    if ! setup >"$E2E_WORK/setup.log" 2>&1; then
        tail -n 20 "$E2E_WORK/setup.log" | sed 's/^/    /'
        fail setup "could not fill Distribution and start berth"
        summary import
        return 1
    fi
    grep -a '^# ' "$E2E_WORK/setup.log" || true
    (($# > 0)) || set -- "${SCENARIOS[@]}"
    for name in "$@"; do
        start=$SECONDS
        run_scenarios "$name"
        show_notes "$name"
        note "$name took $((SECONDS - start))s"
    done
    summary import
}

main "$@"

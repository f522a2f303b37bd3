#!/usr/bin/env bash
# End-to-end tests of berth's web UI in a real browser: Debian's headless Chromium,
# driven by Selenium (ui/flows.py), against a three-node cluster with sign-in on. The
# setup makes users admin (an administrator) and reader (may read acme/app), a private
# acme/app with a multi-arch index v1 and tags v2, old, annotated (markup in its
# description) and spare, a public library/hello and a private secret/hidden.
#   sign-in      the form signs in; the session cookie is HttpOnly and SameSite=Strict
#   multi-arch   search, repository, the v1 index and its two platforms, arm64's layers
#   copy-pull    the copy button puts `docker pull HOST/acme/app` on the clipboard
#   delete-tag   admin deletes a tag with its button; a reader has none, and a crafted
#                POST with the reader's csrf value is refused
#   csrf         a delete without or with a wrong csrf value is refused, in the browser
#                and with curl (403), while one with the right value works
#   script-text  markup in an annotation or a label shows as text; a bad repository
#                name or search is not echoed as markup
#   anonymous    a visitor not signed in sees public repositories and no private name
#   phone        at 390x844 no page scrolls sideways as a whole
#   screenshots  pictures of each page ($UI_SCREENSHOTS, or the scenario's directory)
#   node-down    a follower killed with SIGKILL shows down on /ui/cluster, and up again
#                once restarted
#
# Usage: tests/e2e/ui.sh [SCENARIO...]   (default: all; see SCENARIOS below)
#        tests/e2e/ui.sh --venv           only create the Selenium venv
# Environment: see lib.sh; UI_SCREENSHOTS=DIR keeps the screenshots there (e.g.
# UI_SCREENSHOTS=docs/ui from the repository's root).
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$E2E_DIR/lib.sh"
# shellcheck source=tests/e2e/cluster-lib.sh
source "$E2E_DIR/cluster-lib.sh"
# shellcheck source=tests/deploy/lib-py.sh
source "$E2E_DIR/../deploy/lib-py.sh"

SCENARIOS=(sign-in multi-arch copy-pull delete-tag csrf script-text anonymous phone screenshots node-down)

# Selenium from PyPI in a venv of its own, reused across runs; the browser and its
# driver are Debian's (chromium, chromium-driver), so nothing else is downloaded.
UI_VENV=${UI_VENV:-$BERTH_CACHE/ui-venv}
UI_PY=$UI_VENV/bin/python
UI_SELENIUM=4.51.0 # Python 3.10 or later; drives any Chromium through its own chromedriver

ADMIN_PASSWORD='the admin password of the ui test'
READER_PASSWORD='the reader password of the ui test'
ANNOTATION='<script>alert(1)</script>'
LABEL='<img src=x onerror=alert(2)>'
FIXTURE= # $E2E_WORK/fixture.json: what flows.py needs to know of the setup
BASE=    # node 1's address as the browser uses it
PEERS=

# ui_venv: the venv with the pinned Selenium, created when missing or different.
ui_venv() {
    local python
    if [[ -x $UI_PY ]] && "$UI_PY" -c "import sys, selenium
sys.exit(selenium.__version__ != '$UI_SELENIUM')" 2>/dev/null; then
        return 0
    fi
    python=$(berth_find_python) || return 1
    berth_log "creating $UI_VENV with $python (selenium $UI_SELENIUM)"
    mkdir -p "$BERTH_CACHE" || return 1
    "$python" -m venv --clear "$UI_VENV" || return 1
    "$UI_PY" -m pip install -q --disable-pip-version-check "selenium==$UI_SELENIUM"
}

# ui_flow FLOW... [OPTIONS]: runs browser flows; the first failure's message is the reason.
ui_flow() {
    local out=$SCENARIO_DIR/flows.out status=0
    PYTHONDONTWRITEBYTECODE=1 SE_OFFLINE=true bounded "$UI_PY" "$E2E_DIR/ui/flows.py" \
        --fixture "$FIXTURE" --artifacts "$SCENARIO_DIR" "$@" >"$out" 2>&1 || status=$?
    cat "$out"
    ((status == 0)) || die "$(grep -m1 '^flow .* failed: ' "$out" || echo "flows.py $* exited $status")"
}

# ---------------------------------------------------------------- setup

# berth_cli ARGS...: a berth admin command against node 1, authorized by the cluster secret.
berth_cli() {
    bounded "$BERTH_BIN" "$@" --node "http://$(node_host 1)" --cluster-secret-file "$CLUSTER_SECRET"
}

# push_blob REPO FILE: uploads FILE (POST, then one PUT with the digest) as admin; sets
# BLOB_DIGEST and BLOB_SIZE.
push_blob() {
    local repo=$1 file=$2 location
    BLOB_DIGEST=sha256:$(sha256_hex <"$file")
    BLOB_SIZE=$(wc -c <"$file")
    assert_eq "upload to $repo started" 202 "$(http_request POST "$BASE/v2/$repo/blobs/uploads/" \
        -u "admin:$ADMIN_PASSWORD")"
    location=$(response_header Location)
    [[ $location == http* ]] || location=$BASE$location
    if [[ $location == *\?* ]]; then
        location+="&"
    else
        location+="?"
    fi
    assert_eq "upload of $file to $repo" 201 "$(http_status PUT "${location}digest=$BLOB_DIGEST" \
        -u "admin:$ADMIN_PASSWORD" -H 'Content-Type: application/octet-stream' \
        --data-binary "@$file")"
}

# push_manifest REPO REFERENCE FILE: puts the manifest or index FILE (its own mediaType).
push_manifest() {
    local repo=$1 reference=$2 file=$3
    assert_eq "manifest $repo:$reference" 201 "$(http_status PUT \
        "$BASE/v2/$repo/manifests/$reference" -u "admin:$ADMIN_PASSWORD" \
        -H "Content-Type: $(jq -r .mediaType "$file")" --data-binary "@$file")"
}

# make_layer NAME: NAME.tar.gz, a reproducible tar of one random file, gzipped.
make_layer() {
    local name=$1
    mkdir -p "$name.d/opt/$name"
    random_bytes 3000 "$name" >"$name.d/opt/$name/data"
    tar -C "$name.d" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf "$name.tar" .
    gzip -n -c "$name.tar" >"$name.tar.gz"
}

# push_image REPO REF ARCH LAYERS [DESCRIPTION]: an image of LAYERS layers, with a full
# config (entrypoint, env, labels, history), pushed as REPO:REF, or by its own digest
# when REF is @NAME (an index's child). Sets IMAGE_DIGEST, IMAGE_SIZE, IMAGE_LAYERS (JSON).
push_image() {
    local repo=$1 ref=$2 arch=$3 layers=$4 description=${5:-} name i diffs=() descriptors=()
    name=${repo//\//-}-${ref#@}-$arch
    for ((i = 1; i <= layers; i++)); do
        make_layer "$name-$i"
        push_blob "$repo" "$name-$i.tar.gz"
        diffs+=("sha256:$(sha256_hex <"$name-$i.tar")")
        descriptors+=("$(jq -nc --arg d "$BLOB_DIGEST" --argjson s "$BLOB_SIZE" --arg t \
            application/vnd.oci.image.layer.v1.tar+gzip '{mediaType: $t, digest: $d, size: $s}')")
    done
    IMAGE_LAYERS=$(printf '%s\n' "${descriptors[@]}" | jq -sc .)
    jq -nc --arg arch "$arch" --arg name "$name" --arg note "$LABEL" \
        --argjson diffs "$(printf '%s\n' "${diffs[@]}" | jq -Rsc 'split("\n")[:-1]')" '{
        created: "2025-01-15T10:00:00Z", architecture: $arch, os: "linux",
        config: {Entrypoint: ["/usr/bin/hello-\($arch)"], Cmd: ["--serve"],
            Env: ["PATH=/usr/local/bin:/usr/bin", "HELLO_ARCH=\($arch)"],
            Labels: {"org.opencontainers.image.title": $name, "org.example.note": $note}},
        rootfs: {type: "layers", diff_ids: $diffs},
        history: [range($diffs | length) as $i |
            {created: "2025-01-15T10:00:00Z", created_by: "COPY layer-\($i + 1) /opt/"}]}' \
        >"$name.config.json"
    push_blob "$repo" "$name.config.json"
    jq -nc --arg d "$BLOB_DIGEST" --argjson s "$BLOB_SIZE" --argjson layers "$IMAGE_LAYERS" \
        --arg description "$description" '{schemaVersion: 2,
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $d, size: $s},
        layers: $layers}
        + if $description == "" then {} else
            {annotations: {"org.opencontainers.image.description": $description}} end' \
        >"$name.manifest.json"
    IMAGE_DIGEST=sha256:$(sha256_hex <"$name.manifest.json")
    IMAGE_SIZE=$(wc -c <"$name.manifest.json")
    if [[ $ref == @* ]]; then
        ref=$IMAGE_DIGEST
    fi
    push_manifest "$repo" "$ref" "$name.manifest.json"
}

# push_multiarch REPO TAG: an OCI index TAG over a linux/amd64 image (two layers) and a
# linux/arm64 one (one layer); writes what flows.py checks to index.json.
push_multiarch() {
    local repo=$1 tag=$2 arch layers children=()
    for arch in amd64 arm64; do
        layers=1
        [[ $arch == arm64 ]] || layers=2
        push_image "$repo" "@$tag" "$arch" "$layers"
        children+=("$(jq -nc --arg arch "$arch" --arg d "$IMAGE_DIGEST" --argjson s "$IMAGE_SIZE" \
            --argjson layers "$IMAGE_LAYERS" '{arch: $arch, digest: $d, size: $s, layers: $layers}')")
    done
    printf '%s\n' "${children[@]}" | jq -sc '{schemaVersion: 2,
        mediaType: "application/vnd.oci.image.index.v1+json",
        manifests: [.[] | {mediaType: "application/vnd.oci.image.manifest.v1+json",
            digest, size, platform: {architecture: .arch, os: "linux"}}]}' >"$tag.index.json"
    push_manifest "$repo" "$tag" "$tag.index.json"
    printf '%s\n' "${children[@]}" | jq -sc --arg tag "$tag" '{tag: $tag, children: (map({
        key: "linux/\(.arch)",
        value: {digest, layers, config_shows: ["/usr/bin/hello-\(.arch)", "HELLO_ARCH=\(.arch)"]}
        }) | from_entries)}' >index.json
}

# ui_setup: users, grants, repositories and images; writes $FIXTURE.
ui_setup() {
    printf '%s\n' "$ADMIN_PASSWORD" | berth_cli user add admin --admin --password-stdin
    printf '%s\n' "$READER_PASSWORD" | berth_cli user add reader --password-stdin
    push_multiarch acme/app v1
    push_image acme/app v2 amd64 1
    push_image acme/app old amd64 1
    push_image acme/app spare amd64 1
    push_image acme/app annotated amd64 1 "$ANNOTATION"
    push_image library/hello latest amd64 1
    push_image secret/hidden latest amd64 1
    berth_cli grant read acme/app --user reader
    berth_cli repo public library/hello
    jq -n --arg base "$BASE" --arg admin "$ADMIN_PASSWORD" --arg reader "$READER_PASSWORD" \
        --arg text "$ANNOTATION" --arg note "$LABEL" --slurpfile index index.json \
        --arg n1 "$(node_host 1)" --arg n2 "$(node_host 2)" --arg n3 "$(node_host 3)" '{
        base: $base, users: {admin: $admin, reader: $reader},
        repo: "acme/app", public: "library/hello", hidden: "secret/hidden",
        index: $index[0], annotated: {tag: "annotated", text: $text, label: $note},
        nodes: [$n1, $n2, $n3]}' >"$FIXTURE"
    # The reader and anonymous visitors can pull what the browser will show them.
    assert_eq "acme/app:v1 as reader" 200 "$(http_status HEAD "$BASE/v2/acme/app/manifests/v1" \
        -u "reader:$READER_PASSWORD" -H "Accept: $MANIFEST_ACCEPT")"
    assert_eq "library/hello:latest anonymously" 200 "$(http_status HEAD \
        "$BASE/v2/library/hello/manifests/latest" -H "Accept: $MANIFEST_ACCEPT")"
}

# ---------------------------------------------------------------- shell-side checks

# admin_tag_status REPO TAG: the registry's answer to a manifest HEAD, as admin.
admin_tag_status() {
    http_status HEAD "$BASE/v2/$1/manifests/$2" -u "admin:$ADMIN_PASSWORD" -H "Accept: $MANIFEST_ACCEPT"
}

# form_csrf FILE: the value of the first hidden csrf field in the HTML FILE.
form_csrf() {
    grep -o '<input[^>]*name="csrf"[^>]*>' "$1" | head -n 1 | sed -n 's/.*value="\([^"]*\)".*/\1/p'
}

# ui_post PATH [CURL ARGS...]: a form POST with the cookie jar; prints the status.
ui_post() {
    local path=$1
    shift
    curl -sS --max-time 30 -b jar -c jar -o post.html -w '%{http_code}' -H "Origin: $BASE" \
        "$@" "$BASE$path"
}

# curl_sign_in: signs in as admin with curl's cookie jar (./jar), as the form does.
curl_sign_in() {
    local csrf
    curl -fsS --max-time 30 -b jar -c jar -o signin.html "$BASE/ui/signin"
    csrf=$(form_csrf signin.html)
    [[ -n $csrf ]] || die "no csrf field in /ui/signin"
    assert_eq "sign-in POST with curl" 303 "$(ui_post /ui/signin -D signin.headers \
        --data-urlencode username=admin --data-urlencode "password=$ADMIN_PASSWORD" \
        --data-urlencode "csrf=$csrf")"
    grep -i '^set-cookie: berth_session=' signin.headers | grep -qi 'httponly' ||
        die "berth_session is set without HttpOnly: $(grep -i '^set-cookie' signin.headers)"
    grep -i '^set-cookie: berth_session=' signin.headers | grep -qi 'samesite=strict' ||
        die "berth_session is set without SameSite=Strict: $(grep -i '^set-cookie' signin.headers)"
}

# ---------------------------------------------------------------- scenarios

scenario_sign_in() { ui_flow sign-in; }
scenario_multi_arch() { ui_flow multi-arch; }
scenario_copy_pull() { ui_flow copy-pull; }
scenario_anonymous() { ui_flow anonymous; }
scenario_phone() { ui_flow phone; }

scenario_delete_tag() {
    ui_flow delete-tag
    assert_eq "acme/app:old after its delete" 404 "$(admin_tag_status acme/app old)"
    assert_eq "acme/app:v2 after the reader's refused delete" 200 "$(admin_tag_status acme/app v2)"
}

scenario_csrf() {
    local csrf
    ui_flow csrf
    curl_sign_in
    assert_eq "a delete without csrf" 403 "$(ui_post /ui/r/acme/app/-/v2/delete --data '')"
    grep -q 'id="error"' post.html || die "the refusal of a delete without csrf has no #error"
    assert_eq "a delete with a wrong csrf" 403 \
        "$(ui_post /ui/r/acme/app/-/v2/delete --data csrf=forged-value)"
    assert_eq "acme/app:v2 after two forged deletes" 200 "$(admin_tag_status acme/app v2)"
    # The same request with the page's own value works: the refusals were the csrf's.
    curl -fsS --max-time 30 -b jar -c jar -o repo.html "$BASE/ui/r/acme/app"
    csrf=$(form_csrf repo.html)
    [[ -n $csrf ]] || die "no csrf field on /ui/r/acme/app for a signed-in admin"
    assert_eq "a delete with the right csrf" 303 \
        "$(ui_post /ui/r/acme/app/-/spare/delete --data-urlencode "csrf=$csrf")"
    assert_eq "acme/app:spare after its delete" 404 "$(admin_tag_status acme/app spare)"
}

scenario_script_text() {
    local path status
    ui_flow script-text
    curl_sign_in
    for path in '/ui/r/%3Cscript%3E' '/ui/r/acme/%3Cscript%3Ealert(1)%3C%2Fscript%3E' \
        '/ui/r/acme/app/-/%3Cscript%3E' '/ui/?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E'; do
        status=$(curl -sS --max-time 30 -b jar -o page.html -w '%{http_code}' "$BASE$path")
        [[ $status =~ ^(200|400|401|403|404)$ ]] || die "GET $path answered $status"
        if grep -qi '<script>' page.html; then
            die "GET $path ($status) echoes an unescaped <script>: $(grep -oi '.\{0,40\}<script>.\{0,40\}' page.html | head -n 1)"
        fi
    done
}

scenario_screenshots() {
    local name
    ui_flow screenshots
    for name in repositories repository index image cluster signin phone; do
        [[ -s $UI_SCREENSHOTS/$name.png ]] || die "no screenshot $UI_SCREENSHOTS/$name.png"
    done
    if [[ ${E2E_KEEP:-0} == 1 || $UI_SCREENSHOTS != "$E2E_WORK"/* ]]; then
        scenario_note "screenshots in $UI_SCREENSHOTS"
    fi
}

scenario_node_down() {
    local leader n victim=
    ui_flow cluster
    leader=$(node_leader 1)
    # A follower other than node 1, whose page the browser watches.
    for n in 3 2; do
        if [[ $(node_host "$n") != "$leader" ]]; then
            victim=$n
            break
        fi
    done
    note "leader $leader; killing node $victim ($(node_host "$victim"))"
    stop_pid "${NODE_PID[victim]}" KILL
    NODE_PID[victim]=
    ui_flow node-down --down "$(node_host "$victim")"
    node_launch "$victim" "$PEERS" --bootstrap-expect 3
    defer node_stop "$victim"
    wait_until 60 "node $victim back in the cluster" cluster_agrees 3 "" -- 1 2 3
    ui_flow cluster
}

main() {
    if [[ ${1:-} == --venv ]]; then
        ui_venv
        return
    fi
    e2e_init
    if [[ $E2E_REGISTRY != berth ]]; then
        note "the web UI is berth's: nothing to run against $E2E_REGISTRY"
        summary ui
        return 0
    fi
    if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
        fail browser "chromium and chromium-driver are not installed (tests/run.sh installs them)"
        summary ui
        return 1
    fi
    if ! ui_venv; then
        fail browser "could not create the Selenium venv in $UI_VENV"
        summary ui
        return 1
    fi
    if [[ -n ${UI_SCREENSHOTS:-} && $UI_SCREENSHOTS != /* ]]; then
        UI_SCREENSHOTS=$PWD/$UI_SCREENSHOTS
    fi
    export UI_SCREENSHOTS=${UI_SCREENSHOTS:-$E2E_WORK/screenshots}
    defer cluster_stop
    CLUSTER_ARGS=(--auth --admins admin)
    if ! cluster_start; then
        fail cluster "the cluster did not form"
        summary ui
        return 1
    fi
    PEERS=$(cluster_peers 1 2 3)
    BASE=http://$(node_host 1)
    FIXTURE=$E2E_WORK/fixture.json
    note "cluster at $(node_host 1) $(node_host 2) $(node_host 3)"
    run_scenario setup ui_setup
    if ((E2E_FAILED > 0)); then
        summary ui
        return 1
    fi
    run_scenarios "$@"
    show_notes screenshots
    summary ui
}

main "$@"

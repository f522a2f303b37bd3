#!/usr/bin/env bash
# End-to-end tests of webhooks with real clients and a real receiver (webhooks/receiver.py):
# a docker push reaches endpoints in all three formats, each body valid against a JSON
# schema written from the format's documentation and signed; images built on a base by
# buildah (which annotates the base) and by a plain docker build (which does not) get a
# base.updated event when the base's tag moves, and an unrelated image does not; endpoints
# on loopback or metadata addresses are refused unless allowed.
#
# Usage: tests/e2e/webhooks.sh [SCENARIO...]   (default: all; see SCENARIOS below)
# Environment: see lib.sh.
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$E2E_DIR/lib.sh"

SCENARIOS=(webhook-formats rebuild-triggers webhook-refusals)
SECRET=e2e-webhook-signing-secret
RECEIVER_PORT=
RECEIVER_OUT=

# receiver_start: starts receiver.py on a free port, writing to $SCENARIO_DIR/received.
receiver_start() {
    local pid
    RECEIVER_OUT=$SCENARIO_DIR/received
    mkdir -p "$RECEIVER_OUT"
    RECEIVER_PORT=$(free_port)
    python3 "$E2E_DIR/webhooks/receiver.py" "$RECEIVER_PORT" "$SECRET" "$RECEIVER_OUT" \
        >"$SCENARIO_DIR/receiver.log" 2>&1 &
    pid=$!
    defer stop_pid "$pid"
    wait_until 10 "the receiver listens" port_in_use "$RECEIVER_PORT"
}

# hook ID PATH [ADD OPTIONS...]: adds endpoint ID posting to the receiver's /PATH.
hook() {
    local id=$1 path=$2
    shift 2
    printf '%s' "$SECRET" >"$SCENARIO_DIR/secret"
    bounded "$BERTH_BIN" webhook add --node "http://$REGISTRY_HOST" --id "$id" \
        --url "http://127.0.0.1:$RECEIVER_PORT/$path" --secret-file "$SCENARIO_DIR/secret" \
        --allow-internal "$@" >/dev/null
}

# received PATH: the number of requests the receiver recorded on /PATH.
received() {
    local file=$RECEIVER_OUT/$1.jsonl
    [[ -f $file ]] && wc -l <"$file" || echo 0
}

has_requests() { (($(received "$1") >= $2)); }

# has_events PATH N: the receiver got at least N events (Distribution's envelope) on /PATH.
has_events() {
    local file=$RECEIVER_OUT/$1.jsonl
    [[ -f $file ]] && (($(jq -s '[.[].body.events | length] | add' "$file") >= $2))
}

scenario_webhook_formats() {
    local ref format n
    docker version >/dev/null || die "docker daemon not reachable"
    receiver_start
    hook dist distribution --format distribution --events push
    hook hub hub --format hub --events push
    hook ce cloudevents --format cloudevents --events push
    ref=$REGISTRY_HOST/e2e-hooks/app:v$E2E_SEED
    defer docker_remove "$ref"
    docker_image "$ref"
    assert_digest "push" "$(docker_push "$ref")"
    for format in distribution hub cloudevents; do
        wait_until 30 "a $format request" has_requests "$format" 1
        n=$(python3 "$E2E_DIR/webhooks/check.py" "$E2E_DIR/webhooks/$format.schema.json" \
            "$RECEIVER_OUT/$format.jsonl")
        note "$format: $n requests valid and signed"
    done
    # What docker pushed is what the events name.
    jq -e --arg tag "v$E2E_SEED" '.body.events[0] | .action == "push" and .target.tag == $tag
        and .target.repository == "e2e-hooks/app"' "$RECEIVER_OUT/distribution.jsonl" >/dev/null ||
        die "distribution event: $(head -c 2000 "$RECEIVER_OUT/distribution.jsonl")"
    jq -e '.body.push_data.tag != "" and .body.repository.repo_name == "e2e-hooks/app"' \
        "$RECEIVER_OUT/hub.jsonl" >/dev/null || die "hub event: $(cat "$RECEIVER_OUT/hub.jsonl")"
    jq -e '.body.type == "berth.push" and .headers["content-type"] == "application/cloudevents+json"' \
        "$RECEIVER_OUT/cloudevents.jsonl" >/dev/null || die "cloudevent: $(cat "$RECEIVER_OUT/cloudevents.jsonl")"
    bounded "$BERTH_BIN" webhook deliveries dist --node "http://$REGISTRY_HOST" | grep -q " 200, " ||
        die "deliveries do not show the 200"
}

# buildah_cmd ARGS...: buildah with its storage in $SCENARIO_DIR/buildah.
buildah_cmd() {
    bounded buildah --root "$SCENARIO_DIR/buildah/root" --runroot "$SCENARIO_DIR/buildah/run" \
        --storage-driver vfs "$@"
}

scenario_rebuild_triggers() {
    local base=$REGISTRY_HOST/e2e-base/os:stable ctr dockerfile dir got want
    local on_docker=$REGISTRY_HOST/e2e-apps/docker-built:v1
    local on_buildah=$REGISTRY_HOST/e2e-apps/buildah-built:v1
    local other=$REGISTRY_HOST/e2e-apps/unrelated:v1
    docker version >/dev/null || die "docker daemon not reachable"
    receiver_start
    hook rebuild rebuild --events base.updated
    defer docker_remove "$base" "$on_docker" "$other"
    docker_image "$base"
    assert_digest "base push" "$(docker_push "$base")"
    # A plain docker build: layers only, no annotation.
    dir=$SCENARIO_DIR/build
    mkdir -p "$dir"
    random_bytes 50000 app >"$dir/app.bin"
    printf 'FROM %s\nCOPY app.bin /app.bin\n' "$base" >"$dir/Dockerfile"
    DOCKER_BUILDKIT=0 bounded docker build -q -t "$on_docker" "$dir" >/dev/null
    assert_digest "docker-built push" "$(docker_push "$on_docker")"
    # buildah, which records the base in annotations.
    ctr=$(buildah_cmd from --tls-verify=false "docker://$base")
    buildah_cmd copy "$ctr" "$dir/app.bin" /buildah.bin >/dev/null
    buildah_cmd commit --tls-verify=false "$ctr" "docker://$on_buildah" >/dev/null
    curl -fsS -H "Accept: application/vnd.oci.image.manifest.v1+json" \
        "http://$REGISTRY_HOST/v2/e2e-apps/buildah-built/manifests/v1" |
        jq -e '.annotations["org.opencontainers.image.base.digest"] != null' >/dev/null ||
        die "buildah wrote no base annotation"
    docker_image "$other"
    assert_digest "unrelated push" "$(docker_push "$other")"
    want=$(printf '%s\n' e2e-apps/buildah-built e2e-apps/docker-built)
    got=$(bounded "$BERTH_BIN" image dependents --json --node "http://$REGISTRY_HOST" e2e-base/os:stable |
        jq -r '.[].repository' | sort)
    assert_eq "dependents of the base" "$want" "$got"
    # The base moves: exactly the two get base.updated.
    docker_image "$base"
    assert_digest "new base push" "$(docker_push "$base")"
    wait_until 30 "two base.updated events" has_events rebuild 2
    sleep 2
    got=$(jq -r '.body.events[] | select(.action == "base.updated") | .target.repository' \
        "$RECEIVER_OUT/rebuild.jsonl" | sort)
    assert_eq "images told to rebuild" "$want" "$got"
    jq -e '.body.events[0].berth.base.repository == "e2e-base/os" and
        .body.events[0].berth.base.tag == "stable"' "$RECEIVER_OUT/rebuild.jsonl" >/dev/null ||
        die "base not named: $(cat "$RECEIVER_OUT/rebuild.jsonl")"
}

scenario_webhook_refusals() {
    local url out
    for url in http://127.0.0.1:9/hook http://169.254.169.254/latest/meta-data/ http://localhost/x; do
        if out=$(bounded "$BERTH_BIN" webhook add --node "http://$REGISTRY_HOST" --id refused \
            --url "$url" 2>&1); then
            die "an endpoint at $url was accepted"
        fi
        grep -q "allow-internal" <<<"$out" || die "refusal of $url does not say why: $out"
    done
    bounded "$BERTH_BIN" webhook add --node "http://$REGISTRY_HOST" --id allowed \
        --url http://127.0.0.1:9/hook --allow-internal >/dev/null
    bounded "$BERTH_BIN" webhook remove --node "http://$REGISTRY_HOST" allowed >/dev/null
}

main() {
    e2e_init
    if [[ $E2E_REGISTRY != berth ]]; then
        note "webhooks are berth's: nothing to run against $E2E_REGISTRY"
        summary webhooks
        return 0
    fi
    defer registry_stop
    if ! registry_start "$E2E_WORK/registry"; then
        fail registry "could not start $E2E_REGISTRY"
        summary webhooks
        return 1
    fi
    note "registry at $REGISTRY_HOST (pid $REGISTRY_PID)"
    run_scenarios "$@"
    summary webhooks
}

main "$@"

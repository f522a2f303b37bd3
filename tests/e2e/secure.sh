#!/usr/bin/env bash
# berth over HTTPS with htpasswd users, driven by real clients. A test CA signs the
# node's certificate (127.0.0.1 and localhost); alice has a bcrypt password.
#   secure-docker    docker login, push, rmi and pull over HTTPS (docker trusts
#                    127.0.0.0/8 without checking certificates: this shows the
#                    credentials flow over TLS); a push without login is refused
#   secure-skopeo    skopeo copy with --dest-creds, checking the certificate against
#                    the CA; wrong credentials and an unknown CA are refused
#   secure-podman    podman login with the CA, pull and push again
#   secure-plain     the port speaks no plain HTTP
#   secure-accounts  the berth commands over HTTPS make a user, an organization and a
#                    robot; docker pushes as the robot (only where it may), pulls
#                    anonymously once the repository is public, and is refused once
#                    the robot is deleted
# Usage: tests/e2e/secure.sh [SCENARIO...]
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$E2E_DIR/lib.sh"

SCENARIOS=(secure-docker secure-skopeo secure-podman secure-plain secure-accounts)
USER_NAME=alice
PASSWORD='a long password for alice'
CERTS=   # the CA and the node's certificate; also a cert dir for skopeo and podman
REGISTRY_URL=

secure_answers() {
    [[ $(curl -sS -o /dev/null -w '%{http_code}' --max-time 2 --cacert "$CERTS/ca.crt" \
        "$REGISTRY_URL/healthz" 2>/dev/null) == 200 ]]
}

start_secure() {
    local data=$E2E_WORK/registry port
    CERTS=$E2E_WORK/certs
    make_certs "$CERTS"
    htpasswd -Bbn "$USER_NAME" "$PASSWORD" >"$CERTS/htpasswd" 2>/dev/null
    port=$(free_port)
    REGISTRY_HOST=127.0.0.1:$port
    REGISTRY_URL=https://$REGISTRY_HOST
    REGISTRY_LOG=$data.log
    mkdir -p "$data"
    "$BERTH_BIN" serve --data-dir "$data" --listen "$REGISTRY_HOST" \
        --tls-cert "$CERTS/node.crt" --tls-key "$CERTS/node.key" \
        --htpasswd "$CERTS/htpasswd" --admins "$USER_NAME" >>"$REGISTRY_LOG" 2>&1 &
    REGISTRY_PID=$!
    wait_until "$E2E_STARTUP_TIMEOUT" "berth to answer over HTTPS" secure_answers || {
        tail -n 20 "$REGISTRY_LOG" >&2
        return 1
    }
}

docker_image_id() {
    docker --config "$1" image inspect --format '{{.Id}}' "$2"
}

scenario_secure_docker() {
    local config=$SCENARIO_DIR/docker-config anonymous=$SCENARIO_DIR/anonymous
    local local_ref remote_ref image_id
    local_ref=berth-e2e/secure:$E2E_SEED
    remote_ref=$REGISTRY_HOST/e2e/secure:$E2E_SEED
    mkdir -p "$config" "$anonymous"
    defer docker_remove "$local_ref" "$remote_ref"
    make_rootfs rootfs
    tar -C rootfs -c . | bounded docker import - "$local_ref" >/dev/null
    docker tag "$local_ref" "$remote_ref"
    image_id=$(docker_image_id "$config" "$remote_ref")

    if bounded docker --config "$anonymous" push "$remote_ref" >push.out 2>&1; then
        die "a push without credentials was accepted"
    fi
    grep -qi "auth" push.out || die "unexpected refusal: $(cat push.out)"
    printf '%s\n' "$PASSWORD" |
        bounded docker --config "$config" login -u "$USER_NAME" --password-stdin "$REGISTRY_HOST"
    bounded docker --config "$config" push "$remote_ref"
    docker image rm "$local_ref" "$remote_ref" >/dev/null
    bounded docker --config "$config" pull "$remote_ref"
    assert_eq "image id after pull" "$image_id" "$(docker_image_id "$config" "$remote_ref")"
}

scenario_secure_skopeo() {
    local ref=docker://$REGISTRY_HOST/e2e/secure-skopeo:v1
    make_image src v1 amd64
    if bounded skopeo copy --dest-creds "$USER_NAME:wrong" --dest-cert-dir "$CERTS/trust" \
        oci:src:v1 "$ref" >wrong.out 2>&1; then
        die "wrong credentials were accepted"
    fi
    grep -qi "unauthorized\|authentication required" wrong.out || die "unexpected: $(cat wrong.out)"
    if bounded skopeo copy --dest-creds "$USER_NAME:$PASSWORD" oci:src:v1 "$ref" >ca.out 2>&1; then
        die "a certificate from an unknown CA was accepted"
    fi
    grep -qi "certificate" ca.out || die "unexpected: $(cat ca.out)"
    bounded skopeo copy --dest-creds "$USER_NAME:$PASSWORD" --dest-cert-dir "$CERTS/trust" \
        oci:src:v1 "$ref"
    bounded skopeo copy --src-creds "$USER_NAME:$PASSWORD" --src-cert-dir "$CERTS/trust" \
        "$ref" oci:back:v1
    assert_eq "digest pulled back" "$(layout_digest src v1)" "$(layout_digest back v1)"
    layout_check_image back "$(layout_digest back v1)"
}

scenario_secure_podman() {
    local ref=$REGISTRY_HOST/e2e/secure-podman:v1 again=$REGISTRY_HOST/e2e/secure-podman:again
    make_image src v1 amd64
    bounded skopeo copy --dest-creds "$USER_NAME:$PASSWORD" --dest-cert-dir "$CERTS/trust" \
        oci:src:v1 "docker://$ref"
    export REGISTRY_AUTH_FILE=$SCENARIO_DIR/auth.json
    printf '%s\n' "$PASSWORD" |
        podman_cmd login --cert-dir "$CERTS/trust" -u "$USER_NAME" --password-stdin "$REGISTRY_HOST"
    podman_cmd pull --cert-dir "$CERTS/trust" "$ref"
    podman_cmd tag "$ref" "$again"
    podman_cmd push --cert-dir "$CERTS/trust" "$again"
    podman_cmd logout "$REGISTRY_HOST"
    if podman_cmd pull --cert-dir "$CERTS/trust" "$again" >anonymous.out 2>&1; then
        die "a pull after logout was accepted"
    fi
}

scenario_secure_plain() {
    local status
    status=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 "http://$REGISTRY_HOST/v2/" 2>/dev/null || true)
    [[ $status != 200 && $status != 401 ]] || die "plain HTTP answered $status"
}

# berth_admin ARGS...: a berth access command against the node, as alice.
berth_admin() {
    BERTH_PASSWORD=$PASSWORD bounded "$BERTH_BIN" "$@" --node "$REGISTRY_URL" \
        --login "$USER_NAME" --ca-cert "$CERTS/ca.crt"
}

scenario_secure_accounts() {
    local robot=$SCENARIO_DIR/robot anonymous=$SCENARIO_DIR/anonymous secret
    local local_ref app other image_id
    local_ref=berth-e2e/accounts:$E2E_SEED
    app=$REGISTRY_HOST/acme/app:$E2E_SEED
    other=$REGISTRY_HOST/acme/other:$E2E_SEED
    mkdir -p "$robot" "$anonymous"
    defer docker_remove "$local_ref" "$app" "$other"
    printf 'bobs password\n' | berth_admin user add bob --password-stdin
    berth_admin org add acme --owner bob
    berth_admin robot add acme+ci --repository acme/app --level write --expires-in-days 1 >robot.out
    secret=$(awk '$1 == "secret" { print $2 }' robot.out)
    [[ ${#secret} -eq 64 ]] || die "no robot secret in: $(cat robot.out)"
    berth_admin access >access.json
    jq -e '.organizations.acme.teams.owners == ["bob"] and (.robots["acme+ci"].level == "write")' \
        access.json >/dev/null || die "unexpected access state: $(cat access.json)"
    grep -q "$secret" access.json && die "the robot secret is shown"

    make_rootfs rootfs
    tar -C rootfs -c . | bounded docker import - "$local_ref" >/dev/null
    docker tag "$local_ref" "$app"
    docker tag "$local_ref" "$other"
    image_id=$(docker_image_id "$robot" "$app")
    printf '%s\n' "$secret" |
        bounded docker --config "$robot" login -u acme+ci --password-stdin "$REGISTRY_HOST"
    bounded docker --config "$robot" push "$app"
    if bounded docker --config "$robot" push "$other" >other.out 2>&1; then
        die "the robot pushed outside its repository"
    fi
    grep -qi "denied" other.out || die "unexpected refusal: $(cat other.out)"

    # Private: no anonymous pull. Public: docker pulls with an anonymous token.
    docker image rm "$app" >/dev/null
    if bounded docker --config "$anonymous" pull "$app" >private.out 2>&1; then
        die "an anonymous pull of a private repository worked"
    fi
    berth_admin repo public acme/app
    bounded docker --config "$anonymous" pull "$app"
    assert_eq "image id after an anonymous pull" "$image_id" "$(docker_image_id "$anonymous" "$app")"

    berth_admin robot delete acme+ci
    if bounded docker --config "$robot" push "$app" >revoked.out 2>&1; then
        die "a deleted robot still pushed"
    fi
    grep -q 'berth::audit.*access changed.*delete robot acme+ci' "$REGISTRY_LOG" ||
        die "no audit event for the robot's deletion"
}

main() {
    e2e_init
    defer registry_stop
    if [[ $E2E_REGISTRY != berth ]]; then
        note "secure tests skipped (E2E_REGISTRY=$E2E_REGISTRY)"
        summary secure
        return
    fi
    if ! start_secure; then
        fail registry "could not start berth with TLS and htpasswd"
        summary secure
        return 1
    fi
    note "berth over HTTPS at $REGISTRY_HOST (pid $REGISTRY_PID)"
    run_scenarios "$@"
    summary secure
}

main "$@"

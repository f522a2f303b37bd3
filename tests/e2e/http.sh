#!/usr/bin/env bash
# End-to-end tests of the HTTP layer with real clients: a refused upload with
# `Expect: 100-continue` sends no body, clients that send their headers a byte a second
# stop nobody's pull and are cut off, and docker (Go's HTTP client) completes a push
# through haproxy after a refusal in the middle of it.
#
# Usage: tests/e2e/http.sh [SCENARIO...]   (default: all; see SCENARIOS below)
# Environment: see lib.sh. These scenarios test berth's own limits, so with
# E2E_REGISTRY=distribution they are skipped.
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$E2E_DIR/lib.sh"

SCENARIOS=(expect-refused slowloris docker-refusal-through-haproxy)

# Connections of the slowloris scenario, and how long they dribble.
SLOW_CONNECTIONS=200
SLOW_SECONDS=12
HEADER_TIMEOUT=4

scenario_registry() {
    defer registry_stop
    registry_start "$SCENARIO_DIR/data" || die "registry did not start"
}

# access_line METHOD PATH_PART: the last access-log line of such a request.
access_line() {
    grep "berth::access" "$REGISTRY_LOG" | grep "method=$1" | grep -F "$2" | tail -n 1
}

# A 1 GiB upload to a repository the caller may not push to is answered before curl
# sends the body: curl waits for `100 Continue`, which never comes.
scenario_expect_refused() {
    local file=$SCENARIO_DIR/big answer code sent line
    BERTH_ARGS=(--auth)
    scenario_registry
    truncate -s 1G "$file"
    # No slash before the query: curl -T would append the file's name to one.
    answer=$(bounded curl -sS -o /dev/null --max-time 120 --expect100-timeout 30 \
        -H 'Expect: 100-continue' -w '%{http_code} %{size_upload}' -X POST -T "$file" \
        "http://$REGISTRY_HOST/v2/acme/app/blobs/uploads?digest=sha256:$(printf '0%.0s' {1..64})")
    read -r code sent <<<"$answer"
    assert_eq "status of the refused upload" 401 "$code"
    line=$(access_line POST /v2/acme/app/blobs/uploads)
    [[ $line =~ received=([0-9]+) ]] || die "no access-log line with received= for the POST: $line"
    scenario_note "curl sent $sent body bytes; berth received ${BASH_REMATCH[1]}"
    assert_eq "body bytes berth received" 0 "${BASH_REMATCH[1]}"
    assert_eq "body bytes curl sent" 0 "$sent"
}

# slow_clients HOST COUNT SECONDS: COUNT connections that send a request head one byte a
# second for at most SECONDS; prints how many the server closed before the end.
slow_clients() {
    python3 - "$@" <<'EOF'
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
count, seconds = int(sys.argv[2]), float(sys.argv[3])
head = b"GET /v2/ HTTP/1.1\r\nHost: slow\r\nX-Slow: " + b"a" * 4096
conns = []
for _ in range(count):
    s = socket.create_connection((host, int(port)), timeout=5)
    s.setblocking(False)
    conns.append(s)
closed = set()
end = time.monotonic() + seconds
i = 0
while time.monotonic() < end and len(closed) < count:
    for n, s in enumerate(conns):
        if n in closed:
            continue
        try:
            s.send(head[i:i + 1])
            if s.recv(4096) == b"":
                closed.add(n)
        except BlockingIOError:
            pass
        except OSError:
            closed.add(n)
    i = min(i + 1, len(head) - 1)
    time.sleep(1)
for s in conns:
    s.close()
print(len(closed))
EOF
}

# 200 connections dribbling their headers hold nothing a normal pull needs, and each is
# closed once the header timeout passes.
scenario_slowloris() {
    local repo=e2e/slow source closed started
    BERTH_ARGS=(--header-timeout "$HEADER_TIMEOUT")
    scenario_registry
    make_image src v1 amd64 2
    source=$(layout_digest src v1)
    skopeo_push oci:src:v1 "$repo:v1"
    slow_clients "$REGISTRY_HOST" "$SLOW_CONNECTIONS" "$SLOW_SECONDS" >"$SCENARIO_DIR/closed" &
    local slow_pid=$!
    defer stop_pid "$slow_pid"
    sleep 1
    started=$SECONDS
    skopeo_pull "$repo:v1" oci:out:v1
    layout_check_image out "$source"
    scenario_note "pull during $SLOW_CONNECTIONS slow connections: $((SECONDS - started))s"
    wait "$slow_pid" || die "the slow clients failed"
    closed=$(cat "$SCENARIO_DIR/closed")
    scenario_note "slow connections closed by berth within ${SLOW_SECONDS}s: $closed of $SLOW_CONNECTIONS"
    assert_eq "slow connections closed by the header timeout" "$SLOW_CONNECTIONS" "$closed"
}

# haproxy_refusing_config LISTEN BACKEND: haproxy in front of BACKEND that gives the
# first PATCH it forwards a Content-Range the upload cannot take, so berth answers 416
# in the middle of the push.
haproxy_refusing_config() {
    cat <<EOF
global
    maxconn 256

defaults
    mode http
    timeout connect 5s
    timeout client 5m
    timeout server 5m
    log stdout format raw local0
    option httplog

frontend registry
    bind $1
    log global
    stick-table type integer size 1 store gpc0
    http-request track-sc0 int(1)
    http-request set-header Content-Range 1048576-1048577 if { method PATCH } { sc0_get_gpc0 eq 0 }
    http-request sc-inc-gpc0(0) if { method PATCH }
    default_backend berth

backend berth
    http-reuse always
    server b $2
EOF
}

# docker pushes through haproxy, which provokes one out-of-order refusal; the push then
# completes with the same client, and no request after the refusal fails. docker's
# registry transport opens a connection per request, so this shows a refusal mid-push
# is survived end to end; the reuse of a connection after a refusal, which Go clients
# with keep-alive (containerd, the conformance suite) depend on, is tests/it/reuse.rs.
scenario_docker_refusal_through_haproxy() {
    local repo=e2e/refused tag=t$E2E_SEED local_ref remote_ref lb_port lb_pid pushed
    docker version >/dev/null || die "docker daemon not reachable"
    scenario_registry
    lb_port=$(free_port)
    haproxy_refusing_config "127.0.0.1:$lb_port" "$REGISTRY_HOST" >haproxy.cfg
    haproxy -c -q -f haproxy.cfg || die "haproxy refused its configuration"
    haproxy -f haproxy.cfg -db >haproxy.log 2>&1 &
    lb_pid=$!
    defer stop_pid "$lb_pid"
    wait_until 30 "haproxy to answer" \
        bash -c "[[ \$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$lb_port/v2/) == 200 ]]" ||
        die "haproxy did not start: $(tail -n 5 haproxy.log)"

    local_ref=berth-e2e/refused:$tag
    remote_ref=127.0.0.1:$lb_port/$repo:$tag
    defer docker_remove "$local_ref" "$remote_ref"
    make_rootfs rootfs
    tar -C rootfs -c . | bounded docker import - "$local_ref"
    docker tag "$local_ref" "$remote_ref"
    pushed=$(docker_push "$remote_ref" 2>push.log)
    assert_digest "docker push digest" "$pushed"
    assert_eq "registry digest" "$pushed" "$(manifest_digest "$repo" "$tag")"
    grep -q ' 416 ' haproxy.log || die "haproxy saw no 416: the refusal was not provoked"
    # After the refusal every request must get an answer from berth: a connection
    # berth dropped would show as a 502 or a server-side abort (state S?/SH/SD).
    if awk '/ 416 /{seen=1; next} seen' haproxy.log | grep -E ' 50[234] | S[HDC]-- ' >&2; then
        die "a request after the refusal failed in haproxy"
    fi
    scenario_note "docker retries: $(grep -c 'Retrying' push.log || true)"
}

main() {
    e2e_init
    if [[ $E2E_REGISTRY != berth ]]; then
        note "these scenarios test berth's HTTP limits; skipped for $E2E_REGISTRY"
        summary http
        return
    fi
    run_scenarios "$@"
    summary http
}

main "$@"

# shellcheck shell=bash
# auth-manifest and tls-get: what authentication and HTTPS cost, berth against itself.
# The reference side is berth serving plain HTTP without users; the candidate is berth
# with an htpasswd file (auth-manifest) or a certificate (tls-get). Every request, to
# either side, carries the same credentials and trusts the same CA, so both sides get
# the same bytes and only the candidate checks them.

BENCH_USER=bench
BENCH_PASSWORD='a long benchmark password'

# secure_file NAME : the run's htpasswd file, certificate or key, made on first use.
secure_file() {
    local dir=$WORK_DIR/secure
    if [[ ! -e $dir/done ]]; then
        mkdir -p "$dir"
        # Cost 10, bcrypt's usual: what a real htpasswd file holds.
        htpasswd -bnBC 10 "$BENCH_USER" "$BENCH_PASSWORD" >"$dir/htpasswd" 2>/dev/null ||
            die "htpasswd failed (apt-get install apache2-utils)"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
            -subj "/CN=berth bench" -addext "subjectAltName=IP:127.0.0.1" \
            -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null || die "openssl req failed"
        touch "$dir/done"
    fi
    printf '%s\n' "$dir/$1"
}

# secure_pair_start KIND : the plain berth as reference, a berth of KIND as candidate.
secure_pair_start() {
    PAIR_COUNT=$((PAIR_COUNT + 1))
    sync
    CURL_EXTRA=(-u "$BENCH_USER:$BENCH_PASSWORD" --cacert "$(secure_file cert.pem)")
    WRK_AUTH="Basic $(printf '%s:%s' "$BENCH_USER" "$BENCH_PASSWORD" | base64 -w0)"
    start_side ref berth
    start_side cand "$1"
    log "plain berth ${REG_URL[ref]} (pid ${REG_PID[ref]}), $1 ${REG_URL[cand]} (pid ${REG_PID[cand]})"
}

secure_pair_stop() {
    pair_stop
    CURL_EXTRA=()
    WRK_AUTH=
}

measure_auth_manifest() {
    local path=/v2/bench/small/manifests/latest
    secure_pair_start berth-auth
    rate_runs GET "$MANIFEST_ACCEPT" "$path"
    record_samples "manifest GET with basic auth (bcrypt cost 10) vs none, berth vs berth" req/s rate 'ratio>=0.8'
    record_samples "manifest GET with basic auth vs none, p99 latency" ms p99 'report'
    # The same with the token a client gets from the candidate's token endpoint.
    WRK_AUTH="Bearer $(bearer_token "${REG_URL[cand]}" repository:bench/small:pull)"
    rate_runs GET "$MANIFEST_ACCEPT" "$path"
    record_samples "manifest GET with a bearer token vs none, berth vs berth" req/s rate 'ratio>=0.8'
    record_samples "manifest GET with a bearer token vs none, p99 latency" ms p99 'report'
    secure_pair_stop
}

# bearer_token BASE_URL SCOPE : a token from the node's /auth/token.
bearer_token() {
    curl -sS -f "${CURL_EXTRA[@]}" "$1/auth/token?service=berth&scope=$2" | jq -r .token ||
        die "no token from $1"
}

measure_tls_get() {
    local file
    file=$(blob_file "$BENCH_SIZE_MIB" 1)
    secure_pair_start berth-tls
    get_runs bench/tls "$file"
    secure_pair_stop
    record_samples "GET $(size_label "$BENCH_SIZE_MIB") over HTTPS vs plain HTTP, berth vs berth" MB/s get 'report'
}

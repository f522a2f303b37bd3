# shellcheck shell=bash
# HTTP clients driving the registries: curl for blob and manifest transfers, wrk for
# request rates. Sourced by bench/run.sh.

# curl_expect CODE ARGS... : one curl request that must answer CODE. Prints
# "<time_total> <size_download> <size_upload>" and leaves the response headers in
# $WORK_DIR/last.headers.
curl_expect() {
    local expected=$1 out code
    shift
    out=$(curl -sS -o /dev/null -D "$WORK_DIR/last.headers" -H 'Expect:' "${CURL_EXTRA[@]}" \
        -w '%{http_code} %{time_total} %{size_download} %{size_upload}' "$@") ||
        die "curl failed: $*"
    code=${out%% *}
    [[ $code == "$expected" ]] || die "expected HTTP $expected, got $code: $*"
    printf '%s\n' "${out#* }"
}

# last_location BASE_URL : the Location header of the last response, made absolute.
last_location() {
    local location
    location=$(awk 'tolower($1) == "location:" { sub(/\r$/, "", $2); print $2 }' "$WORK_DIR/last.headers")
    [[ -n $location ]] || die "response carried no Location header"
    [[ $location == /* ]] && location="$1$location"
    printf '%s\n' "$location"
}

# with_digest LOCATION DIGEST : LOCATION with the digest query parameter added.
with_digest() {
    if [[ $1 == *\?* ]]; then printf '%s&digest=%s\n' "$1" "$2"; else printf '%s?digest=%s\n' "$1" "$2"; fi
}

# start_upload BASE_URL REPO : opens an upload session, prints its absolute location.
start_upload() {
    curl_expect 202 -X POST "$1/v2/$2/blobs/uploads/" >/dev/null
    last_location "$1"
}

# put_blob BASE_URL REPO FILE : monolithic upload (POST, then one PUT carrying the whole
# body and the digest). Prints the seconds the PUT took.
put_blob() {
    local base=$1 repo=$2 file=$3 location stats
    location=$(start_upload "$base" "$repo")
    stats=$(curl_expect 201 -T "$file" -H 'Content-Type: application/octet-stream' \
        "$(with_digest "$location" "$(digest_of "$file")")")
    printf '%s\n' "${stats%% *}"
}

# patch_blob BASE_URL REPO FILE : streamed upload as skopeo sends it (POST, one PATCH with
# the whole body and no Content-Range, PUT ?digest= with an empty body). Prints seconds.
patch_blob() {
    local base=$1 repo=$2 file=$3 location patch put
    location=$(start_upload "$base" "$repo")
    patch=$(curl_expect 202 -X PATCH -T "$file" -H 'Content-Type: application/octet-stream' "$location")
    location=$(last_location "$base")
    put=$(curl_expect 201 -X PUT --data-binary '' -H 'Content-Type: application/octet-stream' \
        "$(with_digest "$location" "$(digest_of "$file")")")
    calc "${patch%% *} + ${put%% *}"
}

# get_blob BASE_URL REPO FILE : downloads the blob uploaded from FILE, checks its size,
# prints seconds.
get_blob() {
    local base=$1 repo=$2 file=$3 stats seconds size
    stats=$(curl_expect 200 "$base/v2/$repo/blobs/$(digest_of "$file")")
    read -r seconds size _ <<<"$stats"
    [[ $size == "$(size_of "$file")" ]] || die "GET returned $size bytes, expected $(size_of "$file")"
    printf '%s\n' "$seconds"
}

# push_small_image BASE_URL REPO TAG : config, layer and empty blobs, then the OCI manifest.
push_small_image() {
    local base=$1 repo=$2 tag=$3 dir
    dir=$(small_image)
    put_blob "$base" "$repo" "$dir/config.json" >/dev/null
    put_blob "$base" "$repo" "$dir/layer.bin" >/dev/null
    put_blob "$base" "$repo" "$dir/empty.bin" >/dev/null
    curl_expect 201 -X PUT -H "Content-Type: $OCI_MANIFEST" --data-binary "@$dir/manifest.json" \
        "$base/v2/$repo/manifests/$tag" >/dev/null
}

# run_wrk URL METHOD ACCEPT : one wrk run; prints "<requests per second> <p99 in ms>".
run_wrk() {
    local url=$1 method=$2 accept=$3 out result
    out=$(BENCH_WRK_METHOD=$method BENCH_WRK_ACCEPT=$accept BENCH_WRK_AUTH=$WRK_AUTH \
        wrk -t"$BENCH_WRK_THREADS" -c"$BENCH_WRK_CONNECTIONS" -d"$BENCH_WRK_DURATION" --latency \
        -s "$BENCH_DIR/wrk/request.lua" "$url") || die "wrk failed against $url"
    result=$(grep '^bench-result ' <<<"$out") || die "wrk printed no result: $out"
    # bench-result <requests> <duration_us> <p99_us> <errors>
    read -r _ requests duration_us p99_us errors <<<"$result"
    ((errors == 0)) || die "wrk saw $errors failed requests against $url"
    ((requests > 0)) || die "wrk completed no requests against $url"
    printf '%s %s\n' "$(calc "$requests / ($duration_us / 1000000)")" "$(calc "$p99_us / 1000")"
}

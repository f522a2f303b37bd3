# shellcheck shell=bash
# ui-tags: the web UI's repository page, berth's GET /ui/r/REPO (server-rendered HTML,
# the first 50 tags with digest, size, push time and platforms), of a repository with
# BENCH_UI_TAGS tags. Distribution has no UI: its reference is the listing of the same
# tags, GET /v2/REPO/tags/list?n=50 (Distribution 2.8 has no paging of tags: it answers
# with every tag whatever n says). berth's own listing makes the second pair of rows.
#
# Each side gets one small image (a config blob and an OCI manifest with no layers)
# tagged BENCH_UI_TAGS times by bench/lib/tags.py. Checked once: both listings hold
# every tag, berth's lists 50 with n=50 and its page shows 50 rows (class="tag"). Then
# BENCH_UI_REQUESTS rounds of one GET of each of the three pages, a fresh curl each,
# in an order that turns with the round; p50 and p99 of each page.

: "${BENCH_UI_TAGS:=10000}"
: "${BENCH_UI_REQUESTS:=300}"
: "${BENCH_UI_CLIENTS:=4}"

UI_TAGS_PY="$BENCH_DIR/lib/tags.py"
UI_REPO=bench/ui
UI_PAGES=(page ref-list cand-list)

measure_ui_tags() {
    local side round k page p50 p99
    ((BENCH_UI_TAGS > 0 && BENCH_UI_REQUESTS > 0)) || die "BENCH_UI_TAGS and BENCH_UI_REQUESTS must be positive"
    samples_reset
    sync
    start_side ref distribution
    start_side cand berth
    for side in ref cand; do
        ui_fill "$side"
    done
    ui_check_list ref
    ui_check_list cand
    ui_check_page
    for page in "${UI_PAGES[@]}"; do
        : >"$WORK_DIR/ui-$page.seconds"
    done
    log "timing $BENCH_UI_REQUESTS GETs of each of: ${UI_PAGES[*]}"
    for ((round = 0; round < BENCH_UI_REQUESTS; round++)); do
        for ((k = 0; k < ${#UI_PAGES[@]}; k++)); do
            page=${UI_PAGES[(round + k) % ${#UI_PAGES[@]}]}
            ui_get "$page" >>"$WORK_DIR/ui-$page.seconds"
        done
    done
    stop_side ref
    stop_side cand
    for page in "${UI_PAGES[@]}"; do
        read -r p50 p99 < <(p50_p99 1000 <"$WORK_DIR/ui-$page.seconds")
        log "$page: p50 $p50 ms, p99 $p99 ms"
        case $page in
            page) ui_samples ui cand "$p50" "$p99" ;;
            ref-list) ui_samples ui ref "$p50" "$p99"; ui_samples list ref "$p50" "$p99" ;;
            cand-list) ui_samples list cand "$p50" "$p99" ;;
        esac
    done
    record_samples "ui-tags: page of a repository with $BENCH_UI_TAGS tags, first 50 (reference: tags/list?n=50), p50" \
        ms ui-p50 report
    record_samples "ui-tags: the same page, p99" ms ui-p99 'max=50'
    record_samples "ui-tags: tags/list?n=50 of the same repository, Distribution vs berth, p50" ms list-p50 report
    record_samples "ui-tags: the same listing, p99" ms list-p99 report
}

# ui_fill SIDE : the small image under BENCH_UI_TAGS tags on SIDE, every one listed.
ui_fill() {
    local side=$1 out listed
    log "$(side_label "$side"): tagging one image $BENCH_UI_TAGS times with $BENCH_UI_CLIENTS clients"
    out=$(python3 "$UI_TAGS_PY" fill "${REG_URL[$side]}" "$UI_REPO" "$BENCH_UI_TAGS" "$BENCH_UI_CLIENTS") ||
        die "tagging on $(side_label "$side") failed"
    listed=$(python3 "$UI_TAGS_PY" count "${REG_URL[$side]}" "$UI_REPO" $((BENCH_UI_TAGS / 1000 + 2))) ||
        die "listing the tags on $(side_label "$side") failed"
    log "$(side_label "$side"): $BENCH_UI_TAGS tags in ${out#* } s, $listed listed"
    ((listed == BENCH_UI_TAGS)) ||
        die "$(side_label "$side") lists $listed tags of $UI_REPO, expected $BENCH_UI_TAGS"
}

# ui_rows_expected : the rows a first page shows.
ui_rows_expected() {
    printf '%s\n' $((BENCH_UI_TAGS < 50 ? BENCH_UI_TAGS : 50))
}

# ui_check_page : berth's page answers 200 with one row (class="tag") per tag shown.
ui_check_page() {
    local url="${REG_URL[cand]}/ui/r/$UI_REPO" html="$WORK_DIR/ui-page.html" code rows
    code=$(curl -sS -m 60 -o "$html" -w '%{http_code}' "${CURL_EXTRA[@]}" "$url") || die "curl failed: $url"
    [[ $code == 200 ]] ||
        die "berth's UI page $url answered HTTP $code, expected 200 (has this berth build the web UI? BERTH_BIN=$BERTH_BIN)"
    rows=$({ grep -o 'class="tag"' "$html" || true; } | wc -l)
    ((rows == $(ui_rows_expected))) ||
        die "berth's UI page $url shows $rows rows (class=\"tag\"), expected $(ui_rows_expected) of $BENCH_UI_TAGS tags"
    log "berth's UI page shows $rows rows ($(size_of "$html") bytes)"
}

# ui_check_list SIDE : the listing with n=50 answers 200 with 50 tags. Distribution 2.8
# has no paging of tags and lists every one whatever n says: that is logged, the
# reference figure then covering the whole list.
ui_check_list() {
    local side=$1 url listed
    url="${REG_URL[$side]}/v2/$UI_REPO/tags/list?n=50"
    listed=$(curl -fsS -m 60 "${CURL_EXTRA[@]}" "$url" | jq '.tags | length') || die "no tag list at $url"
    ((listed == $(ui_rows_expected))) && return 0
    [[ $side == ref ]] || die "$(side_label "$side") lists $listed tags at $url, expected $(ui_rows_expected)"
    log "note: $(side_label "$side") lists $listed tags at $url, not $(ui_rows_expected): it ignores n"
}

# ui_get PAGE : one GET of PAGE (page, ref-list or cand-list); prints the seconds.
ui_get() {
    local stats
    case $1 in
        page) stats=$(curl_expect 200 "${REG_URL[cand]}/ui/r/$UI_REPO") ;;
        ref-list) stats=$(curl_expect 200 "${REG_URL[ref]}/v2/$UI_REPO/tags/list?n=50") ;;
        cand-list) stats=$(curl_expect 200 "${REG_URL[cand]}/v2/$UI_REPO/tags/list?n=50") ;;
    esac
    printf '%s\n' "${stats%% *}"
}

# ui_samples ROW SIDE P50 P99 : adds the two figures of ROW (ui or list) on SIDE.
ui_samples() {
    samples_add "$1-p50" "$2" "$3"
    samples_add "$1-p99" "$2" "$4"
}


# shellcheck shell=bash
# Collecting figures and printing the result table. Sourced by bench/run.sh.
#
# Every row holds the reference figure, the candidate figure, their ratio
# (candidate / reference) and a target, which is one of:
#   ratio>=X   the candidate must reach X times the reference
#   ratio<=X   the candidate must stay within X times the reference (latencies)
#   max=X      the candidate figure must be at most X (units of the row)
#   delta<=X   as max=X, for a row of differences, which have no meaningful ratio
#   report     no target, the figure is informative

ROWS=()

# record MEASUREMENT UNIT REFERENCE CANDIDATE TARGET
record() {
    local name=$1 unit=$2 ref=$3 cand=$4 target=$5
    ROWS+=("$name|$unit|$ref|$cand|$target")
    log "$name: reference $(fmt "$ref") $unit, $(side_label cand) $(fmt "$cand") $unit"
}

# fmt NUMBER : three significant digits or so, no exponent; "-" (no figure) stays "-".
fmt() {
    awk -v v="$1" 'BEGIN {
        if (v == "-") { print "-"; exit }
        a = v < 0 ? -v : v
        if (a >= 100) printf "%.0f\n", v; else if (a >= 10) printf "%.1f\n", v; else printf "%.2f\n", v }'
}

# ratio TARGET REF CAND : CAND / REF, or "n/a" for differences and a non-positive REF.
ratio() {
    awk -v t="$1" -v r="$2" -v c="$3" \
        'BEGIN { if (t ~ /^delta/ || r <= 0) print "n/a"; else printf "%.2fx\n", c / r }'
}

# verdict TARGET REF CAND : "met" or "missed" when the target has a threshold.
verdict() {
    local target=$1 ref=$2 cand=$3
    case $target in
        ratio\>=*) awk -v r="$ref" -v c="$cand" -v x="${target#ratio>=}" \
            'BEGIN { print (r > 0 && c / r >= x) ? "met" : "missed" }' ;;
        ratio\<=*) awk -v r="$ref" -v c="$cand" -v x="${target#ratio<=}" \
            'BEGIN { print (r > 0 && c / r <= x) ? "met" : "missed" }' ;;
        max=* | delta\<=*) awk -v c="$cand" -v x="${target#*=}" 'BEGIN { print (c <= x) ? "met" : "missed" }' ;;
        *) printf '\n' ;;
    esac
}

# target_text TARGET UNIT : how the target reads in the table.
target_text() {
    case $1 in
        ratio\>=*) printf '>= %sx reference\n' "${1#ratio>=}" ;;
        ratio\<=*) printf '<= %sx reference\n' "${1#ratio<=}" ;;
        max=* | delta\<=*) printf '<= %s %s\n' "${1#*=}" "$2" ;;
        *) printf 'report only\n' ;;
    esac
}

# print_table : the markdown table of every recorded row, on stdout.
print_table() {
    local row name unit ref cand target result
    printf '| measurement | reference | %s | ratio | target |\n' "$(side_label cand)"
    printf '|---|---:|---:|---:|---|\n'
    for row in "${ROWS[@]}"; do
        IFS='|' read -r name unit ref cand target <<<"$row"
        result=$(verdict "$target" "$ref" "$cand")
        printf '| %s (%s) | %s | %s | %s | %s%s |\n' "$name" "$unit" "$(fmt "$ref")" "$(fmt "$cand")" \
            "$(ratio "$target" "$ref" "$cand")" "$(target_text "$target" "$unit")" "${result:+ ($result)}"
    done
}

# print_context : one line naming when, where and against what the figures were taken.
print_context() {
    printf '%s, %s, %s cores, %s MiB RAM, load %s at start; reference %s; candidate %s; %s runs per throughput figure, wrk -t%s -c%s -d%s\n\n' \
        "$(date -u '+%Y-%m-%d %H:%M UTC')" "$(uname -sr)" "$(nproc)" \
        "$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 }' /proc/meminfo)" "$START_LOAD" \
        "$("$REFERENCE_BIN" --version 2>/dev/null | awk '{ print $NF }')" \
        "$(candidate_version)" "$BENCH_REPEAT" \
        "$BENCH_WRK_THREADS" "$BENCH_WRK_CONNECTIONS" "$BENCH_WRK_DURATION"
}

candidate_version() {
    case $BENCH_CANDIDATE in
        berth) printf 'berth %s\n' "$(git -C "$BENCH_DIR/.." describe --always --dirty 2>/dev/null || echo '(no commit yet)')" ;;
        *) printf '%s (suite self-check)\n' "$BENCH_CANDIDATE" ;;
    esac
}

# publish : the table on stdout, and appended to BENCH_RESULTS when set.
publish() {
    local report
    report=$({ print_context; print_table; })
    printf '%s\n' "$report"
    if [[ -n $BENCH_RESULTS ]]; then
        printf '\n%s\n' "$report" >>"$BENCH_RESULTS"
        log "results appended to $BENCH_RESULTS"
    fi
}

# Samples: repeated figures keyed by "METRIC:SIDE", reduced to their median.
declare -A SAMPLES=()

samples_reset() {
    SAMPLES=()
}

# samples_add METRIC SIDE VALUE
samples_add() {
    SAMPLES[$1:$2]+="$3 "
}

# samples_median METRIC SIDE
samples_median() {
    local values
    read -r -a values <<<"${SAMPLES[$1:$2]:?no samples for $1 on $2}"
    median "${values[@]}"
}

# record_samples MEASUREMENT UNIT METRIC TARGET : records the medians of both sides.
record_samples() {
    record "$1" "$2" "$(samples_median "$3" ref)" "$(samples_median "$3" cand)" "$4"
}

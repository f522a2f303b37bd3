#!/usr/bin/env bash
# Runs every end-to-end script in this directory and sums their results.
# The last line is `e2e: N passed, M failed`; the exit status is non-zero on any failure.
# Environment: see lib.sh (E2E_REGISTRY=distribution runs against CNCF Distribution).
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SUMMARY_PATTERN='^e2e [a-z-]+: ([0-9]+) passed, ([0-9]+) failed$'

PASSED=0
FAILED=0
OUTPUT=

cleanup() {
    [[ -z $OUTPUT ]] || rm -f "$OUTPUT"
}

# e2e_scripts: the test scripts, in a stable order (not the libraries or this runner).
e2e_scripts() {
    local script
    for script in "$E2E_DIR"/*.sh; do
        case ${script##*/} in
        lib.sh | run.sh | swarm-lib.sh | cluster-lib.sh | netns-lib.sh) ;;
        *) printf '%s\n' "$script" ;;
        esac
    done
}

# run_script SCRIPT: runs one script, shows its output and adds its summary to the totals.
# A script that exits non-zero without reporting a failure counts as one failure.
run_script() {
    local script=$1 status=0 line passed failed
    bash "$script" 2>&1 | tee "$OUTPUT" || status=$?
    line=$(grep -E "$SUMMARY_PATTERN" "$OUTPUT" | tail -n 1 || true)
    if [[ -z $line ]]; then
        printf 'FAIL %s: no summary line (exit status %d)\n' "${script##*/}" "$status"
        FAILED=$((FAILED + 1))
        return
    fi
    [[ $line =~ $SUMMARY_PATTERN ]]
    passed=${BASH_REMATCH[1]}
    failed=${BASH_REMATCH[2]}
    if ((status != 0 && failed == 0)); then
        printf 'FAIL %s: exit status %d\n' "${script##*/}" "$status"
        failed=1
    fi
    PASSED=$((PASSED + passed))
    FAILED=$((FAILED + failed))
}

main() {
    local script scripts
    OUTPUT=$(mktemp "${TMPDIR:-/tmp}/berth-e2e-run.XXXXXX")
    trap cleanup EXIT
    mapfile -t scripts < <(e2e_scripts)
    for script in "${scripts[@]}"; do
        run_script "$script"
    done
    printf 'e2e: %d passed, %d failed\n' "$PASSED" "$FAILED"
    ((FAILED == 0))
}

main "$@"

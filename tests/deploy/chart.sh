#!/usr/bin/env bash
# Offline checks of the Helm chart in charts/berth: lint, render with every values
# file in charts/berth/ci, validate each rendering against the Kubernetes API
# schemas, assert on the rendered objects, and make sure bad values are refused.
#
#   bash tests/deploy/chart.sh
#
# Needs python3 and PyPI; installs into /var/cache/berth (see lib-py.sh).
# BERTH_CHART_DIR checks another copy of the chart; BERTH_KUBE_VERSIONS lists the
# Kubernetes versions to validate against (by default the oldest the chart's
# kubeVersion admits, and the one the bundled helm is built for).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CHART="${BERTH_CHART_DIR:-$ROOT/charts/berth}"
KUBE_VERSIONS="${BERTH_KUBE_VERSIONS:-1.25.0 1.35.0}"
RELEASE=berth
NAMESPACE=registry

# shellcheck source=tests/deploy/lib-py.sh
source "$HERE/lib-py.sh"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

PASSED=0
FAILED=0

pass() {
    echo "ok - $*"
    PASSED=$((PASSED + 1))
}

fail() {
    echo "not ok - $*"
    FAILED=$((FAILED + 1))
}

# Print a captured output indented under a failed check.
show() { sed 's/^/#   /' "$1"; }

summary() {
    echo "chart: $PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ]
}

# check WHAT COMMAND...: one line for a command that must succeed.
check() {
    local what="$1"
    shift
    if "$@" >"$WORK/out" 2>&1; then
        pass "$what"
    else
        fail "$what"
        show "$WORK/out"
    fi
}

helm() { "$BERTH_HELM" "$@"; }

setup() {
    if berth_py_setup >"$WORK/setup" 2>&1; then
        pass "tools installed: helm $(helm version --template '{{.Version}}'), kubernetes-validate $("$BERTH_VENV/bin/kubernetes-validate" --version)"
    else
        fail "tools installed (python venv, kubernetes-validate, helm)"
        show "$WORK/setup"
        summary
        exit 1
    fi
}

# appVersion follows the crate's version.
check_app_version() {
    local cargo chart
    cargo="$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n 1)"
    chart="$("$BERTH_PY" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["appVersion"])' "$CHART/Chart.yaml")"
    if [ -n "$cargo" ] && [ "$cargo" = "$chart" ]; then
        pass "Chart.yaml appVersion $chart matches Cargo.toml"
    else
        fail "Chart.yaml appVersion ($chart) matches Cargo.toml ($cargo)"
    fi
}

# The rendering cases: "default" plus one per values file in ci/.
cases() {
    echo default
    local f
    for f in "$CHART"/ci/*.yaml; do
        basename "$f" .yaml
    done
}

# The values file of a case, one word a line: nothing for the defaults.
values_file() {
    [ "$1" = default ] || echo "$CHART/ci/$1.yaml"
}

values_args() {
    [ "$1" = default ] || printf '%s\n' -f "$(values_file "$1")"
}

lint() {
    local name="$1" args
    mapfile -t args < <(values_args "$name")
    check "helm lint --strict ($name)" helm lint --strict "$CHART" "${args[@]}"
}

render() {
    local name="$1" args
    mapfile -t args < <(values_args "$name")
    if helm template "$RELEASE" "$CHART" --namespace "$NAMESPACE" "${args[@]}" \
        >"$WORK/$name.yaml" 2>"$WORK/out"; then
        pass "helm template ($name)"
    else
        fail "helm template ($name)"
        show "$WORK/out"
        return 1
    fi
}

# The Prometheus Operator's objects: checked by monitoring.py, their alerts by
# promtool; the rest goes on to kubernetes-validate.
monitoring() {
    local name="$1" line out
    "$BERTH_PY" "$HERE/monitoring.py" "$name" "$WORK/$name.yaml" "$WORK/$name.kube.yaml" \
        "$WORK/$name.rules.yaml" "$ROOT/docs/metrics.md" >"$WORK/monitoring" 2>&1 ||
        fail "$name: monitoring checks ran to the end"
    while IFS= read -r line; do
        case "$line" in
            "ok - "*) pass "${line#ok - }" ;;
            "not ok - "*) fail "${line#not ok - }" ;;
            *) echo "$line" ;;
        esac
    done <"$WORK/monitoring"
    if [ -s "$WORK/$name.rules.yaml" ]; then
        if out=$(promtool check rules "$WORK/$name.rules.yaml" 2>&1); then
            pass "promtool check rules ($name)"
        else
            fail "promtool check rules ($name)"
            printf '%s\n' "$out" | sed 's/^/#   /'
        fi
    fi
}

# kubernetes-validate --strict; a WARN line fails like a non-zero exit.
validate() {
    local name="$1" version rc
    monitoring "$name"
    for version in $KUBE_VERSIONS; do
        rc=0
        "$BERTH_VENV/bin/kubernetes-validate" --strict -k "$version" "$WORK/$name.kube.yaml" \
            >"$WORK/validate" 2>&1 || rc=$?
        if [ "$rc" -eq 0 ] && ! grep -q WARN "$WORK/validate" && grep -q passed "$WORK/validate"; then
            pass "kubernetes-validate --strict against $version ($name)"
        else
            fail "kubernetes-validate --strict against $version ($name, exit $rc)"
            grep -v '^INFO' "$WORK/validate" | sed 's/^/#   /'
        fi
    done
}

# The python assertions print ok / not ok lines; count them here.
assertions() {
    local name="$1" line rc=0 files
    mapfile -t files < <(values_file "$name")
    "$BERTH_PY" "$HERE/chart_checks.py" "$name" "$WORK/$name.yaml" "$CHART" "$NAMESPACE" \
        "${files[@]}" >"$WORK/checks" 2>&1 || rc=$?
    while IFS= read -r line; do
        case "$line" in
            "ok - "*) pass "${line#ok - }" ;;
            "not ok - "*) fail "${line#not ok - }" ;;
            *) echo "$line" ;;
        esac
    done <"$WORK/checks"
    [ "$rc" -eq 0 ] || fail "$name: assertions ran to the end (exit $rc)"
}

# must_fail WHAT PATTERN HELM-ARGS...: the render is refused with a message
# matching PATTERN (an extended regular expression).
must_fail() {
    local what="$1" pattern="$2"
    shift 2
    if helm template "$RELEASE" "$CHART" --namespace "$NAMESPACE" "$@" >"$WORK/out" 2>&1; then
        fail "refused: $what (it rendered)"
    elif grep -Eq "$pattern" "$WORK/out"; then
        pass "refused: $what"
    else
        fail "refused: $what (message does not match /$pattern/)"
        show "$WORK/out"
    fi
}

refusals() {
    must_fail "tls.enabled without tls.secretName" \
        'tls\.secretName is required when tls\.enabled' --set tls.enabled=true
    must_fail "peerTls.enabled without peerTls.secretName" \
        'peerTls\.secretName is required when peerTls\.enabled' --set peerTls.enabled=true
    must_fail "auth.htpasswd.enabled without auth.htpasswd.secretName" \
        'auth\.htpasswd\.secretName is required' --set auth.htpasswd.enabled=true
    must_fail "an administrator name berth would refuse" '/auth/admins/0.*pattern' --set 'auth.admins={Root}'
    must_fail "replicas=0 (schema)" '/replicas.*minimum' --set replicas=0
    must_fail "replicas=0 (template, schema skipped)" 'replicas must be at least 1' \
        --set replicas=0 --skip-schema-validation
    must_fail "an unknown top-level value" "additional properties 'replica' not allowed" --set replica=3
    must_fail "an unknown nested value" "additional properties 'enable' not allowed" --set tls.enable=true
    must_fail "service.type outside the enum" '/service/type' --set service.type=ExternalName
    must_fail "affinity.podAntiAffinity outside soft|hard" '/affinity/podAntiAffinity' \
        --set affinity.podAntiAffinity=maybe
    must_fail "replicationFactor that is neither a number nor all" '/replicationFactor' \
        --set replicationFactor=most
    must_fail "service.nodePort with a ClusterIP Service" 'service\.nodePort is only used' \
        --set service.nodePort=30500
    must_fail "PDB maxUnavailable not below replicas" 'maxUnavailable \(3\) must be less than replicas \(3\)' \
        --set podDisruptionBudget.maxUnavailable=3
}

# NOTES.txt warns about an even member count, and only then.
notes() {
    local out="$WORK/notes"
    if helm install "$RELEASE" "$CHART" --dry-run=client --namespace "$NAMESPACE" \
        --set replicas=4 >"$out" 2>&1 && grep -q 'WARNING: replicas is even (4)' "$out"; then
        pass "NOTES warns about an even replicas count"
    else
        fail "NOTES warns about an even replicas count"
        show "$out"
    fi
    if helm install "$RELEASE" "$CHART" --dry-run=client --namespace "$NAMESPACE" >"$out" 2>&1 &&
        grep -q '^NOTES:' "$out" && ! grep -q 'replicas is even' "$out"; then
        pass "NOTES has no even-count warning with the defaults"
    else
        fail "NOTES has no even-count warning with the defaults"
        show "$out"
    fi
}

main() {
    cd "$ROOT"
    setup
    check_app_version
    local name
    for name in $(cases); do
        lint "$name"
        if render "$name"; then
            validate "$name"
            assertions "$name"
        fi
    done
    refusals
    notes
    summary
}

main "$@"

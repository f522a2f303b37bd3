#!/usr/bin/env bash
# Installs what the tests need (Debian 12, as root) and runs the whole suite:
# formatting and lints, unit and integration tests, then the end-to-end tests
# with real clients against the built binary. One build profile serves all.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/berth/target}"
export CARGO_TERM_COLOR=never

packages=(
  clang libclang-dev protobuf-compiler pkg-config   # building rocksdb and protos
  curl jq openssl haproxy apache2-utils              # test plumbing (htpasswd)
  python3 python3-venv                               # the deploy checks' venv
  python3-jsonschema                                 # the webhook payloads' schemas
  prometheus                                         # a real scraper, and promtool
  debootstrap busybox-static iproute2 iptables       # the Swarm test's base image and hosts
  skopeo podman buildah containerd umoci             # real clients
  docker-registry                                    # the reference registry
  chromium chromium-driver                           # the web UI tests' browser
)

install_packages() {
  local missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

step() { echo; echo "=== $* ==="; }

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

install_packages

step "format"
cargo fmt --check

step "lint"
cargo clippy --all-targets --locked -- -D warnings

step "unit and integration tests"
cargo test --locked 2>&1 | tee "$logs/cargo.log"

step "fuzzing (bounded)"
bash tests/fuzz/run.sh "${BERTH_FUZZ_SECONDS:-30}" 2>&1 | tee "$logs/fuzz.log"

step "deployment files (Helm chart, stack file), offline"
{ bash tests/deploy/chart.sh; bash tests/deploy/stack.sh; } 2>&1 | tee "$logs/deploy.log"

step "the web UI tests' venv (Selenium)"
bash tests/e2e/ui.sh --venv

step "end-to-end tests with real clients"
export BERTH_BIN="$CARGO_TARGET_DIR/debug/berth"
bash tests/e2e/run.sh 2>&1 | tee "$logs/e2e.log"

# One closing line over every runner: cargo's "test result:" lines and the
# "N passed, M failed" summaries of the fuzz and end-to-end runs.
echo
awk '/^test result:/ { p += $4; f += $6 }
     /^(fuzz|e2e|chart|stack): [0-9]+ passed, [0-9]+ failed/ { p += $2; f += $4 }
     END { printf "total: %d passed, %d failed\n", p, f }' "$logs/cargo.log" "$logs/fuzz.log" \
  "$logs/deploy.log" "$logs/e2e.log"

#!/usr/bin/env bash
# Fuzzes berth's OCI parsing (src/oci) and its Authorization header and token
# handling (src/auth) with cargo fuzz and libFuzzer.
#
#   tests/fuzz/run.sh [SECONDS] [TARGET...]     SECONDS per target, default 60
#
# Stable Rust suffices: RUSTC_BOOTSTRAP=1 lets cargo fuzz use the sanitizer
# flags. Builds go to $BERTH_FUZZ_TARGET_DIR (default /var/cache/berth/fuzz-target)
# and the corpus each run grows to $BERTH_FUZZ_CORPUS_DIR/<target> (default
# /var/cache/berth/fuzz-corpus), both outside the repository; the seeds in
# tests/fuzz/corpus/<target> are only read. A crashing input is written to
# tests/fuzz/artifacts/<target>/ (ignored by git); reproduce it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir tests/fuzz TARGET FILE
# BERTH_FUZZ_SANITIZER (default address) is passed to cargo fuzz --sanitizer.
# Closes with "fuzz: N passed, M failed", counting targets; exits non-zero
# when any target crashed or failed to build.
set -euo pipefail

FUZZ_DIR=tests/fuzz
ALL_TARGETS=(reference manifest auth)
BUILD_TIMEOUT=3600 # seconds for building all targets
RUN_SLACK=300      # seconds a run may exceed its fuzzing time (start-up, a last slow input)

seconds=${1:-60}
shift || true
targets=("$@")
((${#targets[@]})) || targets=("${ALL_TARGETS[@]}")

target_dir=${BERTH_FUZZ_TARGET_DIR:-/var/cache/berth/fuzz-target}
corpus_root=${BERTH_FUZZ_CORPUS_DIR:-/var/cache/berth/fuzz-corpus}
sanitizer=${BERTH_FUZZ_SANITIZER:-address}
log_dir=""

cleanup() {
  if [[ -n "$log_dir" ]]; then
    rm -rf -- "$log_dir"
  fi
}
trap cleanup EXIT

usage_check() {
  if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [SECONDS] [TARGET...]" >&2
    exit 2
  fi
}

install_cargo_fuzz() {
  if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    env -u CARGO_TARGET_DIR cargo install cargo-fuzz --locked
  fi
}

# cargo fuzz with this script's fixed options, bounded by $1 seconds. The
# caller's CARGO_TARGET_DIR (the main crate's build) must not receive
# sanitizer builds, hence --target-dir. timeout signals the whole process group.
fuzz() {
  local limit=$1 cmd=$2
  shift 2
  timeout --kill-after=30 "$limit" env -u CARGO_TARGET_DIR RUSTC_BOOTSTRAP=1 \
    cargo fuzz "$cmd" --fuzz-dir "$FUZZ_DIR" --sanitizer "$sanitizer" \
    --target-dir "$target_dir" "$@"
}

# Shows why a run failed: the panic or sanitizer report and the failing input.
# The whole log is kept beside the crashing input.
report_failure() {
  local target=$1 log=$2 kept="$FUZZ_DIR/artifacts/$1/last-failure.log"
  grep -m 6 -A 2 -E 'panicked at|==[0-9]+==ERROR|^SUMMARY|^error' "$log" || tail -n 40 "$log"
  sed -n '/^Failing input:/,/^Reproduce with:/p' "$log"
  mkdir -p "$(dirname "$kept")"
  cp -- "$log" "$kept"
  echo "full log: $kept"
}

# Runs one target for $seconds; prints its result line and returns non-zero on
# a crash, a timeout or a build failure.
run_target() {
  local target=$1 log="$log_dir/$1.log" grown="$corpus_root/$1" status=0
  mkdir -p "$grown"
  echo "=== fuzz $target for ${seconds}s ==="
  fuzz "$((seconds + RUN_SLACK))" run "$target" "$grown" "$FUZZ_DIR/corpus/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1 || status=$?
  grep -E '^(#[0-9]+[[:space:]]+(INITED|DONE)|Done [0-9]+ runs|stat::number_of_executed_units)' "$log" || true
  if ((status != 0)); then
    report_failure "$target" "$log"
    echo "fuzz target $target: FAILED (exit $status)"
    return 1
  fi
  echo "fuzz target $target: ok ($(grep -oE 'Done [0-9]+ runs in [0-9]+ second' "$log" | tail -n 1 || true))"
}

main() {
  usage_check
  cd "$(dirname "$0")/../.."
  install_cargo_fuzz
  log_dir=$(mktemp -d)
  local passed=0 failed=0 target
  echo "=== fuzz build (sanitizer: $sanitizer) ==="
  if ! fuzz "$BUILD_TIMEOUT" build >"$log_dir/build.log" 2>&1; then
    tail -n 40 "$log_dir/build.log"
    echo "fuzz: 0 passed, ${#targets[@]} failed"
    exit 1
  fi
  for target in "${targets[@]}"; do
    if run_target "$target"; then
      passed=$((passed + 1))
    else
      failed=$((failed + 1))
    fi
  done
  echo "fuzz: $passed passed, $failed failed"
  ((failed == 0))
}

main

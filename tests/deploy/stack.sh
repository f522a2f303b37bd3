#!/usr/bin/env bash
# Offline checks of stack.yml: `docker stack config` renders it, and
# stack_checks.py catches what that command lets through (a bad deploy mode
# or restart condition, references to undefined networks, volumes or
# secrets) and what berth needs from it. Each check must also reject a
# broken copy, so none of them passes vacuously.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=tests/deploy/lib-py.sh
source tests/deploy/lib-py.sh
berth_py_venv

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0 failed=0
ok() { echo "ok - $*"; passed=$((passed + 1)); }
not_ok() { echo "not ok - $*"; failed=$((failed + 1)); }

render() { # FILE OUT: docker stack config with the variables an install sets
  BERTH_NODES=3 docker stack config -c "$1" >"$2" 2>"$2.err"
}
check() { # RENDERED
  "$BERTH_PY" tests/deploy/stack_checks.py "$1"
}

if render stack.yml "$work/stack.yml"; then ok "docker stack config accepts stack.yml"
else not_ok "docker stack config: $(cat "$work/stack.yml.err")"; fi

if out=$(check "$work/stack.yml"); then ok "stack.yml passes the extra checks"
else not_ok "stack.yml: $out"; fi

# The optional overrides, alone and together, merged onto stack.yml.
for overrides in docs/swarm/tls.yml docs/swarm/htpasswd.yml docs/swarm/peer-tls.yml \
  "docs/swarm/tls.yml docs/swarm/htpasswd.yml docs/swarm/peer-tls.yml"; do
  args=(-c stack.yml)
  for o in $overrides; do args+=(-c "$o"); done
  if ! BERTH_NODES=3 docker stack config "${args[@]}" >"$work/merged.yml" 2>"$work/merged.err"; then
    not_ok "stack.yml with $overrides: $(cat "$work/merged.err")"
  elif out=$(check "$work/merged.yml"); then ok "stack.yml with $overrides passes the checks"
  else not_ok "stack.yml with $overrides: $out"; fi
done

if docker stack config -c stack.yml >/dev/null 2>"$work/err"; then
  not_ok "a deploy without BERTH_NODES was accepted"
elif grep -q "BERTH_NODES" "$work/err"; then ok "a deploy without BERTH_NODES fails naming it"
else not_ok "a deploy without BERTH_NODES failed unclearly: $(cat "$work/err")"; fi

# Broken copies each checker must reject: SED-EXPRESSION | WHAT | MESSAGE.
while IFS='|' read -r edit what expect; do
  sed "$edit" stack.yml >"$work/broken.yml"
  if ! render "$work/broken.yml" "$work/broken.out"; then
    ok "rejects $what (docker stack config)"
  elif out=$(check "$work/broken.out"); then
    not_ok "accepted $what"
  elif grep -q "$expect" <<<"$out"; then
    ok "rejects $what"
  else
    not_ok "rejected $what without saying so: $out"
  fi
done <<'CASES'
s/mode: global/mode: globl/|a misspelled deploy mode|deploy.mode
s/condition: any/condition: always/|a bad restart condition|restart_policy.condition
s/^      - peers$/      - backend/|an undefined network|network 'backend'
s/^      - berth-cluster-secret$/      - other-secret/|an undefined secret|secret 'other-secret'
s/- data:\/var\/lib\/berth/- store:\/var\/lib\/berth/|an undefined volume|volume 'store'
s/mode: host/mode: ingress/|the port published through the mesh|host mode
s/endpoint_mode: dnsrr/endpoint_mode: vip/|a virtual IP for peers|dnsrr
s/BERTH_PLAIN_HTTP: "true"/BERTH_PLAIN_HTTP: "false"/|neither TLS nor plain HTTP|exactly one
s#BERTH_CLUSTER_SECRET_FILE: /run/secrets/berth-cluster-secret#BERTH_CLUSTER_SECRET_FILE: /run/secrets/cluster#|a secret file the service is not given|not given
CASES

echo "stack: $passed passed, $failed failed"
((failed == 0))

#!/usr/bin/env bash
# Many hosts on one machine without containers, for berth's end-to-end tests and
# benchmarks: N network namespaces on one Linux bridge, each with its own address, and
# optionally a bandwidth limit (tc tbf) on each host's link, in both directions. Needs
# root, iproute2 (ip, tc), util-linux (nsenter) and, when the host firewall filters
# bridged frames, iptables.
#
# Source this file and call netns_up N [RATE] ... netns_down (put netns_down in an EXIT
# trap: it is idempotent and also cleans up what an earlier, crashed run left). Run
# directly for a small command line: `netns-lib.sh up [N] [RATE] | down | status | leftovers`.
#
# Layout, for host I in 1..N:
#   bridge   $NETNS_BRIDGE (berthns0) with $NETNS_NET.1/24 on the host side, so that the
#            machine itself reaches every host
#   netns    berth-ns-I: loopback up, eth0 = $NETNS_NET.(10+I)/24, a veth whose other
#            end bns-hI is a port of the bridge; no default route, so a host reaches
#            only the other hosts and the machine's bridge address
#   shaping  with RATE (tc's syntax: 200mbit, 1gbit): `tbf rate RATE` as the root qdisc
#            of eth0 (what the host sends) and of bns-hI (what it receives). netem is
#            not available in every kernel; tbf is.
#
# The names are fixed, so one user at a time per machine: netns_up removes whatever an
# earlier netns_up left, and so would end another test's hosts.
#
# Host firewall: with br_netfilter, bridged frames cross the host's iptables FORWARD
# chain, whose policy Docker sets to DROP. netns_up inserts two rules, marked with the
# comment $NETNS_FW_COMMENT: ACCEPT from the bridge to the bridge, and DROP from the
# bridge to anywhere else, so nothing the hosts send leaves the machine. netns_down
# deletes every rule carrying that comment.
#
# Environment (defaults in brackets):
#   NETNS_BRIDGE [berthns0]    NETNS_NET [10.217.0] (a /24, given as its first 3 octets)
#   NETNS_BURST [auto]         tbf's burst in bytes; auto is 10 ms at the rate, at least 64 KiB
#   NETNS_LATENCY [50ms]       tbf's latency: how long a packet may wait in its queue
#   NETNS_STOP_TIMEOUT [10]    seconds a leftover process may take to stop before SIGKILL
#
# Functions (I is a host number, 1..N):
#   netns_up N [RATE]          bridge, namespaces, veths, shaping and firewall rules
#   netns_down                 removes all of it and stops what still runs in the hosts
#   netns_shape I RATE         (re)shapes host I's link in both directions; RATE "" unshapes
#   netns_ip I, netns_name I   host I's address and namespace name
#   netns_exec I CMD...        runs CMD in host I's network namespace (files are the machine's)
#   netns_spawn I LOG CMD...   the same in the background, output appended to LOG; sets
#                              NETNS_SPAWNED_PID (CMD's own pid: nsenter execs it)
#   netns_rate_bits RATE       RATE (whole bit, kbit, mbit or gbit) in bits a second
#   netns_status, netns_leftovers (one line per thing left; nothing when clean)
# netns_up sets NETNS_N and NETNS_RATE.

NETNS_BRIDGE=${NETNS_BRIDGE:-berthns0}
NETNS_NET=${NETNS_NET:-10.217.0}
NETNS_BURST=${NETNS_BURST:-auto}
NETNS_LATENCY=${NETNS_LATENCY:-50ms}
NETNS_STOP_TIMEOUT=${NETNS_STOP_TIMEOUT:-10}
NETNS_PREFIX=berth-ns-
NETNS_VETH_PREFIX=bns-h
NETNS_FW_COMMENT=berth-netns
NETNS_MAX=40

# shellcheck disable=SC2034 # for the caller
NETNS_N=0 NETNS_RATE='' NETNS_SPAWNED_PID=''

netns_note() {
    printf '# netns: %s\n' "$*" >&2
}

netns_error() {
    printf 'netns error: %s\n' "$*" >&2
}

# Entering namespaces and the host firewall's rules are swarm-lib.sh's, for these names.
# shellcheck source=tests/e2e/swarm-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/swarm-lib.sh"

netns_name() { printf '%s%s\n' "$NETNS_PREFIX" "$1"; }
netns_ip() { printf '%s.%s\n' "$NETNS_NET" "$((10 + $1))"; }
netns_veth() { printf '%s%s\n' "$NETNS_VETH_PREFIX" "$1"; }

# netns_exec I COMMAND [ARGS...]: runs COMMAND in host I's network namespace (only the
# network namespace: files, mounts and processes are the machine's).
netns_exec() {
    SWARM_NETNS_PREFIX=$NETNS_PREFIX swarm_netns_exec "$@"
}

# netns_spawn I LOG COMMAND [ARGS...]: starts COMMAND in the background in host I's
# network namespace, its output appended to LOG, and sets NETNS_SPAWNED_PID. Call it
# directly, not in $(...), so that the variable is set in the caller's shell.
netns_spawn() {
    SWARM_NETNS_PREFIX=$NETNS_PREFIX swarm_netns_spawn "$@"
    # shellcheck disable=SC2034 # for the caller
    NETNS_SPAWNED_PID=$SWARM_SPAWNED_PID
}

# ---------------------------------------------------------------- shaping

# netns_rate_bits RATE: RATE (tc's syntax, a whole number with bit, kbit, mbit or gbit)
# in bits a second.
netns_rate_bits() {
    local rate=${1,,} number unit
    [[ $rate =~ ^([0-9]+)(bit|kbit|mbit|gbit)$ ]] || return 1
    number=${BASH_REMATCH[1]} unit=${BASH_REMATCH[2]}
    case $unit in
    bit) printf '%s\n' "$number" ;;
    kbit) printf '%s\n' "$((number * 1000))" ;;
    mbit) printf '%s\n' "$((number * 1000000))" ;;
    gbit) printf '%s\n' "$((number * 1000000000))" ;;
    esac
}

# netns_burst RATE: tbf's burst in bytes: NETNS_BURST, or 10 ms at RATE (at least 64
# KiB, so that one full-size segment of a veth with TSO passes unsplit).
netns_burst() {
    local bits burst
    if [[ $NETNS_BURST != auto ]]; then
        printf '%s\n' "$NETNS_BURST"
        return 0
    fi
    bits=$(netns_rate_bits "$1") || return 1
    burst=$((bits / 8 / 100))
    ((burst >= 65536)) || burst=65536
    printf '%s\n' "$burst"
}

# netns_shape I RATE: tbf at RATE on both ends of host I's link; an empty RATE removes it.
netns_shape() {
    local i=$1 rate=$2 burst ns
    ns=$(netns_name "$i")
    if [[ -z $rate ]]; then
        tc -n "$ns" qdisc del dev eth0 root 2>/dev/null || true
        tc qdisc del dev "$(netns_veth "$i")" root 2>/dev/null || true
        return 0
    fi
    if ! burst=$(netns_burst "$rate"); then
        netns_error "rate '$rate' is not a whole number of bit, kbit, mbit or gbit"
        return 1
    fi
    tc -n "$ns" qdisc replace dev eth0 root tbf rate "$rate" burst "$burst" latency "$NETNS_LATENCY" &&
        tc qdisc replace dev "$(netns_veth "$i")" root tbf rate "$rate" burst "$burst" latency "$NETNS_LATENCY"
}

# ---------------------------------------------------------------- host firewall

netns_fw_open() {
    SWARM_BRIDGE=$NETNS_BRIDGE SWARM_FW_COMMENT=$NETNS_FW_COMMENT swarm_fw_open
}

# netns_fw_close: deletes every FORWARD rule carrying our comment, in every backend.
netns_fw_close() {
    SWARM_FW_COMMENT=$NETNS_FW_COMMENT swarm_fw_close
}

# ---------------------------------------------------------------- processes

# netns_all_pids: the processes in every namespace of ours.
netns_all_pids() {
    local ns
    for ns in $(netns_names); do
        swarm_netns_pids "$ns"
    done | sort -un
}

# netns_stop_pids PID...: SIGTERM, then SIGKILL to those alive after NETNS_STOP_TIMEOUT
# seconds. Only called with the pids of processes in our own namespaces.
netns_stop_pids() {
    local pid i alive
    (($# > 0)) || return 0
    kill -TERM "$@" 2>/dev/null || true
    for ((i = 0; i < NETNS_STOP_TIMEOUT * 4; i++)); do
        alive=0
        for pid in "$@"; do
            ! kill -0 "$pid" 2>/dev/null || alive=1
        done
        ((alive)) || return 0
        sleep 0.25
    done
    for pid in "$@"; do
        if kill -0 "$pid" 2>/dev/null; then
            netns_note "pid $pid did not stop within ${NETNS_STOP_TIMEOUT}s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
}

# ---------------------------------------------------------------- up and down

# netns_names: our namespaces that exist.
netns_names() {
    ip netns list 2>/dev/null | awk '{ print $1 }' | { grep "^${NETNS_PREFIX}[0-9]*$" || true; } | sort -V
}

# netns_host_veths: host ends of our veths that exist.
netns_host_veths() {
    ip -o link show 2>/dev/null | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }' |
        { grep "^${NETNS_VETH_PREFIX}[0-9]*$" || true; } | sort -V
}

# netns_net_taken: another interface of the machine has an address in our /24.
netns_net_taken() {
    ip -o -4 addr show 2>/dev/null |
        awk -v net="$NETNS_NET." -v br="$NETNS_BRIDGE" '$2 != br && index($4, net) == 1 { found = 1 } END { exit !found }'
}

# netns_reaches I J: host I's TCP connection to host J is refused at once (no one listens
# on port 9): the address answers.
netns_reaches() {
    local out
    # shellcheck disable=SC2016 # expanded by the inner shell
    out=$(timeout 2 nsenter --net="/run/netns/$(netns_name "$1")" \
        bash -c 'exec 3<>"/dev/tcp/$1/9"' reach "$(netns_ip "$2")" 2>&1) && return 0
    [[ $out == *refused* ]]
}

# netns_all_reach N: host 1 reaches every host, and every host reaches host 1.
netns_all_reach() {
    local i
    for ((i = 2; i <= $1; i++)); do
        netns_reaches 1 "$i" && netns_reaches "$i" 1 || return 1
    done
}

# netns_host_up I: host I's namespace, its veth on the bridge and its addresses.
netns_host_up() {
    local i=$1 ns veth
    ns=$(netns_name "$i")
    veth=$(netns_veth "$i")
    ip netns add "$ns" || return 1
    ip link add "$veth" type veth peer name eth0 netns "$ns" || return 1
    ip link set "$veth" master "$NETNS_BRIDGE" || return 1
    ip link set "$veth" up || return 1
    ip -n "$ns" link set lo up || return 1
    ip -n "$ns" addr add "$(netns_ip "$i")/24" dev eth0 || return 1
    ip -n "$ns" link set eth0 up
}

# netns_up N [RATE]: the bridge and N hosts on it, their links shaped at RATE when given.
# Cleans up first what an earlier run left. Sets NETNS_N and NETNS_RATE.
netns_up() {
    local n=${1:-3} rate=${2:-} i tries
    if ! [[ $n =~ ^[0-9]+$ ]] || ((n < 1 || n > NETNS_MAX)); then
        netns_error "netns_up: host count must be 1..$NETNS_MAX, not '$n'"
        return 1
    fi
    if [[ $(id -u) != 0 ]]; then
        netns_error "netns_up needs root"
        return 1
    fi
    for i in ip tc nsenter timeout; do
        command -v "$i" >/dev/null || {
            netns_error "netns_up needs $i"
            return 1
        }
    done
    if [[ -n $rate ]] && ! netns_burst "$rate" >/dev/null; then
        netns_error "rate '$rate' is not a whole number of bit, kbit, mbit or gbit"
        return 1
    fi
    if [[ -n $(netns_leftovers) ]]; then
        netns_note "cleaning up what an earlier run left"
        netns_down
    fi
    if netns_net_taken; then
        netns_error "$NETNS_NET.0/24 is already used on this machine (set NETNS_NET)"
        return 1
    fi
    NETNS_N=$n
    NETNS_RATE=$rate
    ip link add "$NETNS_BRIDGE" type bridge || return 1
    ip addr add "$NETNS_NET.1/24" dev "$NETNS_BRIDGE" || return 1
    ip link set "$NETNS_BRIDGE" up || return 1
    netns_fw_open || {
        netns_error "could not insert the firewall rules"
        return 1
    }
    for ((i = 1; i <= n; i++)); do
        netns_host_up "$i" || {
            netns_error "could not build host $i"
            return 1
        }
        if [[ -n $rate ]]; then
            netns_shape "$i" "$rate" || {
                netns_error "could not shape host $i's link at $rate"
                return 1
            }
        fi
    done
    for ((tries = 0; tries < 20; tries++)); do
        netns_all_reach "$n" && break
        sleep 0.5
    done
    if ((tries == 20)); then
        netns_error "the hosts do not reach each other over $NETNS_BRIDGE"
        return 1
    fi
    netns_note "$n hosts on $NETNS_BRIDGE ($NETNS_NET.0/24)${rate:+, links shaped at $rate}"
}

# netns_down: stops whatever still runs in our namespaces, then removes them, the veths,
# the bridge and the firewall rules. Idempotent; safe after a partial netns_up and in an
# EXIT trap.
netns_down() {
    local pids ns veth
    mapfile -t pids < <(netns_all_pids)
    if ((${#pids[@]} > 0)); then
        netns_note "stopping ${#pids[@]} process(es) left in the hosts: $(
            for pid in "${pids[@]}"; do printf '%s(%s) ' "$pid" "$(cat "/proc/$pid/comm" 2>/dev/null)"; done)"
        netns_stop_pids "${pids[@]}"
    fi
    for ns in $(netns_names); do
        ip netns del "$ns" 2>/dev/null || netns_note "could not delete namespace $ns"
    done
    # Deleting a namespace deletes its veth pair; this is for a pair left half made.
    for veth in $(netns_host_veths); do
        ip link del "$veth" 2>/dev/null || true
    done
    ip link del "$NETNS_BRIDGE" 2>/dev/null || true
    netns_fw_close
    # shellcheck disable=SC2034 # for the caller
    NETNS_N=0 NETNS_RATE=''
    return 0
}

# netns_leftovers: one line for each thing of ours that exists; nothing when clean.
netns_leftovers() {
    local ns backend pid
    for ns in $(netns_names); do
        echo "netns $ns"
        for pid in $(swarm_netns_pids "$ns"); do
            echo "process $pid in $ns: $(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | cut -c1-120)"
        done
    done
    ip link show "$NETNS_BRIDGE" >/dev/null 2>&1 && echo "bridge $NETNS_BRIDGE"
    netns_host_veths | sed 's/^/veth /'
    for backend in iptables iptables-legacy; do
        command -v "$backend" >/dev/null || continue
        "$backend" -w 10 -S FORWARD 2>/dev/null | { grep -- "--comment $NETNS_FW_COMMENT" || true; } |
            sed "s/^/$backend rule: /"
    done
    return 0
}

# netns_status: each host, its address, its shaping and what runs in it.
netns_status() {
    local ns i qdisc
    for ns in $(netns_names); do
        i=${ns#"$NETNS_PREFIX"}
        qdisc=$(tc -n "$ns" qdisc show dev eth0 2>/dev/null |
            awk '$2 == "tbf" { for (f = 3; f < NF; f++) if ($f == "rate") print "tbf rate", $(f + 1) }')
        echo "host $i: $ns $(netns_ip "$i") ${qdisc:-unshaped}, $(swarm_netns_pids "$ns" | wc -l) process(es)"
    done
}

netns_main() {
    case ${1:-} in
    up)
        trap 'netns_error "interrupted"; netns_down; exit 130' INT TERM
        netns_up "${2:-3}" "${3:-}" || {
            netns_down
            return 1
        }
        netns_status
        ;;
    down)
        netns_down
        netns_leftovers
        ;;
    status) netns_status ;;
    leftovers) netns_leftovers ;;
    *)
        echo "usage: netns-lib.sh up [N] [RATE] | down | status | leftovers" >&2
        return 2
        ;;
    esac
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -uo pipefail
    netns_main "$@"
fi

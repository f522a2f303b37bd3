#!/usr/bin/env bash
# A real multi-node Docker Swarm on one machine, for berth's end-to-end tests: N extra
# Docker daemons, each in a network namespace of its own, on one Linux bridge, joined
# into one swarm, so that a `deploy.mode: global` service runs one task per daemon.
# Needs root, iproute2, util-linux (nsenter, unshare), dockerd, containerd, runc and
# iptables. The host's Docker daemon is only used as a docker client's target for
# `docker save` (swarm_load_image); its configuration is never touched.
#
# Source this file and call swarm_up N ... swarm_down (put swarm_down in an EXIT trap:
# it is idempotent and cleans up after a partial swarm_up or an earlier crashed run).
# Run directly for a small command line: `swarm-lib.sh up [N] | down | status |
# leftovers | preflight`.
#
# Layout, for node I in 1..N:
#   bridge   $SWARM_BRIDGE (berthsw0) with $SWARM_NET.1/24 on the host side
#   netns    berth-sw-I: loopback up, eth0 = $SWARM_NET.(10+I)/24 (a veth whose host end
#            bsw-hI is a port of the bridge), default route via $SWARM_NET.1
#   daemon   dockerd with its own containerd, in the node's network namespace and in
#            private mount and UTS namespaces (hostname berth-sw-I, which becomes the
#            swarm node's name); API on unix://$SWARM_RUN/dI.sock; configuration, exec
#            root, containerd state, pid files and logs in $SWARM_RUN/dI; data roots in
#            $SWARM_ROOT/dI/{docker,containerd}; containers under cgroup /berth-sw-I
#   swarm    node 1 runs `swarm init`; nodes 2..SWARM_MANAGERS join as managers and the
#            rest as workers; overlay subnets come from $SWARM_OVERLAY_POOL
#
# Inside its mount namespace each daemon gets a fresh sysfs (for its network namespace)
# with the host's cgroup mounts bound back in, a tmpfs on /run/containerd (where the
# containerd shims put their sockets) and an /etc/resolv.conf naming only 127.0.0.1, so
# that name lookups for anything but swarm services fail at once instead of leaving.
# All mounts the daemons make live in those namespaces and vanish with their processes.
#
# Host firewall: with br_netfilter, bridged frames cross the host's iptables FORWARD
# chain, whose policy the host's Docker sets to DROP. swarm_up inserts two rules, marked
# with the comment $SWARM_FW_COMMENT: ACCEPT from the bridge to the bridge (swarm
# 2377/tcp, gossip 7946/tcp+udp, VXLAN 4789/udp and everything else between the nodes),
# and DROP from the bridge to anywhere else, so nothing the nodes send leaves the machine.
#
# Environment (defaults in brackets):
#   SWARM_BRIDGE [berthsw0]        SWARM_NET [10.213.0] (a /24, given as its first 3 octets)
#   SWARM_RUN [/run/berth-sw]      SWARM_ROOT [/var/lib/berth-sw]
#   SWARM_MANAGERS [3]             how many of the nodes are managers
#   SWARM_STORAGE_DRIVER [auto]    overlay2 when an overlay mount works here, else vfs
#   SWARM_BIP [10.214.0.1/24]      docker0 in each node
#   SWARM_LOCAL_POOL [10.215.0.0/16]    local networks (docker_gwbridge) in each node
#   SWARM_OVERLAY_POOL [10.216.0.0/16]  swarm overlay networks (ingress too), /24 each
#   SWARM_START_TIMEOUT [60]       seconds for all daemons to answer `docker info`
#   SWARM_READY_TIMEOUT [120]      seconds for all nodes to be Ready in `docker node ls`
#   SWARM_STOP_TIMEOUT [30]        seconds a daemon may take to stop before SIGKILL
#   SWARM_CLIENT_TIMEOUT [300]     seconds any one swarm_docker command may take
#   SWARM_LOGS [unset]             a directory where swarm_down copies the nodes' dockerd
#                                  and containerd logs before deleting them
#
# Functions (I is a node number, 1..N):
#   swarm_up N                 bridge, namespaces, daemons and swarm; waits for N Ready nodes
#   swarm_down                 removes all of it; idempotent
#   swarm_docker I ARGS...     the docker CLI against node I's daemon
#   swarm_load_image IMAGE...  docker save from the host's daemon, docker load into every node
#   swarm_netns_exec I CMD...  runs CMD in node I's network namespace
#   swarm_netns_spawn I LOG CMD...  the same in the background; sets SWARM_SPAWNED_PID
#   swarm_task_containers I SERVICE  running task containers of SERVICE on node I
#   swarm_node_ip I, swarm_host I (unix://...), swarm_netns I (namespace name)
#   swarm_status, swarm_leftovers (prints what is left; nothing when clean),
#   swarm_preflight (what this machine offers), swarm_storage_driver
# swarm_up sets SWARM_N, SWARM_DRIVER (the storage driver) and SWARM_UP_SECONDS;
# swarm_down sets SWARM_DOWN_SECONDS.
#
# Known limits, seen on a kernel without IPVS: the routing mesh (ports published in mode
# ingress) and VIP endpoints do not work; publish in mode host and use endpoint_mode dnsrr.
# Swarm tries to pull a tag-referenced image each time it starts a task; with no resolver
# the pull fails at once and the node's local image is used.

SWARM_BRIDGE=${SWARM_BRIDGE:-berthsw0}
SWARM_NET=${SWARM_NET:-10.213.0}
SWARM_RUN=${SWARM_RUN:-/run/berth-sw}
SWARM_ROOT=${SWARM_ROOT:-/var/lib/berth-sw}
SWARM_MANAGERS=${SWARM_MANAGERS:-3}
SWARM_STORAGE_DRIVER=${SWARM_STORAGE_DRIVER:-auto}
SWARM_BIP=${SWARM_BIP:-10.214.0.1/24}
SWARM_LOCAL_POOL=${SWARM_LOCAL_POOL:-10.215.0.0/16}
SWARM_OVERLAY_POOL=${SWARM_OVERLAY_POOL:-10.216.0.0/16}
SWARM_START_TIMEOUT=${SWARM_START_TIMEOUT:-60}
SWARM_READY_TIMEOUT=${SWARM_READY_TIMEOUT:-120}
SWARM_STOP_TIMEOUT=${SWARM_STOP_TIMEOUT:-30}
SWARM_CLIENT_TIMEOUT=${SWARM_CLIENT_TIMEOUT:-300}
SWARM_NETNS_PREFIX=berth-sw-
SWARM_VETH_PREFIX=bsw-h
SWARM_FW_COMMENT=berth-swarm
SWARM_MAX_NODES=20

SWARM_N=0
SWARM_DRIVER=
SWARM_UP_SECONDS=
SWARM_DOWN_SECONDS=
SWARM_SPAWNED_PID=

# ---------------------------------------------------------------- small helpers

swarm_note() {
    printf '# swarm: %s\n' "$*" >&2
}

swarm_error() {
    printf 'swarm error: %s\n' "$*" >&2
}

# swarm_now: seconds since the epoch with milliseconds, for timings.
swarm_now() {
    date +%s.%3N
}

swarm_elapsed() {
    awk -v a="$1" -v b="$(swarm_now)" 'BEGIN { printf "%.1f\n", b - a }'
}

# swarm_wait SECONDS DESCRIPTION COMMAND [ARGS...]: polls COMMAND every 0.5 s until it
# succeeds, for at most SECONDS (bounded both in polls and in wall-clock time).
swarm_wait() {
    local seconds=$1 what=$2 i deadline
    shift 2
    deadline=$((SECONDS + seconds))
    for ((i = 0; i < seconds * 2 + 1 && SECONDS <= deadline; i++)); do
        if "$@"; then
            return 0
        fi
        sleep 0.5
    done
    swarm_error "timed out after ${seconds}s waiting for $what"
    return 1
}

swarm_netns() { printf '%s%s\n' "$SWARM_NETNS_PREFIX" "$1"; }
swarm_node_ip() { printf '%s.%s\n' "$SWARM_NET" "$((10 + $1))"; }
swarm_sock() { printf '%s/d%s.sock\n' "$SWARM_RUN" "$1"; }
swarm_host() { printf 'unix://%s\n' "$(swarm_sock "$1")"; }
swarm_node_run() { printf '%s/d%s\n' "$SWARM_RUN" "$1"; }
swarm_node_root() { printf '%s/d%s\n' "$SWARM_ROOT" "$1"; }

# swarm_docker I ARGS...: the docker CLI against node I's daemon, with a time limit.
swarm_docker() {
    local i=$1
    shift
    timeout --foreground --kill-after=10 "$SWARM_CLIENT_TIMEOUT" \
        docker --host "$(swarm_host "$i")" "$@"
}

# swarm_netns_exec I COMMAND [ARGS...]: runs COMMAND in node I's network namespace (only
# the network namespace: files and mounts are the host's).
swarm_netns_exec() {
    local i=$1
    shift
    nsenter --net="/run/netns/$(swarm_netns "$i")" "$@"
}

# swarm_netns_spawn I LOG COMMAND [ARGS...]: starts COMMAND in the background in node I's
# network namespace, its output appended to LOG, and sets SWARM_SPAWNED_PID (nsenter
# execs COMMAND, so that is COMMAND's pid). Call it directly, not in $(...).
swarm_netns_spawn() {
    local i=$1 log=$2
    shift 2
    nsenter --net="/run/netns/$(swarm_netns "$i")" "$@" >>"$log" 2>&1 </dev/null &
    # shellcheck disable=SC2034 # for the caller
    SWARM_SPAWNED_PID=$!
}

# swarm_task_containers I SERVICE: IDs of the running containers of SERVICE's tasks on node I.
swarm_task_containers() {
    swarm_docker "$1" ps -q --filter "label=com.docker.swarm.service.name=$2" --filter status=running
}

# swarm_cmdline_has PID TEXT: PID's command line contains TEXT (so it is one of ours).
swarm_cmdline_has() {
    local cmdline
    cmdline=$(tr "\0" " " 2>/dev/null <"/proc/$1/cmdline") || return 1
    [[ $cmdline == *"$2"* ]]
}

swarm_pid_alive() {
    kill -0 "$1" 2>/dev/null
}

# swarm_read_pid FILE: the pid in FILE, if it is a number.
swarm_read_pid() {
    local pid=
    if [[ -r $1 ]]; then
        pid=$(tr -dc '0-9' <"$1" 2>/dev/null) || true
    fi
    [[ -n $pid ]] && printf '%s\n' "$pid"
}

# swarm_stop_pids SECONDS PID...: SIGTERM to every PID, then SIGKILL to those still alive
# after SECONDS. Only ever called with PIDs checked to be ours.
swarm_stop_pids() {
    local seconds=$1 pid i alive
    shift
    (($# > 0)) || return 0
    kill -TERM "$@" 2>/dev/null || true
    for ((i = 0; i < seconds * 4; i++)); do
        alive=0
        for pid in "$@"; do
            ! swarm_pid_alive "$pid" || alive=1
        done
        ((alive)) || return 0
        sleep 0.25
    done
    for pid in "$@"; do
        if swarm_pid_alive "$pid"; then
            swarm_note "pid $pid did not stop within ${seconds}s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
}

# swarm_netns_pids NAME: every process whose network namespace is the named one.
swarm_netns_pids() {
    local ns_file=/run/netns/$1 inode link proc
    [[ -e $ns_file ]] || return 0
    inode=$(stat -L -c %i "$ns_file" 2>/dev/null) || return 0
    for proc in /proc/[0-9]*; do
        link=$(readlink "$proc/ns/net" 2>/dev/null) || continue
        [[ $link == "net:[$inode]" ]] && printf '%s\n' "${proc#/proc/}"
    done
    return 0
}

# swarm_cgroup_dirs I: node I's cgroup parent in every mounted hierarchy.
swarm_cgroup_dirs() {
    local dir
    for dir in /sys/fs/cgroup/*/"$(swarm_netns "$1")" /sys/fs/cgroup/"$(swarm_netns "$1")"; do
        [[ -d $dir ]] && printf '%s\n' "$dir"
    done
    return 0
}

# swarm_cgroup_pids I: processes in node I's containers' cgroups.
swarm_cgroup_pids() {
    local dir
    for dir in $(swarm_cgroup_dirs "$1"); do
        find "$dir" -name cgroup.procs -exec cat {} + 2>/dev/null
    done | sort -un
}

# swarm_known_nodes: the node numbers of anything left by swarm_up: state directories,
# network namespaces and host-side veths.
swarm_known_nodes() {
    local path name
    {
        for path in "$SWARM_RUN"/d[0-9]*/ "$SWARM_ROOT"/d[0-9]*/; do
            [[ -d $path ]] || continue
            name=${path%/}
            printf '%s\n' "${name##*/d}"
        done
        for path in /run/netns/"$SWARM_NETNS_PREFIX"[0-9]*; do
            [[ -e $path ]] && printf '%s\n' "${path##*/"$SWARM_NETNS_PREFIX"}"
        done
        ip -o link show 2>/dev/null |
            sed -n "s/^[0-9]*: $SWARM_VETH_PREFIX\([0-9]*\)[@:].*/\1/p"
        ((SWARM_N == 0)) || seq 1 "$SWARM_N"
    } | { grep -E "^[0-9]+$" || true; } | sort -un
}

# ---------------------------------------------------------------- host firewall

# swarm_fw_backends: the iptables commands whose FORWARD chain matters here: `iptables`
# always, and iptables-legacy too when it is a different backend that has a FORWARD
# chain with a DROP policy or rules of its own.
swarm_fw_backends() {
    command -v iptables >/dev/null || return 0
    printf 'iptables\n'
    if command -v iptables-legacy >/dev/null && iptables --version 2>/dev/null | grep nf_tables >/dev/null; then
        if iptables-legacy -S FORWARD 2>/dev/null | grep -E '^-P FORWARD DROP|^-A FORWARD' >/dev/null; then
            printf 'iptables-legacy\n'
        fi
    fi
}

swarm_fw_rules() {
    printf '%s\n' "-i $SWARM_BRIDGE -o $SWARM_BRIDGE -m comment --comment $SWARM_FW_COMMENT -j ACCEPT"
    printf '%s\n' "-i $SWARM_BRIDGE ! -o $SWARM_BRIDGE -m comment --comment $SWARM_FW_COMMENT -j DROP"
}

swarm_fw_open() {
    local backend rule position
    for backend in $(swarm_fw_backends); do
        position=1
        while read -r rule; do
            # shellcheck disable=SC2086 # the rule is split into its words on purpose
            "$backend" -w 10 -I FORWARD "$position" $rule || return 1
            position=$((position + 1))
        done < <(swarm_fw_rules)
    done
}

# swarm_fw_close: deletes every FORWARD rule carrying our comment, in every backend.
swarm_fw_close() {
    local backend rule i
    for backend in iptables iptables-legacy; do
        command -v "$backend" >/dev/null || continue
        for ((i = 0; i < 20; i++)); do
            rule=$("$backend" -w 10 -S FORWARD 2>/dev/null |
                grep -m1 -- "--comment $SWARM_FW_COMMENT" | sed 's/^-A //') || true
            [[ -n $rule ]] || break
            # shellcheck disable=SC2086
            "$backend" -w 10 -D $rule || break
        done
    done
}

# ---------------------------------------------------------------- checks

# swarm_storage_driver: overlay2 when an overlay mount works on $SWARM_ROOT's file
# system, vfs otherwise (or $SWARM_STORAGE_DRIVER when it is not "auto").
swarm_storage_driver() {
    local probe status created=0
    if [[ $SWARM_STORAGE_DRIVER != auto ]]; then
        printf '%s\n' "$SWARM_STORAGE_DRIVER"
        return 0
    fi
    [[ -d $SWARM_ROOT ]] || created=1
    mkdir -p "$SWARM_ROOT" || return 1
    probe=$(mktemp -d "$SWARM_ROOT/.overlay-probe.XXXXXX") || return 1
    mkdir -p "$probe"/{lower,upper,work,merged}
    echo lower >"$probe/lower/file"
    status=0
    # shellcheck disable=SC2016 # expanded by the inner shell
    unshare --mount --propagation private sh -c '
        mount -t overlay overlay -o "lowerdir=$1/lower,upperdir=$1/upper,workdir=$1/work" "$1/merged" &&
        echo upper >"$1/merged/file" && rm "$1/merged/file"' overlay-probe "$probe" 2>/dev/null ||
        status=$?
    rm -rf "$probe"
    ((created == 0)) || rmdir "$SWARM_ROOT" 2>/dev/null || true
    if ((status == 0)); then
        printf 'overlay2\n'
    else
        printf 'vfs\n'
    fi
}

# swarm_preflight: prints what this machine offers for swarm_up, one finding a line;
# returns non-zero when something swarm_up needs is missing.
swarm_preflight() {
    local ok=0 command ns=${SWARM_NETNS_PREFIX}probe policy
    if [[ $(id -u) != 0 ]]; then
        echo "missing: root"
        return 1
    fi
    for command in ip nsenter unshare mount dockerd containerd containerd-shim-runc-v2 runc docker iptables timeout; do
        command -v "$command" >/dev/null || {
            echo "missing: $command"
            ok=1
        }
    done
    ((ok == 0)) || return 1
    ip netns del "$ns" 2>/dev/null || true
    if ! ip netns add "$ns"; then
        echo "missing: network namespaces (ip netns add failed)"
        return 1
    fi
    if ip -n "$ns" link add probe-br type bridge 2>/dev/null; then
        echo "bridge: yes"
    else
        echo "missing: bridge devices"
        ok=1
    fi
    if ip -n "$ns" link add probe-v0 type veth peer name probe-v1 2>/dev/null; then
        echo "veth: yes"
    else
        echo "missing: veth devices"
        ok=1
    fi
    if ip -n "$ns" link add probe-vx type vxlan id 4242 dstport 4789 2>/dev/null; then
        echo "vxlan in a network namespace: yes"
    else
        echo "missing: vxlan devices in a network namespace (overlay networks)"
        ok=1
    fi
    ip netns del "$ns" 2>/dev/null || true
    if [[ -e /proc/net/ip_vs ]]; then
        echo "ipvs: yes"
    else
        echo "ipvs: no (no routing mesh and no VIP endpoints: publish ports in mode host, use endpoint_mode dnsrr)"
    fi
    if grep -q 'CONFIG_INET_ESP=[ym]' <(zcat /proc/config.gz 2>/dev/null); then
        echo "esp (encrypted overlay): yes"
    elif [[ -r /proc/config.gz ]]; then
        echo "esp (encrypted overlay): no"
    fi
    echo "bridge-nf-call-iptables: $(cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null || echo absent)"
    policy=$(iptables -S FORWARD 2>/dev/null | sed -n 's/^-P FORWARD //p')
    echo "host FORWARD policy: ${policy:-unknown}"
    [[ ! -S /run/containerd/containerd.sock ]] ||
        echo "note: a system containerd listens on /run/containerd/containerd.sock (hidden from the nodes)"
    echo "storage driver: $(swarm_storage_driver)"
    return "$ok"
}

# ---------------------------------------------------------------- network

swarm_net_up() {
    local n=$1 i ns veth
    ip link add "$SWARM_BRIDGE" type bridge || return 1
    echo 1 >"/proc/sys/net/ipv6/conf/$SWARM_BRIDGE/disable_ipv6" 2>/dev/null || true
    ip addr add "$SWARM_NET.1/24" dev "$SWARM_BRIDGE" || return 1
    ip link set "$SWARM_BRIDGE" up || return 1
    swarm_fw_open || return 1
    for ((i = 1; i <= n; i++)); do
        ns=$(swarm_netns "$i")
        veth=$SWARM_VETH_PREFIX$i
        ip netns add "$ns" || return 1
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 || true
        ip -n "$ns" link set lo up || return 1
        ip link add "$veth" type veth peer name eth0 netns "$ns" || return 1
        echo 1 >"/proc/sys/net/ipv6/conf/$veth/disable_ipv6" 2>/dev/null || true
        ip link set "$veth" master "$SWARM_BRIDGE" up || return 1
        ip -n "$ns" addr add "$(swarm_node_ip "$i")/24" dev eth0 || return 1
        ip -n "$ns" link set eth0 up || return 1
        ip -n "$ns" route add default via "$SWARM_NET.1" || return 1
    done
}

# swarm_tcp_reaches I IP PORT: a TCP connection from node I's netns to IP:PORT is
# either accepted or refused (so packets get there and back), not left unanswered.
swarm_tcp_reaches() {
    local output
    # shellcheck disable=SC2016 # expanded by the inner shell
    output=$(swarm_netns_exec "$1" timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$2" "$3" 2>&1) ||
        [[ $output == *"Connection refused"* ]]
}

# swarm_reachable: node 1 reaches every other node over the bridge (what the firewall
# rules are for), tried on the swarm port before anything listens there.
swarm_reachable() {
    local i
    for ((i = 2; i <= SWARM_N; i++)); do
        swarm_tcp_reaches 1 "$(swarm_node_ip "$i")" 2377 || return 1
    done
}

# ---------------------------------------------------------------- daemons

# swarm_write_node_files I: node I's daemon.json, containerd.toml, resolv.conf and start.sh.
swarm_write_node_files() {
    local i=$1 run root ns
    run=$(swarm_node_run "$i")
    root=$(swarm_node_root "$i")
    ns=$(swarm_netns "$i")
    mkdir -p "$run" "$root/docker" "$root/containerd" || return 1
    cat >"$run/daemon.json" <<EOF
{
  "hosts": ["unix://$(swarm_sock "$i")"],
  "data-root": "$root/docker",
  "exec-root": "$run/docker",
  "pidfile": "$run/dockerd.pid",
  "deprecated-key-path": "$root/key.json",
  "containerd": "$run/containerd/containerd.sock",
  "storage-driver": "$SWARM_DRIVER",
  "iptables": true,
  "ip-forward": true,
  "bip": "$SWARM_BIP",
  "default-address-pools": [{"base": "$SWARM_LOCAL_POOL", "size": 24}],
  "insecure-registries": ["$SWARM_NET.0/24"],
  "cgroup-parent": "/$ns",
  "exec-opts": ["native.cgroupdriver=cgroupfs"],
  "live-restore": false,
  "shutdown-timeout": 5,
  "log-driver": "json-file",
  "log-opts": {"max-size": "10m", "max-file": "2"}
}
EOF
    cat >"$run/containerd.toml" <<EOF
version = 2
root = "$root/containerd"
state = "$run/containerd"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "$run/containerd/containerd.sock"

[ttrpc]
  address = ""

[debug]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$root/containerd/opt"
EOF
    printf 'nameserver 127.0.0.1\n' >"$run/resolv.conf"
    # Runs under nsenter --net (the node's network namespace) and unshare --mount --uts.
    cat >"$run/start.sh" <<EOF
#!/usr/bin/env bash
# Node $i of the berth test swarm: its containerd in the background, then its dockerd.
set -eu
run=$run
echo $ns >/proc/sys/kernel/hostname
mkdir -p "\$run/cgroup"
mount --rbind /sys/fs/cgroup "\$run/cgroup"
mount -t sysfs sysfs /sys
mount --rbind "\$run/cgroup" /sys/fs/cgroup
umount -l "\$run/cgroup"
mount -t tmpfs -o mode=0711 tmpfs /run/containerd
mount --bind "\$run/resolv.conf" /etc/resolv.conf
containerd --config "\$run/containerd.toml" >>"\$run/containerd.log" 2>&1 &
echo \$! >"\$run/containerd.pid"
for ((i = 0; i < 200; i++)); do
    [[ -S \$run/containerd/containerd.sock ]] && break
    kill -0 \$! 2>/dev/null || { echo "containerd exited" >&2; exit 1; }
    sleep 0.1
done
exec dockerd --config-file "\$run/daemon.json"
EOF
}

# swarm_daemon_start I: starts node I's containerd and dockerd in the background.
swarm_daemon_start() {
    local i=$1 run
    run=$(swarm_node_run "$i")
    swarm_write_node_files "$i" || return 1
    nsenter --net="/run/netns/$(swarm_netns "$i")" \
        unshare --mount --uts --propagation private -- bash "$run/start.sh" \
        >>"$run/dockerd.log" 2>&1 </dev/null &
    echo $! >"$run/launch.pid"
}

swarm_daemon_answers() {
    timeout 10 docker --host "$(swarm_host "$1")" info --format '{{.ServerVersion}}' >/dev/null 2>&1
}

# swarm_daemons_answer N: all N daemons answer, or fails at once when one has exited.
swarm_daemons_answer() {
    local i pid
    for ((i = 1; i <= $1; i++)); do
        if ! swarm_daemon_answers "$i"; then
            pid=$(swarm_read_pid "$(swarm_node_run "$i")/launch.pid")
            if [[ -n $pid ]] && ! swarm_pid_alive "$pid"; then
                SWARM_DEAD_NODE=$i
                return 0
            fi
            return 1
        fi
    done
}

swarm_show_logs() {
    local i=$1 run
    run=$(swarm_node_run "$i")
    swarm_error "node $i dockerd log tail:"
    tail -n 15 "$run/dockerd.log" >&2 2>/dev/null || true
    if [[ -s $run/containerd.log ]]; then
        swarm_error "node $i containerd log tail:"
        tail -n 5 "$run/containerd.log" >&2 || true
    fi
}

# swarm_daemon_stop_all: stops every dockerd, then every containerd, then whatever is
# still left in the nodes' network namespaces and container cgroups.
swarm_daemon_stop_all() {
    local i run pid pids=() nodes
    mapfile -t nodes < <(swarm_known_nodes)
    for i in "${nodes[@]}"; do
        run=$(swarm_node_run "$i")
        for pid in $(swarm_read_pid "$run/launch.pid") $(swarm_read_pid "$run/dockerd.pid"); do
            swarm_cmdline_has "$pid" "$run/" && pids+=("$pid")
        done
    done
    mapfile -t pids < <(printf '%s\n' "${pids[@]}" | sort -un | grep .)
    swarm_stop_pids "$SWARM_STOP_TIMEOUT" "${pids[@]}"
    pids=()
    for i in "${nodes[@]}"; do
        run=$(swarm_node_run "$i")
        pid=$(swarm_read_pid "$run/containerd.pid")
        [[ -n $pid ]] && swarm_cmdline_has "$pid" "$run/" && pids+=("$pid")
    done
    swarm_stop_pids 10 "${pids[@]}"
    # Left over only after a crash: shims, proxies and container processes.
    pids=()
    for i in "${nodes[@]}"; do
        mapfile -t -O "${#pids[@]}" pids < <(swarm_netns_pids "$(swarm_netns "$i")"; swarm_cgroup_pids "$i")
    done
    mapfile -t pids < <(printf '%s\n' "${pids[@]}" | grep -E '^[0-9]+$' | sort -un)
    if ((${#pids[@]} > 0)); then
        swarm_note "stopping ${#pids[@]} leftover process(es) of the nodes: $(
            for pid in "${pids[@]}"; do printf '%s(%s) ' "$pid" "$(cat "/proc/$pid/comm" 2>/dev/null)"; done)"
        swarm_stop_pids 5 "${pids[@]}"
    fi
}

# ---------------------------------------------------------------- swarm

swarm_ready_count() {
    swarm_docker 1 node ls --format '{{.Status}}' 2>/dev/null | grep -c '^Ready$'
}

swarm_all_ready() {
    [[ $(swarm_ready_count) == "$SWARM_N" ]]
}

swarm_form() {
    local n=$1 i manager_token worker_token token ip1
    ip1=$(swarm_node_ip 1)
    swarm_docker 1 swarm init --advertise-addr "$ip1" --listen-addr "$ip1:2377" \
        --default-addr-pool "$SWARM_OVERLAY_POOL" --default-addr-pool-mask-length 24 >/dev/null ||
        return 1
    manager_token=$(swarm_docker 1 swarm join-token -q manager) || return 1
    worker_token=$(swarm_docker 1 swarm join-token -q worker) || return 1
    for ((i = 2; i <= n; i++)); do
        token=$worker_token
        ((i > SWARM_MANAGERS)) || token=$manager_token
        swarm_docker "$i" swarm join --token "$token" --advertise-addr "$(swarm_node_ip "$i")" \
            --listen-addr "$(swarm_node_ip "$i"):2377" "$ip1:2377" >/dev/null || return 1
    done
}

# swarm_up N: builds the bridge, N network namespaces and daemons, and the swarm; waits
# until `docker node ls` shows N Ready nodes. Sets SWARM_N, SWARM_DRIVER, SWARM_UP_SECONDS.
swarm_up() {
    local n=${1:-3} start i
    start=$(swarm_now)
    if ! [[ $n =~ ^[0-9]+$ ]] || ((n < 1 || n > SWARM_MAX_NODES)); then
        swarm_error "swarm_up: node count must be 1..$SWARM_MAX_NODES, not '$n'"
        return 1
    fi
    if [[ $(id -u) != 0 ]]; then
        swarm_error "swarm_up needs root"
        return 1
    fi
    if [[ -n $(swarm_leftovers) ]]; then
        swarm_note "cleaning up what an earlier run left"
        swarm_down
    fi
    SWARM_N=$n
    mkdir -p "$SWARM_RUN" "$SWARM_ROOT" || return 1
    if [[ ! -e /run/containerd ]]; then
        mkdir -p /run/containerd && touch "$SWARM_RUN/created-run-containerd"
    fi
    SWARM_DRIVER=$(swarm_storage_driver) || return 1
    swarm_net_up "$n" || {
        swarm_error "could not build the network"
        return 1
    }
    if ! swarm_wait 10 "the nodes to reach each other over $SWARM_BRIDGE" swarm_reachable; then
        return 1
    fi
    for ((i = 1; i <= n; i++)); do
        swarm_daemon_start "$i" || return 1
    done
    SWARM_DEAD_NODE=
    if ! swarm_wait "$SWARM_START_TIMEOUT" "$n daemons to answer" swarm_daemons_answer "$n" ||
        [[ -n $SWARM_DEAD_NODE ]]; then
        for ((i = 1; i <= n; i++)); do
            swarm_daemon_answers "$i" || swarm_show_logs "$i"
        done
        return 1
    fi
    swarm_note "$n daemons up after $(swarm_elapsed "$start") s (storage driver $SWARM_DRIVER)"
    if ! swarm_form "$n"; then
        swarm_error "could not form the swarm"
        swarm_show_logs 1
        return 1
    fi
    if ! swarm_wait "$SWARM_READY_TIMEOUT" "$n Ready nodes" swarm_all_ready; then
        swarm_docker 1 node ls >&2 || true
        return 1
    fi
    SWARM_UP_SECONDS=$(swarm_elapsed "$start")
    swarm_note "swarm of $n nodes ready after $SWARM_UP_SECONDS s"
}

# swarm_down: stops and removes everything swarm_up made: daemons, leftover processes,
# cgroups, network namespaces, veths, bridge, firewall rules, state and data. Idempotent;
# safe after a partial swarm_up. Sets SWARM_DOWN_SECONDS.
swarm_down() {
    local start i mount_point path
    start=$(swarm_now)
    swarm_daemon_stop_all
    for i in $(swarm_known_nodes); do
        for path in $(swarm_cgroup_dirs "$i"); do
            swarm_wait 10 "cgroup $path to empty" swarm_rmdir_tree "$path" 2>/dev/null ||
                swarm_note "could not remove cgroup $path"
        done
        ip netns del "$(swarm_netns "$i")" 2>/dev/null || true
        ip link del "$SWARM_VETH_PREFIX$i" 2>/dev/null || true
    done
    ip link del "$SWARM_BRIDGE" 2>/dev/null || true
    swarm_fw_close
    # The daemons' own mounts live in their mount namespaces; this is for anything else.
    for mount_point in $(swarm_mounts | sort -r); do
        umount -l "$mount_point" 2>/dev/null || true
    done
    if [[ -n ${SWARM_LOGS:-} ]]; then
        for i in $(swarm_known_nodes); do
            for path in "$(swarm_node_run "$i")"/{dockerd,containerd}.log; do
                [[ ! -e $path ]] || { mkdir -p "$SWARM_LOGS" && cp "$path" "$SWARM_LOGS/node$i-${path##*/}"; } || true
            done
        done
    fi
    if [[ -e $SWARM_RUN/created-run-containerd ]]; then
        rmdir /run/containerd/s /run/containerd 2>/dev/null || true
    fi
    for path in "$SWARM_RUN" "$SWARM_ROOT"; do
        [[ $path == /*/* ]] || continue # never a top-level directory
        rm -rf "$path" 2>/dev/null || rm -rf "$path" || swarm_note "could not remove $path"
    done
    SWARM_N=0
    SWARM_DOWN_SECONDS=$(swarm_elapsed "$start")
    return 0
}

# swarm_rmdir_tree DIR: removes an empty cgroup tree, children first.
swarm_rmdir_tree() {
    [[ -d $1 ]] || return 0
    find "$1" -depth -type d -exec rmdir {} + 2>/dev/null
    [[ ! -d $1 ]]
}

# swarm_mounts: host mount points under the state and data roots or on our netns files.
swarm_mounts() {
    awk -v run="$SWARM_RUN" -v root="$SWARM_ROOT" -v ns="/run/netns/$SWARM_NETNS_PREFIX" '
        index($5, run "/") == 1 || $5 == run || index($5, root "/") == 1 || $5 == root ||
        index($5, ns) == 1 { print $5 }' /proc/self/mountinfo
}

# swarm_leftovers: prints one line for each thing of ours that still exists; nothing when
# the machine is clean.
swarm_leftovers() {
    local ns pid backend dir
    for ns in $(ip netns list 2>/dev/null | awk '{ print $1 }'); do
        [[ $ns == "$SWARM_NETNS_PREFIX"* ]] && echo "netns $ns"
    done
    ip link show "$SWARM_BRIDGE" >/dev/null 2>&1 && echo "bridge $SWARM_BRIDGE"
    ip -o link show 2>/dev/null | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }' |
        { grep "^${SWARM_VETH_PREFIX}[0-9]" || true; } | sed 's/^/veth /'
    for backend in iptables iptables-legacy; do
        command -v "$backend" >/dev/null || continue
        "$backend" -w 10 -S FORWARD 2>/dev/null | { grep -- "--comment $SWARM_FW_COMMENT" || true; } |
            sed "s/^/$backend rule: /"
    done
    for pid in $(pgrep -f -- "$SWARM_RUN/|$SWARM_ROOT/" 2>/dev/null || true); do
        [[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
        swarm_cmdline_has "$pid" "$SWARM_RUN/" || swarm_cmdline_has "$pid" "$SWARM_ROOT/" || continue
        echo "process $pid: $(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | cut -c1-120)"
    done
    for dir in /sys/fs/cgroup/*/"$SWARM_NETNS_PREFIX"[0-9]* /sys/fs/cgroup/"$SWARM_NETNS_PREFIX"[0-9]*; do
        [[ -d $dir ]] && echo "cgroup $dir"
    done
    swarm_mounts | sed 's/^/mount /' || true
    for dir in "$SWARM_RUN" "$SWARM_ROOT"; do
        [[ -e $dir ]] && echo "directory $dir"
    done
    return 0
}

# swarm_status: the nodes and, when the swarm is up, `docker node ls`.
swarm_status() {
    local i
    for i in $(swarm_known_nodes); do
        if swarm_daemon_answers "$i"; then
            echo "node $i: $(swarm_node_ip "$i") $(swarm_host "$i") up"
        else
            echo "node $i: $(swarm_node_ip "$i") $(swarm_host "$i") not answering"
        fi
    done
    ! swarm_daemon_answers 1 || swarm_docker 1 node ls
}

# swarm_load_image IMAGE...: copies images from the host's daemon into every node
# (docker save, then docker load on each node).
swarm_load_image() {
    local archive i n=$SWARM_N
    ((n > 0)) || n=$(swarm_known_nodes | wc -l)
    archive=$(mktemp "$SWARM_RUN/images.XXXXXX.tar") || return 1
    if ! timeout "$SWARM_CLIENT_TIMEOUT" docker save -o "$archive" "$@"; then
        rm -f "$archive"
        return 1
    fi
    for ((i = 1; i <= n; i++)); do
        if ! swarm_docker "$i" load -q -i "$archive" >/dev/null; then
            swarm_error "docker load into node $i failed"
            rm -f "$archive"
            return 1
        fi
    done
    rm -f "$archive"
}

# ---------------------------------------------------------------- command line

swarm_main() {
    case ${1:-} in
    up)
        trap 'swarm_error "interrupted"; swarm_down; exit 130' INT TERM
        swarm_up "${2:-3}" || {
            swarm_down
            return 1
        }
        swarm_status
        for ((i = 1; i <= SWARM_N; i++)); do
            echo "export DOCKER_HOST=$(swarm_host "$i")  # node $i"
        done
        ;;
    down)
        swarm_down
        echo "down in $SWARM_DOWN_SECONDS s"
        swarm_leftovers
        ;;
    status) swarm_status ;;
    leftovers) swarm_leftovers ;;
    preflight) swarm_preflight ;;
    "")
        # tests/e2e/run.sh runs every script in this directory but lib.sh and run.sh;
        # this one is a library, so it reports no tests.
        echo "# swarm-lib.sh is a library (usage: swarm-lib.sh up [N] | down | status | leftovers | preflight)"
        echo "e2e swarm-lib: 0 passed, 0 failed"
        ;;
    *)
        echo "usage: swarm-lib.sh up [N] | down | status | leftovers | preflight" >&2
        return 2
        ;;
    esac
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -uo pipefail
    swarm_main "$@"
fi

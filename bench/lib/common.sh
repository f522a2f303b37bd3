# shellcheck shell=bash
# Shared helpers for the berth benchmark suite: logging, temp space, ports,
# bounded waits, statistics. Sourced by bench/run.sh; not executable alone.

# Progress goes to stderr so that stdout carries only the result table.
log() {
    printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2
}

die() {
    log "error: $*"
    exit 1
}

# package_of TOOL : the Debian package that ships TOOL.
package_of() {
    case $1 in
        ss | tc | ip) printf 'iproute2\n' ;;
        nsenter) printf 'util-linux\n' ;;
        htpasswd) printf 'apache2-utils\n' ;;
        etcd) printf 'etcd-server\n' ;;
        gnuplot) printf 'gnuplot-nox\n' ;;
        *) printf '%s\n' "$1" ;;
    esac
}

# ensure_tools TOOL... : installs missing tools with apt-get (only those), or fails naming them.
ensure_tools() {
    local tool packages=()
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || packages+=("$(package_of "$tool")")
    done
    ((${#packages[@]} == 0)) && return 0
    log "installing missing packages: ${packages[*]}"
    if ((EUID != 0)) || ! command -v apt-get >/dev/null 2>&1; then
        die "missing packages: ${packages[*]} (install them with apt-get)"
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${packages[@]}" >&2 ||
        die "apt-get could not install: ${packages[*]}"
}

# require_free_space DIR GIB : the benchmarks write several GiB of blobs.
require_free_space() {
    local dir=$1 need_gib=$2 avail_kib
    avail_kib=$(df -Pk "$dir" | awk 'NR == 2 { print $4 }')
    ((avail_kib >= need_gib * 1024 * 1024)) ||
        die "$dir has $((avail_kib / 1024 / 1024)) GiB free, the selected benchmarks need about $need_gib GiB (set BENCH_TMP elsewhere)"
}

# make_work_dir BASE : creates the run's private temp dir and prints its path.
make_work_dir() {
    local base=$1
    mkdir -p "$base"
    mktemp -d "$base/berth-bench.XXXXXX"
}

# pick_port : prints a TCP port that no socket uses right now, taken below the
# kernel's ephemeral range so that client connections cannot grab it before the
# server binds it.
pick_port() {
    local attempt port low
    read -r low _ </proc/sys/net/ipv4/ip_local_port_range
    ((low > 11000)) || die "ephemeral port range starts at $low; no room below it for servers"
    for attempt in $(seq 1 50); do
        port=$((10000 + RANDOM % (low - 10000)))
        if [[ -z $(ss -Htan "sport = :$port") ]]; then
            printf '%s\n' "$port"
            return 0
        fi
    done
    die "no free port found after $attempt attempts"
}

# pick_ports N : prints N distinct ports, each as pick_port picks them.
pick_ports() {
    local count=$1 attempt port ports=()
    for ((attempt = 0; ${#ports[@]} < count && attempt < count * 20; attempt++)); do
        port=$(pick_port)
        [[ " ${ports[*]} " == *" $port "* ]] || ports+=("$port")
    done
    ((${#ports[@]} == count)) || die "could not pick $count distinct free ports"
    printf '%s\n' "${ports[@]}"
}

# wait_until SECONDS DESCRIPTION COMMAND... : polls COMMAND every 0.1 s, bounded in time.
wait_until() {
    local seconds=$1 what=$2 tries
    shift 2
    for ((tries = 0; tries < seconds * 10; tries++)); do
        "$@" && return 0
        sleep 0.1
    done
    log "timed out after ${seconds}s waiting for $what"
    return 1
}

# stop_pid PID : TERM, bounded wait, then KILL; only for processes this run started.
stop_pid() {
    local pid=$1
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    wait_until 10 "pid $pid to exit" pid_gone "$pid" || kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

pid_gone() {
    ! kill -0 "$1" 2>/dev/null
}

# vm_hwm_mib PID : peak resident memory (VmHWM) of a running process, in MiB.
vm_hwm_mib() {
    local kib
    kib=$(awk '/^VmHWM:/ { print $2 }' "/proc/$1/status")
    [[ -n $kib ]] || die "no VmHWM for pid $1"
    calc "$kib / 1024"
}

# cpu_seconds PID... : CPU time (user and system) the running processes have used.
cpu_seconds() {
    local pid ticks=0
    for pid in "$@"; do
        ticks=$((ticks + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
    done
    calc "$ticks / $(getconf CLK_TCK)"
}

# children_cpu_seconds SHELL_PID : CPU time of the finished children of that shell (curl,
# awk and the like, with theirs). Pass $BASHPID from the measuring shell itself: a command
# substitution runs in a child of it.
children_cpu_seconds() {
    calc "$(awk '{ print $16 + $17 }' "/proc/$1/stat") / $(getconf CLK_TCK)"
}

# recycle_memory MIB : writes MIB of zeros to a scratch file and removes it. On a virtual
# machine whose host backs guest memory on first touch, growing the page cache into
# memory never touched costs ten times the system time of reusing freed pages (here a
# 1 GiB dd took 2.7-3.1 s of system time instead of 0.22-0.25 s); this leaves that much
# freed, already backed memory for the next files, so a figure measures the program and
# not the host. first_touch_cost shows the effect.
recycle_memory() {
    dd if=/dev/zero of="$WORK_DIR/recycle" bs=1M count="$1" status=none
    rm -f "$WORK_DIR/recycle"
}

# first_touch_cost MIB : "<fresh> <recycled>", the system seconds of writing MIB of
# zeros into new page-cache pages, first while the file before it stays cached (fresh
# memory, unless the machine has reused all of it already), then into the pages it freed.
first_touch_cost() {
    local fresh recycled TIMEFORMAT=%S
    dd if=/dev/zero of="$WORK_DIR/touch-a" bs=1M count="$1" status=none
    fresh=$( { time dd if=/dev/zero of="$WORK_DIR/touch-b" bs=1M count="$1" status=none; } 2>&1)
    rm -f "$WORK_DIR/touch-a" "$WORK_DIR/touch-b"
    recycled=$( { time dd if=/dev/zero of="$WORK_DIR/touch-c" bs=1M count="$1" status=none; } 2>&1)
    rm -f "$WORK_DIR/touch-c"
    printf '%s %s\n' "$fresh" "$recycled"
}

# median NUMBER... : the median (mean of the middle two for an even count).
median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# calc EXPRESSION : floating-point arithmetic through awk.
calc() {
    awk "BEGIN { printf \"%.6f\n\", $1 }"
}

# mb_per_s BYTES SECONDS : throughput in MB/s (10^6 bytes).
mb_per_s() {
    calc "$1 / $2 / 1000000"
}

# size_label MIB : "1 GiB" or "256 MiB".
size_label() {
    local mib=$1
    if ((mib % 1024 == 0)); then
        printf '%s GiB\n' "$((mib / 1024))"
    else
        printf '%s MiB\n' "$mib"
    fi
}

# load_average : the 1-minute load average.
load_average() {
    cut -d' ' -f1 /proc/loadavg
}

# warn_if_busy : other work on the machine skews every figure; say so up front.
warn_if_busy() {
    local load
    load=$(load_average)
    if awk -v l="$load" -v n="$(nproc)" 'BEGIN { exit !(l > n / 2) }'; then
        log "warning: load average is $load on $(nproc) cores; figures will be noisy"
    fi
}

# now : seconds since the epoch with microseconds.
now() {
    printf '%s\n' "$EPOCHREALTIME"
}

# p50_p99 [SCALE] : "<p50> <p99>" of the numbers on stdin, one a line, each times
# SCALE (default 1), with three decimals.
p50_p99() {
    sort -g | awk -v scale="${1:-1}" '{ v[NR] = $1 * scale }
        END { p = int(NR * 0.99) + 1; if (p > NR) p = NR; printf "%.3f %.3f\n", v[int(NR * 0.5) + 1], v[p] }'
}

# shellcheck shell=bash
# What the benchmark scripts that start servers share (sourced by
# run_memcaslap.sh and run_daemon_ab.sh): their usage text, a temporary
# directory and the processes to kill on exit, building the one-file tools,
# and ports on loopback. $me names the script in errors, $root the tree.

# The script's top comment, as its usage.
usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 2
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# with_tmp PREFIX: $tmp, a new directory, removed on exit after every
# process whose PID the script added to `pids` is killed
with_tmp() {
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    pids=()
    trap cleanup EXIT
    trap 'exit 130' INT TERM
}
# shellcheck disable=SC2317 # called by the trap
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$tmp"
}

# compile_tool NAME: bench/NAME.c, a program of one file, built as $tmp/NAME
compile_tool() {
    "${CC:-cc}" -std=c11 -O2 -o "$tmp/$1" "${root:?}/bench/$1.c"
}

ports_taken=" "

# free_port VAR: a port P with P and P+1 free, below the ephemeral range and
# not handed out before by this script, in VAR.
free_port() {
    local p
    while :; do
        p=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
        [[ $ports_taken == *" $p "* || $ports_taken == *" $((p + 1)) "* ||
            $ports_taken == *" $((p - 1)) "* ]] && continue
        port_open "$p" || port_open "$((p + 1))" || break
    done
    ports_taken+="$p $((p + 1)) "
    printf -v "$1" '%s' "$p"
}

# wait_port PORT PID: until something accepts on PORT (20 s at most); exits
# the script if PID dies first.
wait_port() {
    local deadline=$((SECONDS + 20))
    until port_open "$1"; do
        kill -0 "$2" 2>/dev/null || { echo "${me:-bench}: server pid $2 died" >&2; exit 1; }
        ((SECONDS < deadline)) || { echo "${me:-bench}: port $1 not open" >&2; exit 1; }
        sleep 0.05
    done
}

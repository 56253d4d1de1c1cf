# shellcheck shell=bash
# Helpers the daemon's shell tests share: free loopback ports, starting
# sessnode daemons (or a reference memcached) in the background, bounded
# waits, and a cleanup that kills exactly the processes the test started, by
# PID, and removes its temporary directory. Source it after `set -euo
# pipefail`; call sn_setup first.
#
# Every wait takes a deadline in seconds. A test is also meant to run under
# `timeout` (ctest's command line adds one); sn_self_timeout re-executes a
# script under one when it is run by hand.

SN_PIDS=()          # every background process started, killed on exit
SN_PORTS_TAKEN=" "  # ports handed out in this run, never handed out twice
SN_TMP=""
declare -gA SN_PID_OF=()   # daemon name -> pid
declare -gA SN_LOG_OF=()   # daemon name -> its stderr log

sn_log() { printf '%s [%s] %s\n' "$(date +%H:%M:%S)" "${SN_TEST_NAME:-test}" "$*"; }
sn_fail() { sn_log "FAIL: $*"; exit 1; }

# Re-executes the calling script under `timeout` unless it already runs
# under one; $1 = the limit in seconds, the rest = the script's arguments.
sn_self_timeout() {
    local limit=$1; shift
    if [[ -z ${SN_UNDER_TIMEOUT:-} ]]; then
        export SN_UNDER_TIMEOUT=1
        exec timeout -k 10 "$limit" bash "$0" "$@"
    fi
}

sn_cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${SN_PIDS[@]}"; do
        kill -9 "$pid" 2>/dev/null || true
    done
    for pid in "${SN_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if ((rc != 0)) && [[ -n $SN_TMP && -d $SN_TMP ]]; then
        sn_dump_logs
    fi
    [[ -n $SN_TMP ]] && rm -rf "$SN_TMP"
    exit "$rc"
}

sn_setup() {
    SN_TMP=$(mktemp -d "${TMPDIR:-/tmp}/sn-daemon-test.XXXXXX")
    trap sn_cleanup EXIT
    trap 'sn_log "interrupted"; exit 124' INT TERM
}

# Prints the tail of every daemon's log (called on failure).
sn_dump_logs() {
    local name
    for name in "${!SN_LOG_OF[@]}"; do
        [[ -s ${SN_LOG_OF[$name]} ]] || continue
        echo "----- last lines of $name's log (${SN_LOG_OF[$name]}) -----"
        tail -n 30 "${SN_LOG_OF[$name]}"
    done
}

# True when something accepts TCP connections on 127.0.0.1:$1.
sn_port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Prints a port P such that P and P+1 are free on 127.0.0.1 and not handed
# out before in this run. Ports come from below the kernel's ephemeral range
# so that no outgoing connection holds them.
sn_free_port() {
    local lo=20000 hi=32000 p i
    for ((i = 0; i < 500; i++)); do
        p=$((lo + (RANDOM * 32768 + RANDOM) % (hi - lo)))
        [[ $SN_PORTS_TAKEN == *" $p "* || $SN_PORTS_TAKEN == *" $((p + 1)) "* ]] && continue
        [[ $SN_PORTS_TAKEN == *" $((p - 1)) "* ]] && continue
        sn_port_open "$p" && continue
        sn_port_open "$((p + 1))" && continue
        SN_PORTS_TAKEN+="$p $((p + 1)) "
        echo "$p"
        return 0
    done
    sn_fail "no free port pair found"
}

# sn_wait_port PORT PID DEADLINE_S: waits until the port accepts
# connections; fails at once if the process dies first.
sn_wait_port() {
    local port=$1 pid=$2 deadline=$((SECONDS + $3))
    while ! sn_port_open "$port"; do
        kill -0 "$pid" 2>/dev/null || return 1
        ((SECONDS < deadline)) || return 1
        sleep 0.05
    done
}

# sn_start_daemon NAME LISTEN_PORT CLUSTER_PORT [JOIN_LIST [EXTRA ARGS...]]
# Starts $SN_DAEMON in the background and waits (20 s) until its memcached
# port accepts connections. JOIN_LIST is "" or a comma-separated list of
# cluster ports on 127.0.0.1.
sn_start_daemon() {
    local name=$1 port=$2 cport=$3 join=${4:-} p
    shift 4 || shift $#
    local args=(--listen "127.0.0.1:$port" --cluster "127.0.0.1:$cport" --name "$name")
    if [[ -n $join ]]; then
        local list=""
        for p in ${join//,/ }; do list+="${list:+,}127.0.0.1:$p"; done
        args+=(--join "$list")
    fi
    args+=("$@")
    local log=$SN_TMP/$name.log
    sn_log "start $name: ${SN_DAEMON##*/} ${args[*]}"
    "$SN_DAEMON" "${args[@]}" </dev/null >"$log" 2>&1 &
    local pid=$!
    SN_PIDS+=("$pid")
    SN_PID_OF[$name]=$pid
    SN_LOG_OF[$name]=$log
    sn_wait_port "$port" "$pid" 20 ||
        sn_fail "$name (pid $pid) did not accept connections on 127.0.0.1:$port within 20 s"
}

# sn_start_memcached NAME PORT: a reference memcached 1.6 on loopback.
sn_start_memcached() {
    local name=$1 port=$2 user=()
    ((EUID == 0)) && user=(-u memcache)
    local log=$SN_TMP/$name.log
    memcached "${user[@]}" -l 127.0.0.1 -p "$port" -U 0 -t 4 </dev/null >"$log" 2>&1 &
    local pid=$!
    SN_PIDS+=("$pid")
    SN_PID_OF[$name]=$pid
    SN_LOG_OF[$name]=$log
    sn_wait_port "$port" "$pid" 10 ||
        sn_fail "memcached $name (pid $pid) did not accept connections on 127.0.0.1:$port"
}

# sn_kill NAME SIGNAL: signals a daemon and waits (15 s) until it is gone;
# its exit status is left in SN_EXIT_STATUS (128+N for a signal N).
sn_kill() {
    local name=$1 sig=$2 pid=${SN_PID_OF[$1]} deadline=$((SECONDS + 15))
    kill "-$sig" "$pid" 2>/dev/null || true
    # bash reaps its children as they exit, so kill -0 fails once it is
    # gone; stderr is closed over the loop because that is where bash
    # announces a child killed by a signal ("Killed"), which is expected here
    while kill -0 "$pid"; do
        if ((SECONDS >= deadline)); then
            sn_log "$name (pid $pid) still runs 15 s after SIG$sig"
            return 1
        fi
        sleep 0.05
    done 2>/dev/null
    SN_EXIT_STATUS=0
    { wait "$pid" || SN_EXIT_STATUS=$?; } 2>/dev/null
}

# sn_mc PORT COMMAND...: sends text-protocol lines (each given without its
# \r\n) to 127.0.0.1:PORT and prints the reply until the last line is one of
# memcached's terminal replies or 5 s pass. For small replies only.
sn_mc() {
    local port=$1; shift
    local line
    exec {fd}<>"/dev/tcp/127.0.0.1/$port" || return 1
    for line in "$@"; do printf '%s\r\n' "$line" >&"$fd"; done
    while IFS= read -r -t 5 line <&"$fd"; do
        line=${line%$'\r'}
        printf '%s\n' "$line"
        case $line in
        END | STORED | NOT_STORED | EXISTS | NOT_FOUND | DELETED | OK | ERROR | \
            CLIENT_ERROR* | SERVER_ERROR* | VERSION*) break ;;
        esac
    done
    exec {fd}>&-
}

# sn_stop_daemons NAME...: stops each daemon with SIGTERM (a graceful
# leave), then fails the test if one did not exit with status 0 or if a
# daemon's log holds a sanitizer report (LeakSanitizer reports at exit).
sn_stop_daemons() {
    local name bad=""
    for name in "$@"; do
        if ! sn_kill "$name" TERM; then
            bad+=" $name:still-running"
        elif ((SN_EXIT_STATUS != 0)); then
            bad+=" $name:exit-$SN_EXIT_STATUS"
        fi
    done
    for name in "${!SN_LOG_OF[@]}"; do
        if grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:|ThreadSanitizer' \
            "${SN_LOG_OF[$name]}"; then
            bad+=" $name:sanitizer-report"
        fi
    done
    [[ -z $bad ]] || sn_fail "stopping the daemons:$bad"
    sn_log "daemons $* stopped cleanly on SIGTERM"
}

#!/usr/bin/env bash
# memccapable (libmemcached's protocol conformance suite, 27 ASCII + 27
# binary tests) against one sessnode daemon. The full run must end with "All
# tests passed" and print no [FAIL]; when it does not, the ASCII (-a) and
# binary (-b) halves are run apart so the report says which protocol broke.
#
#   test_memccapable.sh PATH/TO/sessnode     the daemon
#   test_memccapable.sh --memcached          the same checks on memcached 1.6
#
# Exit 0 pass, 1 fail, 77 memccapable (or memcached) missing.
set -euo pipefail
SN_TEST_NAME=memccapable
# shellcheck source=tests/daemon/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
sn_self_timeout 240 "$@"

if [[ $# -ne 1 ]]; then
    echo "usage: $0 PATH/TO/sessnode | --memcached" >&2
    exit 2
fi
if ! command -v memccapable >/dev/null; then
    echo "SKIP: memccapable not installed (Debian package libmemcached-tools)"
    exit 77
fi

sn_setup
port=$(sn_free_port)
if [[ $1 == --memcached ]]; then
    command -v memcached >/dev/null || { echo "SKIP: memcached not installed"; exit 77; }
    sn_start_memcached ref "$port"
    what="memcached $(memcached -V | awk '{print $2}')"
else
    SN_DAEMON=$1
    [[ -x $SN_DAEMON ]] || sn_fail "$SN_DAEMON is not an executable"
    cport=$(sn_free_port)
    sn_start_daemon a "$port" "$cport" ""
    what="sessnode"
fi

# memccapable's own io timeout (-t) bounds each test; the outer timeout the
# whole run.
run_memccapable() {
    local out=$SN_TMP/memccapable$1.out rc=0
    timeout -k 5 120 memccapable -h 127.0.0.1 -p "$port" -t 5 ${1:+"$1"} >"$out" 2>&1 || rc=$?
    cat "$out"
    local passes fails
    passes=$(grep -c '\[pass\]' "$out" || true)
    fails=$(grep -c '\[FAIL\]' "$out" || true)
    sn_log "memccapable ${1:-(full)} on $what: exit $rc, $passes passed, $fails failed"
    ((rc == 0 && fails == 0)) && grep -q '^All tests passed' "$out"
}

sn_log "memccapable against $what on 127.0.0.1:$port"
if run_memccapable ""; then
    # A test that crashed the server would still show up here.
    kill -0 "${SN_PID_OF[a]:-${SN_PID_OF[ref]}}" 2>/dev/null ||
        sn_fail "the server died during the run"
    [[ -n ${SN_PID_OF[a]:-} ]] && sn_stop_daemons a
    sn_log "PASS: all ASCII and binary tests passed"
    exit 0
fi

# The full run stops at its first failure; run each protocol apart so both
# are reported. A server that died is restarted for the second half.
sn_log "the full run failed; running the ASCII and binary halves separately"
verdict=""
for half in -a -b; do
    pid=${SN_PID_OF[a]:-${SN_PID_OF[ref]}}
    if ! kill -0 "$pid" 2>/dev/null; then
        sn_log "the server (pid $pid) died; restarting it for $half"
        port=$(sn_free_port)
        if [[ -n ${SN_PID_OF[ref]:-} ]]; then
            sn_start_memcached ref "$port"
        else
            sn_start_daemon a "$port" "$(sn_free_port)" ""
        fi
    fi
    if run_memccapable "$half"; then
        verdict+=" $half:pass"
    else
        verdict+=" $half:FAIL"
    fi
done
sn_fail "memccapable on $what:$verdict"

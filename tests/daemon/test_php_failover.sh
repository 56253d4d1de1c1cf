#!/usr/bin/env bash
# A PHP application's sessions survive the crash of the sessnode daemon that
# held them. PHP's memcached session handler runs at its defaults (binary
# protocol, locking: an `add` of memc.sess.key.lock.SID around each request).
#
#   test_php_failover.sh PATH/TO/sessnode
#       daemons A, B, C; log in and count on A; kill -9 A; the same session
#       id on B still holds the user and the counter and counts on; count
#       once more on C; log out on B; the session is gone on C.
#   test_php_failover.sh --memcached
#       the application script's flow (login, count, logout) on one
#       memcached 1.6, to check the script itself; no failover there.
#
# Exit 0 pass, 1 fail, 77 php, its memcached extension or memcached missing.
set -euo pipefail
SN_TEST_NAME=php-failover
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/daemon/lib.sh
. "$here/lib.sh"
sn_self_timeout 240 "$@"

if [[ $# -ne 1 ]]; then
    echo "usage: $0 PATH/TO/sessnode | --memcached" >&2
    exit 2
fi
if ! command -v php >/dev/null; then
    echo "SKIP: php not installed (Debian package php-cli)"
    exit 77
fi
# Debian enables the extension for the CLI in /etc/php/*/cli/conf.d; php -n
# would drop it, so php runs with its normal ini files. The module list is
# read whole first: `grep -q` would stop at the match, and php, still
# writing, would die of SIGPIPE and fail the pipeline under pipefail.
modules=$(php -m 2>/dev/null || true)
if ! grep -qx memcached <<<"$modules"; then
    echo "SKIP: PHP's memcached extension is not loaded (Debian package php-memcached)"
    exit 77
fi

app=$here/session_app.php
sn_setup

# php_app PORT ACTION [SID]: runs the application against 127.0.0.1:PORT;
# prints its JSON line, returns its exit status. Each run is one request.
php_app() {
    local port=$1; shift
    timeout -k 2 20 php \
        -d session.save_handler=memcached \
        -d "session.save_path=127.0.0.1:$port" \
        "$app" "$@" 2>>"$SN_TMP/php.err"
}

# json_field JSON NAME: the scalar field NAME of a one-line JSON object.
json_field() {
    # shellcheck disable=SC2016 # PHP code, expanded by PHP
    php -r '$a = json_decode($argv[1], true); $v = $a[$argv[2]] ?? null;
            echo is_bool($v) ? ($v ? "true" : "false") : (string) $v;' "$1" "$2"
}

# expect_session PORT ACTION SID USER COUNTER: runs ACTION and checks the
# session it reports.
expect_session() {
    local port=$1 action=$2 sid=$3 want_user=$4 want_counter=$5 out rc=0
    out=$(php_app "$port" "$action" "$sid") || rc=$?
    sn_log "$action on :$port -> $out (exit $rc)"
    ((rc == 0)) || sn_fail "$action on :$port exited $rc: $(tail -n 3 "$SN_TMP/php.err")"
    [[ $(json_field "$out" user) == "$want_user" && $(json_field "$out" counter) == "$want_counter" ]] ||
        sn_fail "$action on :$port: expected user=$want_user counter=$want_counter, got $out"
}

# raw_session PORT SID: the stored session record, as PHP serialized it
# (empty when absent), read with a text-protocol get.
raw_session() {
    sn_mc "$1" "get memc.sess.key.$2" | sed -n '2p'
}

# wait_raw PORT SID PATTERN DEADLINE: polls until the record matches the
# extended regex PATTERN (use '^$' for "absent") and no request lock is
# held; a lock replicated but not yet unlocked would make PHP wait.
wait_raw() {
    local port=$1 sid=$2 pattern=$3 deadline=$((SECONDS + $4)) rec lock
    while :; do
        rec=$(raw_session "$port" "$sid" || true)
        lock=$(sn_mc "$port" "get memc.sess.key.lock.$sid" | head -n 1 || true)
        if [[ $rec =~ $pattern && $lock == END ]]; then
            return 0
        fi
        if ((SECONDS >= deadline)); then
            sn_log "on :$port after $4 s: record '${rec:0:80}', lock reply '$lock'"
            return 1
        fi
        sleep 0.1
    done
}

if [[ $1 == --memcached ]]; then
    command -v memcached >/dev/null || { echo "SKIP: memcached not installed"; exit 77; }
    pa=$(sn_free_port)
    sn_start_memcached ref "$pa"
    out=$(php_app "$pa" login) || sn_fail "login failed: $(cat "$SN_TMP/php.err")"
    sid=$(json_field "$out" sid)
    sn_log "login on memcached -> $out"
    [[ -n $sid && $(json_field "$out" counter) == 1 ]] || sn_fail "login printed $out"
    expect_session "$pa" incr "$sid" alice 2
    expect_session "$pa" incr "$sid" alice 3
    wait_raw "$pa" "$sid" 'counter\|i:3;' 5 || sn_fail "the stored record does not hold counter 3"
    expect_session "$pa" peek "$sid" alice 3
    out=$(php_app "$pa" logout "$sid") || sn_fail "logout failed"
    sn_log "logout -> $out"
    wait_raw "$pa" "$sid" '^$' 5 || sn_fail "the session is still stored after the logout"
    expect_session "$pa" peek "$sid" "" ""
    rc=0
    php_app "$pa" incr "$sid" >/dev/null || rc=$?
    ((rc == 3)) || sn_fail "incr after the logout exited $rc, expected 3 (session empty)"
    sn_log "PASS: the application's session flow works on memcached"
    exit 0
fi

SN_DAEMON=$1
[[ -x $SN_DAEMON ]] || sn_fail "$SN_DAEMON is not an executable"
pa=$(sn_free_port) ca=$(sn_free_port)
pb=$(sn_free_port) cb=$(sn_free_port)
pc=$(sn_free_port) cc=$(sn_free_port)
sn_start_daemon A "$pa" "$ca" ""
sn_start_daemon B "$pb" "$cb" "$ca"
sn_start_daemon C "$pc" "$cc" "$ca,$cb"

# The cluster is connected once a write on A shows on B and C and one on C
# shows on A (the daemons subscribe to each other in the background).
sn_mc "$pa" "set probe:a 0 0 1" "a" >/dev/null
deadline=$((SECONDS + 15))
until [[ $(sn_mc "$pb" "get probe:a" | head -n 1) == VALUE* &&
    $(sn_mc "$pc" "get probe:a" | head -n 1) == VALUE* ]]; do
    ((SECONDS < deadline)) || sn_fail "a set on A did not reach B and C within 15 s"
    sleep 0.1
done
sn_mc "$pc" "set probe:c 0 0 1" "c" >/dev/null
until [[ $(sn_mc "$pa" "get probe:c" | head -n 1) == VALUE* ]]; do
    ((SECONDS < deadline)) || sn_fail "a set on C did not reach A within 15 s"
    sleep 0.1
done
sn_log "the three daemons replicate"

out=$(php_app "$pa" login) || sn_fail "login on A failed: $(cat "$SN_TMP/php.err")"
sid=$(json_field "$out" sid)
sn_log "login on A -> $out"
[[ -n $sid && $(json_field "$out" counter) == 1 ]] || sn_fail "login on A printed $out"
expect_session "$pa" incr "$sid" alice 2

# Replication is asynchronous: wait until B and C hold the request's
# result (and its lock is gone) before A crashes.
for port in "$pb" "$pc"; do
    wait_raw "$port" "$sid" 'user\|s:5:"alice";counter\|i:2;' 15 ||
        sn_fail "the session written on A did not reach :$port within 15 s"
done
sn_log "B and C hold the session; kill -9 A (pid ${SN_PID_OF[A]})"
sn_kill A 9 || sn_fail "A did not die"

expect_session "$pb" peek "$sid" alice 2
expect_session "$pb" incr "$sid" alice 3
wait_raw "$pc" "$sid" 'counter\|i:3;' 15 || sn_fail "B's increment did not reach C within 15 s"
expect_session "$pc" incr "$sid" alice 4
wait_raw "$pb" "$sid" 'counter\|i:4;' 15 || sn_fail "C's increment did not reach B within 15 s"

out=$(php_app "$pb" logout "$sid") || sn_fail "logout on B failed: $(tail -n 3 "$SN_TMP/php.err")"
sn_log "logout on B -> $out"
wait_raw "$pc" "$sid" '^$' 15 || sn_fail "the session destroyed on B is still on C after 15 s"
expect_session "$pc" peek "$sid" "" ""
rc=0
php_app "$pc" incr "$sid" >/dev/null || rc=$?
((rc == 3)) || sn_fail "incr on C after the logout exited $rc, expected 3 (session empty)"
wait_raw "$pb" "$sid" '^$' 5 || sn_fail "the session came back on B after C's read"

for n in B C; do
    kill -0 "${SN_PID_OF[$n]}" 2>/dev/null || sn_fail "$n died during the test"
done
sn_stop_daemons B C
if [[ -s $SN_TMP/php.err ]]; then
    sn_log "PHP's warnings:"
    cat "$SN_TMP/php.err"
fi
sn_log "PASS: the PHP session survived A's crash, counted on B and C, and its logout reached C"

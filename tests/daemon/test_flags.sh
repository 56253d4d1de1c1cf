#!/usr/bin/env bash
# The sessnode daemon's command line and config file: --help and --version;
# exit status 2 and one clear line (naming the flag or file:line, then
# "Try 'sessnode --help'") for every kind of bad input; exit status 1 and
# the address for a port already taken; a config file honoured, with flags
# winning over it wherever --config appears; the log line format; nothing on
# stdout; --max-connections; a clean exit 0 on SIGTERM; and the daemon
# started with no flag at all (skipped when 11211, 7400 or 7401 is busy).
#
#   test_flags.sh PATH/TO/sessnode
#
# Exit 0 pass, 1 fail.
set -euo pipefail
SN_TEST_NAME=flags
# shellcheck source=tests/daemon/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
sn_self_timeout 100 "$@"

if [[ $# -ne 1 ]]; then
    echo "usage: $0 PATH/TO/sessnode" >&2
    exit 2
fi
SN_DAEMON=$1
[[ -x $SN_DAEMON ]] || { echo "$SN_DAEMON is not an executable" >&2; exit 1; }
sn_setup

checks=0
pass() { checks=$((checks + 1)); }

# run_sync EXPECTED_STATUS ARGS...: runs the daemon in the foreground (5 s
# at most: none of these should get as far as serving) and checks its
# status; its stdout and stderr are left in $SN_TMP/out and $SN_TMP/err.
run_sync() {
    local want=$1 rc=0
    shift
    timeout -k 2 5 "$SN_DAEMON" "$@" </dev/null >"$SN_TMP/out" 2>"$SN_TMP/err" || rc=$?
    if ((rc != want)); then
        sn_log "stderr: $(head -c 600 "$SN_TMP/err")"
        sn_fail "sessnode $* exited $rc, expected $want"
    fi
}

# bad USAGE_WORD ARGS...: exit 2, nothing on stdout, and on stderr exactly
# two lines: "sessnode: ..." holding USAGE_WORD, then the pointer to --help.
bad() {
    local word=$1
    shift
    run_sync 2 "$@"
    [[ ! -s $SN_TMP/out ]] || sn_fail "sessnode $*: wrote to stdout"
    local lines
    lines=$(wc -l <"$SN_TMP/err")
    ((lines == 2)) || sn_fail "sessnode $*: $lines lines on stderr: $(cat "$SN_TMP/err")"
    local first
    first=$(head -n 1 "$SN_TMP/err")
    [[ $first == "sessnode: "* && $first == *"$word"* ]] ||
        sn_fail "sessnode $*: the error '$first' does not name '$word'"
    [[ $(tail -n 1 "$SN_TMP/err") == "Try 'sessnode --help'." ]] ||
        sn_fail "sessnode $*: no pointer to --help"
    pass
}

# ---------------------------------------------------------------- help

run_sync 0 --help
[[ ! -s $SN_TMP/err ]] || sn_fail "--help wrote to stderr"
for flag in --config --name --listen --cluster --join --join-timeout --suspect-after \
    --dead-after --cert --allow --insecure-bus --tier --tier-queue --tier-queue-mb --tier-read-through \
    --max-memory \
    --item-size-max --write-concern --write-timeout --threads --max-connections \
    --verbose --help --version; do
    grep -q -- "$flag" "$SN_TMP/out" || sn_fail "--help does not list $flag"
done
grep -q 'default 127.0.0.1:11211' "$SN_TMP/out" ||
    sn_fail "--help does not give the default --listen"
run_sync 0 -h
pass
sn_log "--help lists every flag"

run_sync 0 --version
grep -qE '^sessnode [0-9]+\.[0-9]+\.[0-9]+$' "$SN_TMP/out" ||
    sn_fail "--version printed '$(cat "$SN_TMP/out")'"
pass
sn_log "--version: $(cat "$SN_TMP/out")"

# ---------------------------------------------------------------- bad usage

bad "'--no-such-flag'" --no-such-flag
bad "'-x'" -x
bad "'stray'" stray
bad "--threads" --threads
bad "--threads 'many'" --threads many
bad "--threads '0'" --threads 0
bad "--threads '65'" --threads 65
bad "--threads '-1'" --threads -1
bad "--max-memory '12x'" --max-memory 12x
bad "--max-memory '99999999999999999999999'" --max-memory 99999999999999999999999
bad "--write-concern 'k'" --write-concern k
bad "--write-timeout '0'" --write-timeout 0
bad "--max-connections '0'" --max-connections 0
bad "--join-timeout 'soon'" --join-timeout soon
bad "--suspect-after '50'" --suspect-after 50
bad "--dead-after 'x'" --dead-after x
bad "--dead-after 1000 must be more than --suspect-after 1000" --suspect-after 1000 --dead-after 1000
bad "--dead-after 2000 must be more than --suspect-after 2500" --suspect-after 2500 --dead-after 2000
bad "--item-size-max '1g'" --item-size-max 1g
bad "--item-size-max '10'" --item-size-max 10
bad "--listen '127.0.0.1'" --listen 127.0.0.1
bad "--listen '127.0.0.1:'" --listen 127.0.0.1:
bad "--listen ':11211'" --listen :11211
bad "--listen '127.0.0.1:0'" --listen 127.0.0.1:0
bad "--listen '127.0.0.1:65536'" --listen 127.0.0.1:65536
bad "--listen '127.0.0.1:http'" --listen 127.0.0.1:http
bad "--listen 'no-such-host.invalid:11211'" --listen no-such-host.invalid:11211
bad "--cluster '127.0.0.1:65535'" --cluster 127.0.0.1:65535
bad "--cluster '*:7400'" --cluster '*:7400'
bad "--cluster '0.0.0.0:7400'" --cluster 0.0.0.0:7400
bad "--join '127.0.0.1:7400,,127.0.0.1:7410'" --join 127.0.0.1:7400,,127.0.0.1:7410
bad "--join '127.0.0.1:7400,127.0.0.1'" --join 127.0.0.1:7400,127.0.0.1
bad "--name ''" --name ''
bad "--name 'two words'" --name 'two words'
bad "--name '$(printf 'n%.0s' {1..64})'" --name "$(printf 'n%.0s' {1..64})"
bad "--verbose takes no value" --verbose=2
bad "--listen 127.0.0.1:27401 overlaps" --listen 127.0.0.1:27401 --cluster 127.0.0.1:27400
bad "--config '$SN_TMP/missing.conf'" --config "$SN_TMP/missing.conf"
printf 'not a certificate\n' >"$SN_TMP/file"
bad "--cert '$SN_TMP/missing.cert': cannot read it" --cert "$SN_TMP/missing.cert" --allow "$SN_TMP"
bad "--cert '$SN_TMP': not a file" --cert "$SN_TMP" --allow "$SN_TMP"
bad "--allow '$SN_TMP/file': not a directory" --cert "$SN_TMP/file" --allow "$SN_TMP/file"
bad "--cert needs --allow too" --cert "$SN_TMP/file"
bad "--allow needs --cert too" --allow "$SN_TMP"
bad "--cluster 192.0.2.1:7400 is not a loopback address" --cluster 192.0.2.1:7400
bad "--insecure-bus takes no value" --insecure-bus=1
bad "--tier-read-through needs --tier" --tier-read-through
bad "--tier '127.0.0.1'" --tier 127.0.0.1
bad "--tier-queue-mb '0'" --tier-queue-mb 0
bad "--tier-queue-mb '1048577'" --tier-queue-mb 1048577
sn_log "bad flags and values: exit 2 with a clear line ($checks checks)"

conf=$SN_TMP/bad.conf
printf '# a comment\n\nthreads = 2\nno-such-key = 1\n' >"$conf"
bad "$conf:4: unknown key 'no-such-key'" --config "$conf"
printf 'threads = 2\n   listen = 127.0.0.1\n' >"$conf"
bad "$conf:2: listen '127.0.0.1'" --config "$conf"
printf 'threads\n' >"$conf"
bad "$conf:1: expected 'key = value'" --config "$conf"
printf 'config = /etc/other.conf\n' >"$conf"
bad "$conf:1: unknown key 'config'" --config "$conf"
printf 'verbose = 7\n' >"$conf"
bad "$conf:1: verbose '7'" --config "$conf"
# a flag set on the command line is not read from the file, bad or not
printf 'threads = lots\n' >"$conf"
bad "$conf:1: threads 'lots'" --config "$conf" --name x
printf 'insecure-bus = maybe\n' >"$conf"
bad "$conf:1: insecure-bus 'maybe': expected yes or no" --config "$conf"
printf 'tier-read-through = often\n' >"$conf"
bad "$conf:1: tier-read-through 'often': expected yes or no" --config "$conf"
printf 'tier-queue-mb = lots\n' >"$conf"
bad "$conf:1: tier-queue-mb 'lots': expected a whole number from 1 to 1048576" --config "$conf"
sn_log "bad config files: exit 2 naming file:line"

# a certificate file that is not one: the node cannot start (exit 1) and says why
run_sync 1 --listen "127.0.0.1:$(sn_free_port)" --cluster "127.0.0.1:$(sn_free_port)" \
    --cert "$SN_TMP/file" --allow "$SN_TMP"
grep -q "cannot secure the bus: $SN_TMP/file is not a certificate" "$SN_TMP/err" ||
    sn_fail "--cert with a file that is no certificate: $(cat "$SN_TMP/err")"
grep -q "cannot start the node: --cert" "$SN_TMP/err" ||
    sn_fail "--cert with a file that is no certificate: no line saying the node cannot start"
pass
sn_log "an unusable --cert: exit 1 naming the file"

# ---------------------------------------------------------------- a config file

port=$(sn_free_port)
cport=$(sn_free_port)
conf=$SN_TMP/good.conf
cat >"$conf" <<EOF
# sessnode configuration
name = from-file
listen = 127.0.0.1:$port
cluster = 127.0.0.1:$cport

threads = 2
max-memory = 32
max-connections = 2
EOF
# --threads before --config still wins over the file's threads
sn_start_daemon cfg "$port" "$cport" "" --threads 3 --config "$conf"
log=${SN_LOG_OF[cfg]}
grep -q 'starting: name cfg,' "$log" ||
    sn_fail "--name on the command line did not win over the file"
grep -q '3 threads' "$log" || sn_fail "--threads 3 (before --config) did not win over the file"
grep -q 'max memory 32 MB' "$log" || sn_fail "the file's max-memory was not honoured"
grep -q 'max connections 2,' "$log" || sn_fail "the file's max-connections was not honoured"
pass
sn_log "a config file is honoured; flags win wherever --config is"

# the log format, and no stdout (the helper sends both to one file: check
# that every line is a log line)
line_re='^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z'
line_re+=' (ERROR|WARN|INFO|DEBUG) \[cfg\] '
bad_line=$(grep -vE "$line_re" "$log" | head -n 1 || true)
[[ -z $bad_line ]] || sn_fail "a log line is not 'TIME LEVEL [name] message': $bad_line"
ports="(PUB port $cport, ROUTER port $((cport + 1)))"
grep -qF "cluster address tcp://127.0.0.1:$cport $ports" "$log" ||
    sn_fail "the start line does not give the cluster address and its two ports"
pass

# --max-connections 2: a third connection is closed at once, the first two
# work (the probes of sn_start_daemon must be closed on the daemon side first)
sleep 0.3
exec {c1}<>"/dev/tcp/127.0.0.1/$port"
exec {c2}<>"/dev/tcp/127.0.0.1/$port"
printf 'version\r\n' >&"$c1"
IFS= read -r -t 5 reply <&"$c1" || sn_fail "no reply to 'version' on the first connection"
[[ $reply == VERSION* ]] || sn_fail "'version' answered '$reply'"
printf 'version\r\n' >&"$c2"
IFS= read -r -t 5 reply <&"$c2" || sn_fail "no reply to 'version' on the second connection"
exec {c3}<>"/dev/tcp/127.0.0.1/$port"
if IFS= read -r -t 5 reply <&"$c3"; then
    sn_fail "a third connection past --max-connections 2 was served: '$reply'"
fi
exec {c3}>&- {c2}>&- {c1}>&-
deadline=$((SECONDS + 5))
until grep -q 'too many connections' "$log"; do
    ((SECONDS < deadline)) || sn_fail "the refused connection was not logged"
    sleep 0.1
done
pass
sn_log "--max-connections: the connection past the limit is closed and logged"

# ---------------------------------------------------------------- ports taken

run_sync 1 --listen "127.0.0.1:$port" --cluster "127.0.0.1:$(sn_free_port)" --name dup
grep -q "cannot bind 127.0.0.1:$port" "$SN_TMP/err" ||
    sn_fail "a second daemon on the same client port: $(cat "$SN_TMP/err")"
[[ ! -s $SN_TMP/out ]] || sn_fail "the failed daemon wrote to stdout"
pass
run_sync 1 --listen "127.0.0.1:$(sn_free_port)" --cluster "127.0.0.1:$cport" --name dup
grep -q "cannot start the node on cluster address tcp://127.0.0.1:$cport" "$SN_TMP/err" ||
    sn_fail "a second daemon on the same cluster port: $(cat "$SN_TMP/err")"
pass
sn_log "a port already taken: exit 1, naming the address"

sn_stop_daemons cfg
pass

# ---------------------------------------------------------------- no flag at all

if sn_port_open 11211 || sn_port_open 7400 || sn_port_open 7401; then
    sn_log "SKIP (sub-check): 127.0.0.1:11211, 7400 or 7401 is busy:" \
        "not starting a daemon with no flags"
else
    log=$SN_TMP/noflags.log
    "$SN_DAEMON" </dev/null >"$SN_TMP/noflags.out" 2>"$log" &
    pid=$!
    SN_PIDS+=("$pid")
    SN_PID_OF[noflags]=$pid
    SN_LOG_OF[noflags]=$log
    sn_wait_port 11211 "$pid" 20 || sn_fail "with no flags the daemon did not serve 127.0.0.1:11211"
    grep -q 'cluster address tcp://127.0.0.1:7400 (PUB port 7400, ROUTER port 7401)' "$log" ||
        sn_fail "with no flags the cluster address is not 127.0.0.1:7400"
    grep -q 'name [^ ]*-7400,' "$log" || sn_fail "the default name is not HOST-7400"
    sn_stop_daemons noflags
    [[ ! -s $SN_TMP/noflags.out ]] || sn_fail "the daemon wrote to stdout"
    pass
    sn_log "no flags: 127.0.0.1:11211, cluster 127.0.0.1:7400, exit 0 on SIGTERM"
fi

sn_log "PASS: $checks checks"

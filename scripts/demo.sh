#!/usr/bin/env bash
# Build sessnode in build/ and run the main demo: a local cluster of three
# sessnode daemons on 127.0.0.1, each speaking the memcached protocol. It
# writes a session through node 1, kills node 1 with SIGKILL, reads the
# session from nodes 2 and 3, restarts node 1 (it copies the sessions back
# from its peers). Then it runs scripts/webdemo.sh: three demo web
# applications embedding the library behind HAProxy, and prints where to
# point a browser; everything runs until Ctrl-C.
#
#   bash scripts/demo.sh            the story, then both clusters stay up
#   bash scripts/demo.sh --no-wait  the story, one request through HAProxy, then everything stops
#
# Ports: memcached clients on 11311-11313; cluster addresses 7400, 7410,
# 7420 (each daemon also binds the next port). Logs in $SN_DEMO_DIR
# (default: a fresh directory under /tmp).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

demo_name=demo
# shellcheck source=scripts/demo_common.sh
. scripts/demo_common.sh
demo_setup sessnode-daemon sessctl -- "$@"

daemon=build/daemon/sessnode
sessctl=build/daemon/sessctl
dir=${SN_DEMO_DIR:-$(mktemp -d /tmp/sessnode-demo.XXXXXX)}
mkdir -p "$dir"
listen=(11311 11312 11313)
cluster=(7400 7410 7420)
pids=(0 0 0)

demo_ports_free "${listen[@]}" "${cluster[@]}" 7401 7411 7421

stop_all() {
    for pid in "${pids[@]}"; do
        [[ $pid != 0 ]] && kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        [[ $pid != 0 ]] && wait "$pid" 2>/dev/null || true
    done
}
trap stop_all EXIT
trap 'exit 130' INT TERM

peers_of() {   # every other node's cluster address
    local out=() j
    for j in 0 1 2; do
        [[ $j != "$1" ]] && out+=("127.0.0.1:${cluster[$j]}")
    done
    local IFS=,
    echo "${out[*]}"
}

start() {      # start node $1 (0-based)
    local i=$1
    "$daemon" --name "node$((i + 1))" --listen "127.0.0.1:${listen[$i]}" \
        --cluster "127.0.0.1:${cluster[$i]}" --join "$(peers_of "$i")" \
        >>"$dir/node$((i + 1)).log" 2>&1 &
    pids[i]=$!
    demo_wait_port "${listen[$i]}" "${pids[$i]}" "$dir/node$((i + 1)).log"
}

mc() {         # mc PORT 'request'  -> the reply, up to END/STORED/...
    local port=$1 request=$2 line reply=""
    exec 3<>"/dev/tcp/127.0.0.1/$port"
    printf '%b' "$request" >&3
    while IFS= read -r -t 2 line <&3; do
        line=${line%$'\r'}
        reply+="$line"$'\n'
        case $line in END|STORED|NOT_STORED|DELETED|NOT_FOUND|ERROR*|*_ERROR*) break ;; esac
    done
    exec 3>&-
    printf '%s' "$reply"
}

echo
echo "== starting three sessnode daemons (logs in $dir)"
for i in 0 1 2; do
    start "$i"
    echo "   node$((i + 1)): memcached clients on 127.0.0.1:${listen[$i]}," \
         "cluster address 127.0.0.1:${cluster[$i]}, pid ${pids[$i]}"
done
sleep 1
echo
echo "== sessctl --node 127.0.0.1:7400 members"
"$sessctl" --node 127.0.0.1:7400 members

session="sess:demo-$$"
value="user=alice;cart=3"
echo
echo "== set $session on node1 (memcached text protocol, port ${listen[0]})"
mc "${listen[0]}" "set $session 0 1800 ${#value}\r\n$value\r\n"
sleep 0.5
echo
echo "== kill -9 node1 (pid ${pids[0]}), the node that wrote it"
kill -KILL "${pids[0]}"
wait "${pids[0]}" 2>/dev/null || true
pids[0]=0
for i in 1 2; do
    echo
    echo "== get $session from node$((i + 1)) (port ${listen[$i]})"
    reply=$(mc "${listen[$i]}" "get $session\r\n")
    printf '%s\n' "$reply"
    if [[ $reply != *"$value"* ]]; then
        echo "demo: node$((i + 1)) did not serve the session" >&2
        exit 1
    fi
done
echo
echo "== the session survived the loss of node1. Waiting for node2 to declare node1 dead..."
deadline=$((SECONDS + 15))
until "$sessctl" --node 127.0.0.1:7410 members | grep -q 'node1 .* dead'; do
    ((SECONDS < deadline)) || break
    sleep 0.5
done
"$sessctl" --node 127.0.0.1:7410 members

echo
echo "== restarting node1: it copies every session back from a peer"
start 0
echo "== get $session from node1 again"
reply=$(mc "${listen[0]}" "get $session\r\n")
printf '%s\n' "$reply"
sleep 1
echo
echo "== sessctl --node 127.0.0.1:7410 members"
"$sessctl" --node 127.0.0.1:7410 members

echo
echo "The daemons keep running. Try, from another terminal:"
echo "   printf 'get $session\\r\\n' | nc -q1 127.0.0.1 ${listen[1]}"
echo "   $sessctl --node 127.0.0.1:7420 members"
echo "   $sessctl --node 127.0.0.1:7420 session $session"
echo
echo "== the same story in a browser: three web applications embedding the"
echo "   library, behind HAProxy (scripts/webdemo.sh)"
if ((wait_at_end)); then
    bash scripts/webdemo.sh
else
    bash scripts/webdemo.sh --no-wait
fi

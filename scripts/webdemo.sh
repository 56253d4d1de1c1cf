#!/usr/bin/env bash
# Build the demo web application (demo/sn-webapp) in build/ and run three of
# them on 127.0.0.1 behind HAProxy: open the printed address in a browser,
# log in, count, then kill the node the page names (its PID is printed) and
# count again: another node serves the same session.
#
#   bash scripts/webdemo.sh            runs until Ctrl-C
#   bash scripts/webdemo.sh --no-wait  logs in and counts once with curl, then stops
#
# Ports: HAProxy on 8080; the applications on 8081-8083; their cluster
# addresses 7501, 7503, 7505 (each also binds the next port). Logs in
# $SN_DEMO_DIR (default: a fresh directory under /tmp).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

demo_name=webdemo
# shellcheck source=scripts/demo_common.sh
. scripts/demo_common.sh
demo_setup sn-webapp -- "$@"

app=build/demo/sn-webapp
haproxy=$(command -v haproxy || echo /usr/sbin/haproxy)
dir=${SN_DEMO_DIR:-$(mktemp -d /tmp/sessnode-webdemo.XXXXXX)}
mkdir -p "$dir"
http=(8081 8082 8083)
cluster=(7501 7503 7505)
lb=8080
pids=()

demo_ports_free "$lb" "${http[@]}" "${cluster[@]}" 7502 7504 7506

stop_all() {
    local pid
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop_all EXIT
trap 'exit 130' INT TERM

servers=""
for i in 0 1 2; do
    name=app$((i + 1))
    args=(--http "127.0.0.1:${http[$i]}" --cluster "127.0.0.1:${cluster[$i]}" --name "$name")
    ((i > 0)) && args+=(--join "127.0.0.1:${cluster[0]}")
    "$app" "${args[@]}" >>"$dir/$name.log" 2>&1 &
    pids+=($!)
    demo_wait_port "${http[$i]}" $! "$dir/$name.log"
    echo "$name: http://127.0.0.1:${http[$i]}/ (pid $!)"
    servers+="    server $name 127.0.0.1:${http[$i]} check inter 200 fall 2 rise 1 cookie $name"$'\n'
done
cfg=$dir/haproxy.cfg
text=$(<demo/haproxy.cfg.in)
text=${text//@LB@/127.0.0.1:$lb}
printf '%s\n' "${text//@SERVERS@/${servers%$'\n'}}" >"$cfg"
"$haproxy" -f "$cfg" -db >>"$dir/haproxy.log" 2>&1 &
pids+=($!)
demo_wait_port "$lb" $! "$dir/haproxy.log"

echo
echo "Point a browser at http://127.0.0.1:$lb/ (HAProxy in front of app1-app3)."
echo "Log in, count, then kill -9 the PID of the app the page names, and count again."
echo "The cluster as one node sees it: http://127.0.0.1:$lb/status"
echo "Logs: $dir"
if ((wait_at_end)); then
    echo "Ctrl-C stops everything."
    while :; do sleep 3600; done
fi
jar=$dir/cookies
curl -fsS -c "$jar" -b "$jar" -X POST "http://127.0.0.1:$lb/api/login?user=demo"; echo
curl -fsS -c "$jar" -b "$jar" -X POST "http://127.0.0.1:$lb/api/incr"; echo

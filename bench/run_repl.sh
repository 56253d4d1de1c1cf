#!/usr/bin/env bash
# Build the replication benchmark in Release mode and run it with its default
# arguments: three sessnode node processes on loopback against raw ZeroMQ
# PUB/SUB and Redis 7 replication (about 90-105 s on our 2-core VMs). It
# starts and stops redis-server itself (loopback, a temporary directory, no
# persistence), so Debian's redis-server must be installed
# (bash scripts/deps.sh). Extra arguments go to the benchmark, e.g.
#   bash bench/run_repl.sh --lat-writes 2000 --tput-writes 20000 --join-sessions 10000
#   bash bench/run_repl.sh --help
#
# The build goes through CMake (target bench_repl in build/). The figures are
# only worth reading on an otherwise idle machine: the script warns when the
# load average says otherwise.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

build=build
bin=$build/bench/bench_repl

if ! command -v redis-server >/dev/null 2>&1; then
    echo "run_repl.sh: redis-server not found; install it with: bash scripts/deps.sh" >&2
    exit 1
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Configured every time: a build tree configured before bench_repl.c existed
# has no such target yet (the bench folder adds each one only if its source
# is present). An existing tree keeps its build type.
type_arg=()
[ -f "$build/CMakeCache.txt" ] || type_arg=(-DCMAKE_BUILD_TYPE=Release)
cmake -S . -B "$build" "${type_arg[@]}" >"$log" 2>&1 ||
    { tail -n 20 "$log" >&2; echo "run_repl.sh: cmake configure failed" >&2; exit 1; }
if ! cmake --build "$build" --target bench_repl -j2 >>"$log" 2>&1 || [ ! -x "$bin" ]; then
    tail -n 20 "$log" >&2
    echo "run_repl.sh: building bench_repl failed (above)" >&2
    exit 1
fi
type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$build/CMakeCache.txt")
if [ "$type" != Release ]; then
    echo "run_repl.sh: note: $build/ is configured as '$type', not Release" >&2
fi
load=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$load" 'BEGIN { exit !(l > 0.5) }'; then
    echo "run_repl.sh: note: load average $load; other work skews these figures" >&2
fi

rm -f "$log"
trap - EXIT
echo "+ $bin $*"
exec "$bin" "$@"

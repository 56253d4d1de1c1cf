#!/usr/bin/env bash
# The memcached tier's CPU cost per write (bench_tier.c): builds bench_tier
# in a Release tree (build-release/, or --build DIR), starts a memcached of
# its own on 127.0.0.1 on CPU 1 and runs the benchmark on CPU 0, so that the
# tier's thread shares the writer's CPU as in a busy daemon while memcached
# is elsewhere. Other arguments go to the benchmark:
#   bash bench/run_tier.sh                          100,000 writes a phase, 7 rounds
#   bash bench/run_tier.sh --sessions 20000 --rounds 3   (smoke run)
#   bash bench/run_tier.sh --sink                   the server is bench/tier_sink.c,
#                                                   which parses and counts the
#                                                   copies and keeps none (about
#                                                   2% of CPU 1, against
#                                                   memcached's share of it)
#   bash bench/run_tier.sh --build DIR ...          another tree (--build first)
# The server is killed by its PID on exit.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$root/build-release
if [[ ${1:-} == --build ]]; then
    build=$2
    shift 2
fi
sink=0
if [[ ${1:-} == --sink ]]; then
    sink=1
    shift
fi
((sink)) || command -v memcached >/dev/null || {
    echo "run_tier.sh: memcached is missing (bash scripts/deps.sh installs it)" >&2
    exit 1
}
(($(nproc) >= 2)) || { echo "run_tier.sh: needs 2 CPUs" >&2; exit 1; }

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
cmake --build "$build" -j2 --target bench_tier tier_sink >/dev/null
type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$build/CMakeCache.txt")
[[ $type == Release ]] || echo "run_tier.sh: note: $build is a '$type' build" >&2

user=()
((EUID == 0)) && user=(-u memcache)
mc=""
cleanup() {
    [[ -n $mc ]] && kill "$mc" 2>/dev/null && wait "$mc" 2>/dev/null
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM
for ((try = 0; try < 20; try++)); do
    port=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue
    if ((sink)); then
        taskset -c 1 "$build/bench/tier_sink" "$port" </dev/null &
    else
        taskset -c 1 memcached "${user[@]}" -l 127.0.0.1 -p "$port" -U 0 -t 2 -m 4096 </dev/null &
    fi
    mc=$!
    for ((i = 0; i < 100; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break 2
        kill -0 "$mc" 2>/dev/null || break
        sleep 0.05
    done
    cleanup
    mc=""
done
[[ -n $mc ]] || { echo "run_tier.sh: the server did not start" >&2; exit 1; }
if ((sink)); then
    echo "+ $build/bench/tier_sink $port (CPU 1)"
else
    echo "+ memcached -l 127.0.0.1 -p $port -U 0 -t 2 -m 4096 (CPU 1; $(memcached -V))"
fi
echo "+ taskset -c 0 $build/bench/bench_tier --server 127.0.0.1:$port $*"
taskset -c 0 "$build/bench/bench_tier" --server "127.0.0.1:$port" "$@"

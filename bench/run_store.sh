#!/usr/bin/env bash
# Build the store micro-benchmark in Release mode and run it with its default
# arguments (1M sessions, 1 KiB values, 5 rounds; about 2 minutes and 5 GiB of
# memory on our 2-core VMs). Extra arguments go to the benchmark, e.g.
#   bash bench/run_store.sh --sessions 10000        (smoke run, under a second)
#   bash bench/run_store.sh --json build/bench_store.json
#
# The build goes through CMake (target bench_store in build/). If the project
# does not configure or build as a whole, the benchmark is compiled on its own
# from bench/bench_store.c, store/sn_store.c and store/sn_slab.c, which is all
# it needs, and the script says so.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

build=build
bin=$build/bench/bench_store
warn=(-Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Werror)

log=$(mktemp)
trap 'rm -f "$log"' EXIT

cmake_build() {
    if [ ! -f "$build/CMakeCache.txt" ]; then
        cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >"$log" 2>&1 || return 1
    fi
    cmake --build "$build" --target bench_store -j2 >>"$log" 2>&1 || return 1
    [ -x "$bin" ]
}

if ! cmake_build; then
    tail -n 20 "$log" >&2
    echo "run_store.sh: the CMake build of bench_store failed (above); compiling it directly" >&2
    mkdir -p "$build/bench-direct"
    bin=$build/bench-direct/bench_store
    # sn_store.c defines _GNU_SOURCE itself, so no -D for it here.
    # shellcheck disable=SC2046
    gcc -std=c11 -O2 -g "${warn[@]}" -Inode/include -Istore \
        bench/bench_store.c store/sn_store.c store/sn_slab.c \
        $(pkg-config --cflags --libs libczmq) -lpthread -o "$bin"
fi

if [ -f "$build/CMakeCache.txt" ]; then
    type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$build/CMakeCache.txt")
    if [ "$bin" = "$build/bench/bench_store" ] && [ "$type" != Release ]; then
        echo "run_store.sh: note: $build/ is configured as '$type', not Release" >&2
    fi
fi

rm -f "$log"
trap - EXIT
echo "+ $bin $*"
exec "$bin" "$@"

#!/usr/bin/env bash
# Build and run the whole test suite twice: a normal RelWithDebInfo build in
# build/, then an ASan+UBSan Debug build in build-asan/. Warnings are errors in
# both. Stops at the first failure; otherwise the last lines printed are the
# sanitizer run's ctest summary.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

bash scripts/deps.sh

echo "== normal build (build/)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSN_WERROR=ON
cmake --build build -j2
(cd build && ctest --output-on-failure)

echo "== ASan+UBSan build (build-asan/)"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DSN_WERROR=ON \
    -DSN_SANITIZE=address,undefined
cmake --build build-asan -j2
export ASAN_OPTIONS=detect_leaks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
echo "== ctest (build-asan/)"
cd build-asan && ctest --output-on-failure

#!/usr/bin/env bash
# Build sessnode in build/ and run the demo: several stores in one process
# exchanging encoded deltas.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

bash scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j2
exec build/node/sessnode-demo "$@"

#!/usr/bin/env bash
# Build sessnode in build/ and run the demo: a local cluster of four nodes on
# loopback TCP, in one process (node/sn_demo.c), showing writes replicating,
# a node lost without warning and a node joining.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

bash scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j2
exec build/node/sessnode-demo "$@"

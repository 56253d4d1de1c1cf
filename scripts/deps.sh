#!/usr/bin/env bash
# Install the Debian packages that sessnode's build, tests and benchmarks
# need. Only missing packages are installed, and the package index is
# refreshed only when something is missing, so a second run is a no-op.
set -euo pipefail

packages=(
    build-essential cmake pkg-config
    libzmq3-dev libczmq-dev libmsgpack-dev libcmocka-dev libsodium-dev
    libmemcached-dev libmemcached-tools memcached redis-server
    clang-14 libclang-rt-14-dev valgrind
    libevent-dev
    php-cli php-memcached python3-pymemcache
    iproute2 iptables
    libmicrohttpd-dev haproxy curl chromium docker-compose
)
# npm installs dockerfilelint (docker/validate.sh): Debian's, unless a
# Node.js with its own npm is installed already (the two conflict)
command -v npm >/dev/null || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [[ $status == "install ok installed" ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
    echo "deps: all ${#packages[@]} packages present"
    exit 0
fi

sudo=()
if ((EUID != 0)); then
    sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
echo "deps: installing ${missing[*]}"
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${missing[@]}"

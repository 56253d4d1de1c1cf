#!/usr/bin/env bash
# Install a built tree into a scratch prefix and build three programs against
# it the way embedders will: find_package with the shared library, find_package
# with the static one, and a plain compiler line from `pkg-config sessnode`.
# Each prints sn_version() and sn_strerror(SN_ENOTFOUND) and checks them.
#
# usage: run.sh CMAKE BUILD_DIR CONSUMER_SRC CC VERSION [SANITIZERS]
# Under a sanitizer build the library objects call into the sanitizer runtime,
# so the consumers are built with the same -fsanitize flags.
set -euo pipefail

cmake=$1 build=$2 consumer=$3 cc=$4 version=$5 sanitize=${6:-}
pkg_config=${PKG_CONFIG_EXECUTABLE:-pkg-config}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sessnode-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

flags=""
if [[ -n $sanitize ]]; then
    flags="-fsanitize=$sanitize -fno-omit-frame-pointer -fno-sanitize-recover=all"
    echo "consumers built with $flags"
fi

echo "== install $build into $prefix"
"$cmake" --install "$build" --prefix "$prefix" >"$tmp/install.log" \
    || { cat "$tmp/install.log"; exit 1; }

pc=$(find "$prefix" -name sessnode.pc -print -quit)
[[ -n $pc ]] || { echo "sessnode.pc was not installed"; exit 1; }
libdir=$(dirname "$(dirname "$pc")")

echo "== find_package consumers"
"$cmake" -S "$consumer" -B "$tmp/build" \
    -DCMAKE_BUILD_TYPE=Debug \
    -DCMAKE_PREFIX_PATH="$prefix" \
    -DCMAKE_C_COMPILER="$cc" \
    -DCMAKE_C_FLAGS="$flags" \
    -DCMAKE_EXE_LINKER_FLAGS="$flags" >"$tmp/configure.log" \
    || { cat "$tmp/configure.log"; exit 1; }
"$cmake" --build "$tmp/build" -j2

echo "== pkg-config consumer"
export PKG_CONFIG_PATH="$libdir/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
[[ $("$pkg_config" --modversion sessnode) == "$version" ]] \
    || { echo "pkg-config reports $("$pkg_config" --modversion sessnode), expected $version"; exit 1; }
# shellcheck disable=SC2046,SC2086
"$cc" -std=c11 -Wall -Wextra -Werror $flags $("$pkg_config" --cflags sessnode) \
    "$consumer/consumer.c" -o "$tmp/consumer_pkgconfig" \
    $("$pkg_config" --libs sessnode)

# The pkg-config build has no RPATH, by design of a plain -L/-l line.
export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

fail=0
for exe in consumer_shared consumer_static consumer_pkgconfig; do
    path=$(find "$tmp" -type f -name "$exe" -perm -u+x -print -quit)
    [[ -n $path ]] || { echo "FAIL $exe: not built"; fail=1; continue; }
    if ! out=$("$path" 2>&1); then
        echo "FAIL $exe: exit status non-zero"; echo "$out"; fail=1; continue
    fi
    if [[ $out != *"$version"* ]]; then
        echo "FAIL $exe: version is not $version"; echo "$out"; fail=1; continue
    fi
    links_so=no
    # ldd's whole output first: with pipefail, grep -q closing the pipe
    # early would make ldd die of SIGPIPE and the test fail at random.
    deps=$(ldd "$path")
    if [[ $deps == *"$libdir/libsessnode.so"* ]]; then links_so=yes; fi
    case $exe:$links_so in
        consumer_static:yes) echo "FAIL $exe: loads libsessnode.so"; fail=1; continue ;;
        consumer_static:no) ;;
        *:no) echo "FAIL $exe: does not load the installed libsessnode.so"; fail=1; continue ;;
    esac
    echo "ok   $exe: $out"
done
exit $fail

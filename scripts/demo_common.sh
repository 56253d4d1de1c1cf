# shellcheck shell=bash
# What scripts/demo.sh and scripts/webdemo.sh share: their arguments, the
# dependencies and the build, the check that their ports are free, and the
# wait for a server to listen.
# Sourced, with $0 the demo script and $demo_name its short name.

# demo_setup TARGET... "$@": parses --no-wait (sets wait_at_end) and --help
# (prints the script's header), installs the dependencies and builds the
# targets in build/. The targets come first, then "--", then the arguments.
demo_setup() {
    local targets=()
    while (($#)) && [[ $1 != -- ]]; do targets+=("$1"); shift; done
    shift
    wait_at_end=1
    local arg
    for arg in "$@"; do
        case $arg in
            --no-wait) wait_at_end=0 ;;
            -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
            *) echo "$demo_name: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
        esac
    done
    bash scripts/deps.sh
    cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build build -j2 --target "${targets[@]}"
}

# demo_ports_free PORT...: exits with a message if one is taken.
demo_ports_free() {
    local port
    for port in "$@"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$demo_name: port $port on 127.0.0.1 is already in use; stop what holds it first" >&2
            exit 1
        fi
    done
}

# demo_wait_port PORT PID LOG: waits (30 s at most) until PORT on 127.0.0.1
# accepts; exits showing LOG if the process PID dies first.
demo_wait_port() {
    local deadline=$((SECONDS + 30)) name
    name=$(basename "$3" .log)
    until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
        if ! kill -0 "$2" 2>/dev/null; then
            echo "$demo_name: $name exited; its log:" >&2
            cat "$3" >&2
            exit 1
        fi
        ((SECONDS < deadline)) || { echo "$demo_name: $name did not start" >&2; exit 1; }
        sleep 0.1
    done
}

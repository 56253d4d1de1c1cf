#!/usr/bin/env bash
# A network partition that heals: three sessnode daemons, each in a network
# namespace of its own, joined by a bridge in a fourth; the driver
# (partition_driver.py) runs in a fifth and starts every daemon inside its
# namespace. The driver cuts node 1 off from nodes 2 and 3 with iptables
# DROP rules in node 1's namespace, writes on both sides, heals, and checks
# that every node converges; then it drops 30% of the packets between every
# two nodes, and then cuts one direction only (README.md in this folder says
# what exactly).
#
#   test_partition.sh PATH/TO/sessnode PATH/TO/sessctl
#
# Nothing can leave the machine: before any namespace exists, the test's
# address range gets a blackhole route in the root namespace (removed at
# the end), and every process the test starts runs inside its namespaces.
# Exit 0 pass, 1 fail, 77 when namespaces cannot be made here (not root,
# no ip or iptables, or the kernel refuses).
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 PATH/TO/sessnode PATH/TO/sessctl" >&2
    exit 2
fi
daemon=$(realpath "$1")
sessctl=$(realpath "$2")
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

skip() {
    echo "SKIP: $*"
    exit 77
}
((EUID == 0)) || skip "network namespaces need root"
for tool in ip iptables; do
    command -v "$tool" >/dev/null || skip "$tool is missing (Debian: iproute2, iptables)"
done
[[ -x /usr/bin/python3 ]] || skip "/usr/bin/python3 is missing"

# Names and addresses unique to this run, so parallel runs do not meet.
tag=snp$(($$ % 100000))
net=10.213.$(($$ % 200 + 20))
nodes=(d 1 2 3)
declare -A host=([d]=10 [1]=1 [2]=2 [3]=3)
guarded=0

cleanup() {
    local n
    [[ -n ${scratch:-} ]] && rm -rf "$scratch"
    for n in "${nodes[@]}" sw; do
        ip netns del "$tag$n" 2>/dev/null || true
    done
    ((guarded)) && ip route del blackhole "$net.0/24" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The guard first: from here on, a packet for the test's range that
# somehow reached the root namespace is dropped, not routed out.
ip route add blackhole "$net.0/24" 2>/dev/null || skip "cannot add a blackhole route for $net.0/24"
guarded=1
ip netns add "${tag}sw" 2>/dev/null || skip "cannot create a network namespace"
# What the kernel refuses here is this machine's limit, not a failure of
# the daemon: skip, naming the step.
setup() {
    "$@" 2>"$tag.err" || skip "cannot set up the namespaces: '$*': $(cat "$tag.err")"
}
scratch=$(mktemp -d)
cd "$scratch"
setup ip -n "${tag}sw" link add br0 type bridge
setup ip -n "${tag}sw" link set br0 up
for n in "${nodes[@]}"; do
    setup ip netns add "$tag$n"
    # both ends are made inside the namespaces: nothing in the root one
    setup ip -n "${tag}sw" link add "v$n" type veth peer name eth0 netns "$tag$n"
    setup ip -n "${tag}sw" link set "v$n" master br0 up
    setup ip -n "$tag$n" addr add "$net.${host[$n]}/24" dev eth0
    setup ip -n "$tag$n" link set eth0 up
    setup ip -n "$tag$n" link set lo up
done
setup ip netns exec "${tag}1" iptables -L -n

echo "namespaces ${tag}{sw,d,1,2,3}, addresses $net.{1,2,3} (daemons) and $net.10 (driver)"
# timeout bounds the driver; its own alarm ends it first, with cleanup
ip netns exec "${tag}d" timeout -k 5 200 /usr/bin/python3 "$here/partition_driver.py" \
    --sessnode "$daemon" --sessctl "$sessctl" --ns-prefix "$tag" --net "$net" \
    --time-limit 180

#!/usr/bin/env bash
# The sessnode daemon against memcached 1.6 under memcaslap (libmemcached's
# load generator), in one run so that the ratios, not the absolute rates,
# are the figures to read (our build machines are noisy 2-core VMs):
#
#   memcached -t 4                  the reference
#   sessnode, alone                 target: >= 0.9x memcached
#   sessnode with two peers         3 daemons, the load on one; every write is
#                                   replicated to the other two: >= 0.7x
#
# The load: 90% get / 10% set, 64-byte keys, 1 KiB values, 2 client threads,
# 64 connections (memcaslap -T 2 -c 64). The systems take turns for several
# rounds; each round's ops/s is printed, then the medians and the ratios.
#
# With --tier, the write path with and without the memcached tier instead:
#   sessnode, alone                 the reference for this mode
#   sessnode, alone, --tier         backing every session up to a second
#                                   memcached: target >= 0.9x sessnode alone
# under a load of sets only (--sets FRACTION to change it), memcached shown
# for scale. The tier's memcached is first filled to its memory limit and
# flushed, so that it runs as a long-lived server does (its memory taken
# once), not paying for the first touch of every page during the rounds.
#
# In this mode the node alone and the tiered node swap turns every other
# round (A B, B A, ...), over an even number of rounds, so that the order
# within a round and a drift of the host over the run weigh on both alike;
# the ratio is also given by pairs of rounds, one in each order.
#
# --pin (with --tier) puts each sessnode on CPU 0 and memcaslap and both
# memcached servers on CPU 1: the node's own CPU bounds its throughput, as
# when the tier's servers are other machines. Without it every process
# shares both CPUs and the tier's memcached competes with the node.
#
#   bash bench/run_memcaslap.sh                      build, then 3 rounds x 10 s
#   bash bench/run_memcaslap.sh --daemon PATH        use a built sessnode
#   bash bench/run_memcaslap.sh --rounds 5 --time 20
#   bash bench/run_memcaslap.sh --threads            also each sessnode thread's
#                                                    CPU time per operation
#   bash bench/run_memcaslap.sh --perf DIR           also perf-record each
#                                                    sessnode setup under load
#   bash bench/run_memcaslap.sh --tier --rounds 5
#   bash bench/run_memcaslap.sh --tier --pin --rounds 5
#   bash bench/run_memcaslap.sh --tier --pin --rest 10   CPU 0 idle for 10 s
#                                                    before each daemon's turn,
#                                                    as it is before the first
#                                                    one's (memcached's turn)
#   bash bench/run_memcaslap.sh --tier --pin --loader build-release/bench/mc_load
#                                                    drive the rounds with
#                                                    bench/mc_load.c, which
#                                                    needs a fraction of
#                                                    memcaslap's CPU (sets only)
#   bash bench/run_memcaslap.sh --tier --pin --threads \
#       --loader "build-release/bench/mc_load -P 30k"  at a fixed rate: compare
#                                                    the daemons' CPU a set
#   bash bench/run_memcaslap.sh --tier --pin --fill  first load every server
#                                                    until it evicts, so that
#                                                    the rounds run on full
#                                                    stores from the start
#   bash bench/run_memcaslap.sh --tier --pin --sink  the tier's server is
#                                                    bench/tier_sink.c, which
#                                                    parses and counts the
#                                                    copies and keeps none: a
#                                                    tier server on another
#                                                    machine, whose CPU is
#                                                    not the load generator's
#
# Without --daemon it configures a Release tree (--build DIR, default
# build-release/) with tests and benchmarks off and builds the daemon only.
# Every server listens on 127.0.0.1 on ports free at run time; every process
# started is killed by PID on exit.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
daemon=""
build=$root/build-release
rounds=3
secs=10
mem=1024
perf_dir=""
tier=0
sets=""
pin=0
threads=0
rest=0
fill=0
sink=0
load=(memcaslap)

me=run_memcaslap.sh
# shellcheck source=bench/script_common.sh
. "$root/bench/script_common.sh"
while (($#)); do
    case $1 in
    --daemon) daemon=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --time) secs=$2; shift 2 ;;
    --mem) mem=$2; shift 2 ;;
    --perf) perf_dir=$2; shift 2 ;;
    --tier) tier=1; shift ;;
    --pin) pin=1; shift ;;
    --threads) threads=1; shift ;;
    --sets) sets=$2; shift 2 ;;
    --rest) rest=$2; shift 2 ;;
    --fill) fill=1; shift ;;
    --sink) sink=1; shift ;;
    --loader) read -ra load <<<"$2"; shift 2 ;;
    -h | --help) usage ;;
    *) echo "run_memcaslap.sh: unknown argument '$1'" >&2; usage ;;
    esac
done

for tool in memcaslap memcached; do
    if ! command -v "$tool" >/dev/null; then
        echo "run_memcaslap.sh: $tool is missing (Debian: libmemcached-tools, memcached;" \
            "bash scripts/deps.sh installs both)" >&2
        exit 1
    fi
done

on_node=() on_other=()
((sink && !tier)) && { echo "run_memcaslap.sh: --sink goes with --tier" >&2; exit 2; }
if ((pin)); then
    ((tier)) || { echo "run_memcaslap.sh: --pin goes with --tier" >&2; exit 2; }
    (($(nproc) >= 2)) || { echo "run_memcaslap.sh: --pin needs 2 CPUs" >&2; exit 1; }
    on_node=(taskset -c 0) on_other=(taskset -c 1)
fi

if [[ -z $daemon ]]; then
    echo "+ cmake -S $root -B $build -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF -DSN_BUILD_BENCH=OFF"
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
        -DSN_BUILD_BENCH=OFF >/dev/null
    echo "+ cmake --build $build -j2 --target sessnode-daemon"
    cmake --build "$build" -j2 --target sessnode-daemon >/dev/null
    daemon=$build/daemon/sessnode
    type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$build/CMakeCache.txt")
    [[ $type == Release ]] || echo "run_memcaslap.sh: note: $build is a '$type' build" >&2
fi
[[ -x $daemon ]] || { echo "run_memcaslap.sh: $daemon is not an executable" >&2; exit 1; }

with_tmp sn-memcaslap
declare -A port_of cport_of pid_of

# start_sessnode NAME [JOIN CLUSTER PORTS...]: prints nothing, records the port.
# $extra_args, if set, go to the daemon too.
extra_args=()
start_sessnode() {
    local name=$1 port cport join="" p
    shift
    free_port port
    free_port cport
    for p in "$@"; do join+="${join:+,}127.0.0.1:$p"; done
    local args=(--listen "127.0.0.1:$port" --cluster "127.0.0.1:$cport" --name "$name"
        --max-memory "$mem" "${extra_args[@]}")
    [[ -n $join ]] && args+=(--join "$join")
    "${on_node[@]}" "$daemon" "${args[@]}" </dev/null 2>"$tmp/$name.log" &
    pids+=($!)
    wait_port "$port" $!
    echo "  $name: ${daemon##*/} ${args[*]}"
    port_of[$name]=$port
    cport_of[$name]=$cport
    pid_of[$name]=$!
}

echo "== servers"
mport=""
free_port mport
user=()
((EUID == 0)) && user=(-u memcache)
"${on_other[@]}" memcached "${user[@]}" -l 127.0.0.1 -p "$mport" -U 0 -t 4 -m "$mem" </dev/null \
    2>"$tmp/memcached.log" &
pids+=($!)
pid_of[memcached]=$!
wait_port "$mport" $!
echo "  memcached: memcached ${user[*]} -l 127.0.0.1 -p $mport -U 0 -t 4 -m $mem ($(memcached -V))"
start_sessnode single
declare -A procs target_port
if ((tier)); then
    # the tier's own memcached, apart from the reference one, or the sink
    tport=""
    free_port tport
    if ((sink)); then
        compile_tool tier_sink
        "${on_other[@]}" "$tmp/tier_sink" "$tport" </dev/null 2>"$tmp/tier-memcached.log" &
        tier_server="tier_sink $tport (bench/tier_sink.c)"
    else
        "${on_other[@]}" memcached "${user[@]}" -l 127.0.0.1 -p "$tport" -U 0 -t 2 -m "$mem" \
            </dev/null 2>"$tmp/tier-memcached.log" &
        tier_server="memcached ${user[*]} -l 127.0.0.1 -p $tport -U 0 -t 2 -m $mem"
    fi
    pids+=($!)
    pid_of[tier-memcached]=$!
    wait_port "$tport" $!
    echo "  tier: $tier_server"
    extra_args=(--tier "127.0.0.1:$tport")
    start_sessnode tiered
    extra_args=()
    # the tier's memcached works for the tiered node: its CPU counts there
    procs=([memcached]="${pid_of[memcached]}" [single]="${pid_of[single]}"
        [tier]="${pid_of[tiered]} ${pid_of[tier-memcached]}")
    target_port=([memcached]=$mport [single]=${port_of[single]} [tier]=${port_of[tiered]})
    systems=(memcached single tier)
    daemons=(single tiered)
    sets=${sets:-1.0}
else
    start_sessnode c1
    start_sessnode c2 "${cport_of[c1]}"
    start_sessnode c3 "${cport_of[c1]}" "${cport_of[c2]}"
    sleep 2   # let the peers subscribe to each other before the first load
    # The processes whose CPU time counts for each system.
    procs=([memcached]="${pid_of[memcached]}" [single]="${pid_of[single]}"
        [peers]="${pid_of[c1]} ${pid_of[c2]} ${pid_of[c3]}")
    target_port=([memcached]=$mport [single]=${port_of[single]} [peers]=${port_of[c1]})
    systems=(memcached single peers)
    daemons=(single c1 c2 c3)
    sets=${sets:-0.1}
fi

conf=$tmp/memcaslap.conf
getfrac=$(awk -v s="$sets" 'BEGIN {printf "%.2f", 1 - s}')
printf 'key\n64 64 1\nvalue\n1024 1024 1\ncmd\n0 %s\n1 %s\n' "$sets" "$getfrac" >"$conf"

# mc_cmd PORT COMMAND: one memcached command's answer, up to END or OK.
mc_cmd() {
    local line
    exec 3<>"/dev/tcp/127.0.0.1/$1"
    printf '%s\r\n' "$2" >&3
    while IFS= read -r -t 5 line <&3; do
        line=${line%$'\r'}
        echo "$line"
        [[ $line == END || $line == OK || $line == *ERROR* ]] && break
    done
    exec 3<&-
}
mc_stat() { mc_cmd "$1" "${3:-stats}" | sed -n "s/^STAT $2 //p"; }

# item_class PORT: the chunk size of the slab class holding the most items.
item_class() {
    mc_cmd "$1" "stats slabs" | awk -F'[: ]' '
        $3 == "chunk_size" {size[$2] = $4}
        $3 == "used_chunks" && $4 > most {most = $4; cls = $2}
        END {if (cls) print size[cls]}'
}

if ((tier && !sink)); then
    # Filled with items of the slab class the node's copies take, so that
    # memcached's pages are in that class when the rounds start, as in a
    # server that has held such copies a while: after a fill of 1 KiB
    # values (a smaller class) it moved pages between classes during the
    # rounds.
    echo "== filling the tier's memcached to its memory limit, then flush_all"
    value=$(head -c 1024 /dev/zero | tr '\0' v)
    exec 3<>"/dev/tcp/127.0.0.1/${port_of[tiered]}"
    printf 'set sn-bench-probe 0 0 1024\r\n%s\r\n' "$value" >&3
    read -r -t 5 _ <&3 || true   # STORED
    exec 3<&-
    chunk=""
    for ((i = 0; i < 50 && ${#chunk} == 0; i++)); do
        sleep 0.1
        chunk=$(item_class "$tport")
    done
    [[ -n $chunk ]] || { echo "run_memcaslap.sh: the tiered node wrote no copy" >&2; exit 1; }
    # memcached stores a 64-byte key and a value of V bytes in some V + 130
    # bytes, and a class's chunks are 1.25 times those of the class below:
    # aim for nine tenths of the chunk
    fill_value=$((chunk * 9 / 10 - 130))
    printf 'key\n64 64 1\nvalue\n%s %s 1\ncmd\n0 1.0\n1 0.0\n' "$fill_value" "$fill_value" \
        >"$tmp/fill.conf"
    limit=$(mc_stat "$tport" limit_maxbytes)
    for ((i = 0; i < 12; i++)); do
        "${on_other[@]}" memcaslap -s "127.0.0.1:$tport" -F "$tmp/fill.conf" -T 2 -c 64 -t 5s \
            >/dev/null 2>&1 || true
        malloced=$(mc_stat "$tport" total_malloced "stats slabs")
        ((malloced * 100 >= limit * 95)) && break
    done
    echo "  a copy takes a ${chunk}-byte chunk: filled with ${fill_value}-byte values;" \
        "now in chunks of $(item_class "$tport")"
    echo "  total_malloced $malloced of $limit bytes; $(mc_cmd "$tport" flush_all)"
fi

if ((fill)); then
    # Every server's memory taken before the rounds, so that each round
    # measures the steady state of a full store (every new key evicting
    # one), not the first touch of its memory: on these VMs a page's first
    # touch costs some 3 s per GiB, and a server that filled during the
    # rounds paid it in whichever rounds it happened to be filling.
    echo "== filling every server past its memory limit (--fill)"
    for sys in "${systems[@]}"; do
        port=${target_port[$sys]}
        for ((i = 0; i < 24; i++)); do
            "${on_other[@]}" "${load[@]}" -s "127.0.0.1:$port" -F "$conf" -T 2 -c 64 -t 5s \
                >/dev/null 2>&1 || true
            evicted=$(mc_stat "$port" evictions)
            ((${evicted:-0} > 0)) && break
        done
        echo "  $sys: ${evicted:-?} evicted after $(((i + 1) * 5)) s of load"
        ((${evicted:-0} > 0)) || { echo "run_memcaslap.sh: $sys did not fill" >&2; exit 1; }
    done
fi

# thread_ticks PID: "NAME TICKS" per thread (the name may repeat: summed)
thread_ticks() {
    local t f c
    for t in /proc/"$1"/task/*; do
        read -r c <"$t/comm" || continue
        read -ra f <"$t/stat" || continue
        # the fields after the name, which may hold spaces: count from the end
        echo "${c// /_} $((f[${#f[@]} - 52 + 13] + f[${#f[@]} - 52 + 14]))"
    done | awk '{t[$1] += $2} END {for (n in t) print n, t[n]}' | sort
}

cpu_ticks() {
    local sum=0 pid f
    for pid in "$@"; do
        read -ra f <"/proc/$pid/stat"
        sum=$((sum + f[13] + f[14]))
    done
    echo "$sum"
}

declare -A results
hz=$(getconf CLK_TCK)
if ((tier && rounds % 2)); then
    rounds=$((rounds + 1))
    echo "== $rounds rounds: an even number, so that each daemon goes first as often"
fi
echo "== load: ${load[*]##*/} -s 127.0.0.1:PORT -F CONF -T 2 -c 64 -t ${secs}s" \
    "(CONF: 64 B keys, 1 KiB values, set fraction $sets)"
printf '%-6s %-10s %10s %10s %9s %8s\n' round system ops/s gets sets server-cpu
for ((r = 1; r <= rounds; r++)); do
    order=("${systems[@]}")
    # the node alone and the tiered one swap places every other round, so
    # that neither the order nor a host slowing down or speeding up over
    # the run favours either
    ((tier && r % 2 == 0)) && order=(memcached tier single)
    for sys in "${order[@]}"; do
        [[ $sys != memcached ]] && sleep "$rest"
        # shellcheck disable=SC2086
        before=$(cpu_ticks ${procs[$sys]})
        [[ $threads == 1 && $sys != memcached ]] && thread_ticks "${procs[$sys]%% *}" >"$tmp/th.before"
        out=$tmp/$sys.$r.out
        timeout -k 5 $((secs + 60)) "${on_other[@]}" "${load[@]}" -s "127.0.0.1:${target_port[$sys]}" -F "$conf" \
            -T 2 -c 64 -t "${secs}s" >"$out" 2>&1 || {
            echo "run_memcaslap.sh: memcaslap against $sys failed:" >&2
            tail -n 20 "$out" >&2
            exit 1
        }
        # shellcheck disable=SC2086
        after=$(cpu_ticks ${procs[$sys]})
        [[ $threads == 1 && $sys != memcached ]] && thread_ticks "${procs[$sys]%% *}" >"$tmp/th.after"
        tps=$(sed -n 's/.*TPS: \([0-9]*\).*/\1/p' "$out" | tail -n 1)
        gets=$(sed -n 's/^cmd_get: //p' "$out" | tail -n 1)
        sets=$(sed -n 's/^cmd_set: //p' "$out" | tail -n 1)
        misses=$(sed -n 's/^get_misses: //p' "$out" | tail -n 1)
        [[ -n $tps ]] || { echo "run_memcaslap.sh: no TPS line from memcaslap:" >&2; cat "$out" >&2; exit 1; }
        cpu=$(((after - before) * 100 / hz / secs))
        results[$sys]+="$tps "
        printf '%-6s %-10s %10s %10s %9s %7s%%' "$r" "$sys" "$tps" "$gets" "$sets" "$cpu"
        [[ ${misses:-0} != 0 ]] && printf '  (%s get misses)' "$misses"
        printf '\n'
        if [[ $threads == 1 && $sys != memcached ]]; then
            # each thread's CPU time per operation of the round, in us
            join "$tmp/th.before" "$tmp/th.after" | awk -v hz="$hz" -v ops=$((tps * secs)) '
                { d = $3 - $2; if (d > 0) line = line sprintf(" %s %.2f", $1, d * 1e6 / hz / ops); sum += d }
                END { printf "         us/op by thread:%s (all %.2f)\n", line, sum * 1e6 / hz / ops }'
        fi
    done
done

median() { tr ' ' '\n' <<<"$1" | sed '/^$/d' | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2)}'; }
echo "== medians of $rounds rounds"
mm=$(median "${results[memcached]}")
ms=$(median "${results[single]}")
verdict=0
for sys in "${systems[@]}"; do
    m=$(median "${results[$sys]}")
    ref=memcached base=$mm
    case $sys in
    single) target=0.90; ((tier)) && target="" ;;
    peers) target=0.70 ;;
    tier) target=0.90; ref="sessnode alone" base=$ms ;;
    *) target="" ;;
    esac
    # compared unrounded, shown cut (not rounded) to three places, so that
    # 0.8996 reads 0.899 and misses 0.90
    ratio=$(awk -v a="$m" -v b="$base" 'BEGIN {printf "%.6f", a / b}')
    line=$(printf '%-10s %10s ops/s  %5sx %s' "$sys" "$m" \
        "$(awk -v r="$ratio" 'BEGIN {printf "%.3f", int(r * 1000) / 1000}')" "$ref")
    if [[ $sys == tier ]]; then
        # The daemon that goes second in a round is often the slower one
        # (by up to a fifth, either daemon; not work left over from the
        # other's turn, which is idle by then). So each pair of rounds, one
        # in each order, gives one figure: the geometric mean of its two
        # rounds' ratios, in which the order's effect cancels. The medians
        # by order show the effect itself.
        line+=$(awk -v t="${results[tier]}" -v s="${results[single]}" '
            function med(a, n,   i, j, x) {
                for (i = 2; i <= n; i++)
                    for (j = i; j > 1 && a[j - 1] > a[j]; j--) { x = a[j]; a[j] = a[j - 1]; a[j - 1] = x }
                return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
            }
            BEGIN {
                n = split(t, ta, " "); split(s, sa, " ")
                for (i = 1; i <= n; i++) {
                    r[i] = ta[i] / sa[i]
                    if (i % 2) second[++ns] = r[i]; else first[++nf] = r[i]
                    if (i % 2 == 0) { g = sqrt(r[i - 1] * r[i]); pair[++np] = g; list = list sprintf(" %.3f", g) }
                }
                printf " (pairs of rounds, one in each order: median %.3fx of%s;", med(pair, np), list
                printf " tiered node first %.2fx, second %.2fx)", med(first, nf), med(second, ns)
            }')
    fi
    if [[ -n $target ]]; then
        if awk -v r="$ratio" -v t="$target" 'BEGIN {exit !(r >= t)}'; then
            line+="  (target >= ${target}x: met)"
        else
            line+="  (target >= ${target}x: MISSED)"
            verdict=1
        fi
    fi
    echo "$line"
done

if ((tier)); then
    # whether every session was backed up, how much the tier's memcached
    # rearranged its memory (slabs_moved: pages it moved between slab
    # classes during the run) and whether the stores were full
    sleep 0.2   # the last round's copies
    st=$(mc_cmd "${port_of[tiered]}" stats)
    echo "tiered node: $(sed -n -E 's/^STAT (tier_(queue|writes|touches|failures|dropped)) /\1 /p' <<<"$st" |
        paste -sd' ')"
    if ((sink)); then
        # every copy the node counts as written reached the sink, parsed
        sst=$(mc_cmd "$tport" stats)
        echo "tier's sink: $(sed -n -E 's/^STAT ([a-z_]+) /\1 /p' <<<"$sst" | paste -sd' ')"
        sets=$(sed -n 's/^STAT sets //p' <<<"$sst")
        bad=$(sed -n 's/^STAT bad_lines //p' <<<"$sst")
        copies=$(($(sed -n 's/^STAT tier_writes //p' <<<"$st") + $(sed -n 's/^STAT tier_touches //p' <<<"$st")))
        if [[ $sets != "$copies" || $bad != 0 ]]; then
            echo "run_memcaslap.sh: the sink took $sets sets ($bad lines it could not parse)" \
                "where the node wrote $copies copies" >&2
            exit 1
        fi
    else
        echo "tier's memcached: slabs_moved $(mc_stat "$tport" slabs_moved)"
    fi
    echo "sessions evicted (--max-memory): node alone $(mc_stat "${port_of[single]}" evictions)," \
        "tiered node $(mc_stat "${port_of[tiered]}" evictions)"
fi

for name in "${daemons[@]}"; do
    if ! kill -0 "${pid_of[$name]}" 2>/dev/null; then
        echo "run_memcaslap.sh: sessnode $name died during the run; its log:" >&2
        tail -n 20 "$tmp/$name.log" >&2
        exit 1
    fi
done

if [[ -n $perf_dir ]]; then
    mkdir -p "$perf_dir"
    for sys in "${systems[@]:1}"; do
        pid=${procs[$sys]%% *}
        echo "== perf record -g -p $pid ($sys) under the same load, $secs s -> $perf_dir/perf-$sys.data"
        perf record -g -p "$pid" -o "$perf_dir/perf-$sys.data" -- sleep "$secs" \
            >"$perf_dir/perf-$sys.log" 2>&1 &
        perf_pid=$!
        "${on_other[@]}" "${load[@]}" -s "127.0.0.1:${target_port[$sys]}" -F "$conf" -T 2 -c 64 \
            -t "${secs}s" >"$perf_dir/memcaslap-$sys.log" 2>&1 || true
        wait "$perf_pid" || true
        echo "   memcaslap under perf: $(grep -E 'TPS' "$perf_dir/memcaslap-$sys.log" | tail -n 1)"
        perf report -i "$perf_dir/perf-$sys.data" --no-children --percent-limit 1.5 \
            --stdio 2>/dev/null | grep -E '^ +[0-9.]+%' | head -n 25 || true
    done
fi
((verdict == 0)) || echo "== a target was missed (see above)"
exit 0

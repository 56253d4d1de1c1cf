#!/usr/bin/env bash
# Two sessnode daemons (two builds, or one build with and without the tier)
# under the same fixed load of sets, taking turns, compared by their CPU
# time a set, thread by thread. At a fixed rate both do the same work, so
# the CPU a set is the figure to compare; at peak rate it also moves with
# how many requests each wake-up finds (docs/BENCHMARKS.md).
#
# Each daemon runs on CPU 0 (--max-memory 2048); the load, bench/mc_load.c
# at --rate sets a second over 64 connections, and the tier's server,
# bench/tier_sink.c (which parses and counts the copies and keeps none), on
# CPU 1. Turns alternate A B, B A, ...; the CPU a set of each thread comes
# from /proc/PID/task/*/schedstat (nanoseconds), summed by kind: the
# writers (sn-worker-N), sn-tier, and the rest (the main thread, the
# replication thread and ZeroMQ's, which are not told apart by name).
#
#   bash bench/run_daemon_ab.sh --a OLD/daemon/sessnode --b NEW/daemon/sessnode --tier
#   bash bench/run_daemon_ab.sh --a PATH --b PATH --tier-b    B alone has the tier
#   options: --rate 40k (sets a second)  --rounds 6  --time 10 (seconds a turn)
#
# Both programs are compiled from bench/ into a temporary directory
# (${CC:-cc}); every process started is killed by PID on exit.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
a="" b="" tier_a=0 tier_b=0 rate=40k rounds=6 secs=10
me=run_daemon_ab.sh
# shellcheck source=bench/script_common.sh
. "$root/bench/script_common.sh"
while (($#)); do
    case $1 in
    --a) a=$2; shift 2 ;;
    --b) b=$2; shift 2 ;;
    --tier) tier_a=1 tier_b=1; shift ;;
    --tier-a) tier_a=1; shift ;;
    --tier-b) tier_b=1; shift ;;
    --rate) rate=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --time) secs=$2; shift 2 ;;
    -h | --help) usage ;;
    *) echo "run_daemon_ab.sh: unknown argument '$1'" >&2; usage ;;
    esac
done
[[ -x $a && -x $b ]] || { echo "run_daemon_ab.sh: --a and --b name two daemons" >&2; exit 2; }
(($(nproc) >= 2)) || { echo "run_daemon_ab.sh: needs 2 CPUs" >&2; exit 1; }

with_tmp sn-ab

compile_tool mc_load
compile_tool tier_sink
printf 'key\n64 64 1\nvalue\n1024 1024 1\ncmd\n0 1.0\n1 0.0\n' >"$tmp/conf"

sink=""
free_port sink
taskset -c 1 "$tmp/tier_sink" "$sink" </dev/null &
pids+=($!)
wait_port "$sink" $!
declare -A port pid
for d in A B; do
    bin=$a tier=$tier_a
    [[ $d == B ]] && bin=$b tier=$tier_b
    free_port lport
    free_port cport
    args=(--listen "127.0.0.1:$lport" --cluster "127.0.0.1:$cport" --name "$d"
        --max-memory 2048)
    ((tier)) && args+=(--tier "127.0.0.1:$sink")
    taskset -c 0 "$bin" "${args[@]}" </dev/null 2>"$tmp/$d.log" &
    pids+=($!)
    pid[$d]=$!
    port[$d]=$lport
    wait_port "${port[$d]}" $!
    echo "$d: $bin ${args[*]}"
done

# thread kind -> nanoseconds on a CPU, summed over the daemon's threads
cpu_ns() {
    local t c ns
    for t in /proc/"$1"/task/*; do
        read -r c <"$t/comm" || continue
        read -r ns _ <"$t/schedstat" || continue
        case $c in
        sn-worker-*) echo "writers $ns" ;;
        sn-tier) echo "tier $ns" ;;
        *) echo "rest $ns" ;;
        esac
    done | awk '{s[$1] += $2} END {for (k in s) printf "%s %.0f\n", k, s[k]}'
}
kinds=(writers tier rest)

echo "== $rounds rounds of $secs s a daemon at $rate sets/s (mc_load -c 64), us of CPU a set"
printf '%-6s %-3s %8s %9s %9s %9s %9s\n' round d sets/s all writers sn-tier rest
for ((r = 1; r <= rounds; r++)); do
    order=(A B)
    ((r % 2 == 0)) && order=(B A)
    for d in "${order[@]}"; do
        declare -A before=() after=()
        while read -r k v; do before[$k]=$v; done < <(cpu_ns "${pid[$d]}")
        out=$(taskset -c 1 "$tmp/mc_load" -s "127.0.0.1:${port[$d]}" -F "$tmp/conf" -c 64 \
            -t "${secs}s" -P "$rate" 2>&1) || { echo "$out" >&2; exit 1; }
        while read -r k v; do after[$k]=$v; done < <(cpu_ns "${pid[$d]}")
        sets=$(sed -n 's/^cmd_set: //p' <<<"$out")
        line=$(printf '%-6s %-3s %8.0f' "$r" "$d" "$(awk -v n="$sets" -v s="$secs" 'BEGIN {print n / s}')")
        total=0 each=()
        for k in "${kinds[@]}"; do
            ns=$((${after[$k]:-0} - ${before[$k]:-0}))
            total=$((total + ns))
            each+=("$(awk -v ns=$ns -v n="$sets" 'BEGIN {print ns / n / 1000}')")
        done
        line+=$(printf ' %9.3f %9.3f %9.3f %9.3f' \
            "$(awk -v ns=$total -v n="$sets" 'BEGIN {print ns / n / 1000}')" "${each[@]}")
        echo "$line"
        echo "$d $line" >>"$tmp/turns"
    done
done

echo "== medians"
for d in A B; do
    awk -v d="$d" '$1 == d {n++; for (i = 5; i <= 8; i++) v[i, n] = $i}
        function med(i,   a, k, j, t) {
            for (k = 1; k <= n; k++) a[k] = v[i, k]
            for (k = 2; k <= n; k++)
                for (j = k; j > 1 && a[j - 1] > a[j]; j--) {t = a[j]; a[j] = a[j - 1]; a[j - 1] = t}
            return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        END {printf "%-19s %9.3f %9.3f %9.3f %9.3f\n", d, med(5), med(6), med(7), med(8)}' \
        "$tmp/turns"
done
sleep 0.5   # the last turn's copies
for d in A B; do
    st=$(exec 3<>"/dev/tcp/127.0.0.1/${port[$d]}"; printf 'stats\r\n' >&3
        while IFS= read -r -t 5 l <&3; do l=${l%$'\r'}; [[ $l == END ]] && break; echo "$l"; done)
    echo "$d: $(sed -n -E 's/^STAT (tier_(queue|writes|failures|dropped)) /\1 /p' <<<"$st" | paste -sd' ')"
done

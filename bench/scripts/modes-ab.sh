#!/usr/bin/env bash
# Host mode against builtin mode, one netbackd binary: the stock iperf3 client and an embedded
# guest, into the guest and out of it (-R).
#   builtin: the guest's vif is a port of bridge-lite's switch, whose uplink is a TAP in the
#            namespace (the host's address on the TAP);
#   host:    the guest's vif is a netdev vif1.0 (`script=vif-bridge`) that the embedded toolstack
#            puts in a Linux bridge xenbr0 (the host's address on the bridge), as on a Xen host
#            that keeps its network.
# RUNS interleaved rounds (each starting with the other mode than the round before), each run a
# fresh netbackd in a fresh namespace; then median, spread and CV per mode and direction. The
# cross-CPU round trip (bench probe) before and after: compare only runs whose probe stayed.
#
# Usage: sudo bench/scripts/modes-ab.sh --netbackd BIN [--runs N] [--seconds S]
# Needs: root, iproute2, iperf3, python3, cargo (or BENCH=a bench binary, for the probe).
# Not run by CI.
set -euo pipefail

RUNS=3
SECS=5
NB=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --netbackd) NB="$2"; shift 2 ;;
        --runs) RUNS="$2"; shift 2 ;;
        --seconds) SECS="$2"; shift 2 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "modes-ab.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ $EUID -eq 0 ]] || { echo "modes-ab.sh: run as root (network namespaces, TAP devices)" >&2; exit 1; }
[[ -x "$NB" ]] || { echo "modes-ab.sh: --netbackd must name a netbackd binary" >&2; exit 2; }
cd "$(dirname "$0")/../.."
WORK="$(mktemp -d)"
NS="modeab$$"
cleanup() {
    [[ -n "${PID:-}" ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

probe() {
    if [[ -n "${BENCH:-}" ]]; then "$BENCH" probe 2>&1 | tail -1
    else cargo run --release -q -p bench -- probe 2>&1 | tail -1; fi
}

# One run: mode $1 (host|builtin), iperf3 flag $2 ("" or -R); prints Gb/s.
one() {
    local mode=$1 dir=$2
    ip netns add "$NS"
    ip -n "$NS" link set lo up
    local args=(--guests 1 --guest-net 10.199.97.0/24 --run-dir "$WORK/run" --log warn)
    if [[ $mode == host ]]; then
        ip -n "$NS" link add xenbr0 type bridge
        ip -n "$NS" addr add 10.199.97.1/24 dev xenbr0
        ip -n "$NS" link set xenbr0 up
        args+=(--guest-script vif-bridge)
    else
        args+=(--uplink "tap:sn0,addr=10.199.97.1/24")
    fi
    ip netns exec "$NS" "$NB" "${args[@]}" > /dev/null 2> "$WORK/nb.log" &
    PID=$!
    for _ in $(seq 1 60); do
        ip netns exec "$NS" ping -c1 -W1 10.199.97.2 > /dev/null 2>&1 && break
        sleep 0.25
    done
    ip netns exec "$NS" iperf3 -c 10.199.97.2 $dir -t "$SECS" -J > "$WORK/iperf.json" || true
    kill "$PID"; wait "$PID" 2> /dev/null || true
    PID=""
    ip netns del "$NS"
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.3f" % (d["end"]["sum_received"]["bits_per_second"]/1e9))' "$WORK/iperf.json" \
        || { echo "modes-ab.sh: the $mode run gave no iperf3 result; netbackd said:" >&2; cat "$WORK/nb.log" >&2; echo 0; }
}

echo "netbackd: $NB; iperf3 ${SECS}s, $RUNS rounds"
echo "probe before: $(probe)"
declare -A R
for r in $(seq 1 "$RUNS"); do
    if (( r % 2 )); then order=(builtin host); else order=(host builtin); fi
    for m in "${order[@]}"; do
        for d in into out; do
            flag=""; [[ $d == out ]] && flag="-R"
            g=$(one "$m" "$flag")
            R[$m-$d]+="$g "
            echo "round $r $m $d: $g Gb/s"
        done
    done
done
echo "probe after: $(probe)"
for k in builtin-into host-into builtin-out host-out; do
    python3 - "$k" ${R[$k]} <<'PY'
import statistics, sys
k, xs = sys.argv[1], [float(x) for x in sys.argv[2:]]
cv = statistics.stdev(xs) / statistics.mean(xs) * 100 if len(xs) > 1 else 0.0
print(f"{k:13} median {statistics.median(xs):.2f} Gb/s  spread {min(xs):.2f}-{max(xs):.2f}  "
      f"CV {cv:.1f}%  runs {' '.join(f'{x:.2f}' for x in xs)}")
PY
done

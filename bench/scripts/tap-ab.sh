#!/usr/bin/env bash
# Two netbackd binaries, A and B, against each other: the stock iperf3 client and an embedded
# guest behind a TAP, as a user runs it (README). RUNS interleaved rounds of the two (each round
# starting with the other one than the round before), each run a fresh netbackd in a fresh
# network namespace; then the median, spread and coefficient of variation of each, and the
# uplink's writes per MiB sent out of the guest (from netbackd's own metrics, scraped once after
# the transfer).
# The cross-CPU round trip (bench probe) is taken before and after: compare only runs whose probe
# did not move (README, "The two commands").
#
# Usage: sudo bench/scripts/tap-ab.sh --a BIN --b BIN [--runs N] [--seconds S] [--mtu N] [--reverse]
#   --reverse: iperf3 -R, the guest sends (out of the guest); default: into the guest.
# Needs: root, iproute2, iperf3, curl, python3, cargo (or BENCH=a bench binary, for the probe).
# Not run by CI.
set -euo pipefail

RUNS=3
SECS=5
MTU=1500
DIR=""
A=""
B=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --a) A="$2"; shift 2 ;;
        --b) B="$2"; shift 2 ;;
        --runs) RUNS="$2"; shift 2 ;;
        --seconds) SECS="$2"; shift 2 ;;
        --mtu) MTU="$2"; shift 2 ;;
        --reverse) DIR="-R"; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "tap-ab.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ $EUID -eq 0 ]] || { echo "tap-ab.sh: run as root (network namespaces, TAP devices)" >&2; exit 1; }
[[ -x "$A" && -x "$B" ]] || { echo "tap-ab.sh: --a and --b must name two netbackd binaries" >&2; exit 2; }
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
WORK="$(mktemp -d)"
NS="tapab$$"
cleanup() {
    [[ -n "${PID:-}" ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# BENCH=path: a bench binary for the probe (else cargo builds and runs this tree's).
probe() {
    if [[ -n "${BENCH:-}" ]]; then "$BENCH" probe 2>&1 | tail -1
    else cargo run --release -q -p bench -- probe 2>&1 | tail -1; fi
}

# One run of binary $1: prints "Gb/s writes-per-MiB".
one() {
    local nb=$1
    ip netns add "$NS"
    ip -n "$NS" link set lo up
    ip netns exec "$NS" "$nb" --guests 1 --guest-net 10.199.98.0/24 --mtu "$MTU" \
        --uplink "tap:sn0,addr=10.199.98.1/24,mtu=$MTU" --run-dir "$WORK/run" --log warn \
        --metrics 9102 > /dev/null 2> "$WORK/nb.log" &
    PID=$!
    for _ in $(seq 1 40); do
        ip netns exec "$NS" ping -c1 -W1 10.199.98.2 > /dev/null 2>&1 && break
        sleep 0.25
    done
    local m0 m1
    m0=$(ip netns exec "$NS" curl -s http://127.0.0.1:9102/metrics || true)
    ip netns exec "$NS" iperf3 -c 10.199.98.2 $DIR -t "$SECS" -J > "$WORK/iperf.json" || true
    m1=$(ip netns exec "$NS" curl -s http://127.0.0.1:9102/metrics || true)
    kill "$PID"; wait "$PID" 2> /dev/null || true
    PID=""
    ip netns del "$NS"
    python3 - "$WORK/iperf.json" "$m0" "$m1" <<'PY'
import json, re, sys
d = json.load(open(sys.argv[1]))
gbps = d["end"]["sum_received"]["bits_per_second"] / 1e9
def get(text, name):
    m = re.search(r'^(?:netbackd_)?uplink_' + name + r'_total\{[^}]*\} (\d+)', text, re.M)
    return int(m.group(1)) if m else 0
frames = get(sys.argv[3], "tx_frames") - get(sys.argv[2], "tx_frames")
mib = (get(sys.argv[3], "tx_bytes") - get(sys.argv[2], "tx_bytes")) / 2**20
print("%.3f %.1f" % (gbps, frames / mib if mib else 0.0))
PY
}

echo "A: $A"
echo "B: $B"
echo "iperf3 ${DIR:-(into the guest)} ${SECS}s, MTU $MTU, $RUNS rounds"
echo "probe before: $(probe)"
declare -A R W
for r in $(seq 1 "$RUNS"); do
    if (( r % 2 )); then order=(A B); else order=(B A); fi
    for v in "${order[@]}"; do
        bin=$A; [[ $v == B ]] && bin=$B
        read -r g w <<< "$(one "$bin")"
        R[$v]+="$g "
        W[$v]+="$w "
        echo "round $r $v: $g Gb/s, $w uplink writes per MiB"
    done
done
echo "probe after: $(probe)"
for v in A B; do
    python3 - "$v" "${W[$v]}" ${R[$v]} <<'PY'
import statistics, sys
v, w, xs = sys.argv[1], [float(x) for x in sys.argv[2].split()], [float(x) for x in sys.argv[3:]]
cv = statistics.stdev(xs) / statistics.mean(xs) * 100 if len(xs) > 1 else 0.0
print(f"{v} median {statistics.median(xs):.2f} Gb/s  spread {min(xs):.2f}-{max(xs):.2f}  "
      f"CV {cv:.1f}%  writes/MiB median {statistics.median(w):.1f}  runs {' '.join(f'{x:.2f}' for x in xs)}")
PY
done

#!/usr/bin/env bash
# What netbackd's hardening costs the data path: the stock iperf3 client sends into an embedded
# guest through a TAP, with the seccomp filter (the default), without it (--no-seccomp), and with
# the filter and a Prometheus scrape every second (--metrics); RUNS interleaved rounds of the
# three (each round starting with the next one), each run a fresh netbackd in a fresh network
# namespace, then the median and spread of each.
# The cross-CPU round trip (bench probe) is taken before and after: compare only runs whose probe
# did not move (README, "The two commands").
#
# Usage: sudo bench/scripts/hardening.sh [--runs N] [--seconds S] [--mtu N]   (default 3, 5, 1500)
# Needs: root, iproute2, iperf3, python3, cargo (it builds netbackd and bench in release). Not
# run by CI.
set -euo pipefail

RUNS=3
SECS=5
MTU=1500
while [[ $# -gt 0 ]]; do
    case "$1" in
        --runs) RUNS="$2"; shift 2 ;;
        --seconds) SECS="$2"; shift 2 ;;
        --mtu) MTU="$2"; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "hardening.sh: unknown argument $1 (use --runs N --seconds S --mtu N)" >&2; exit 2 ;;
    esac
done
[[ $EUID -eq 0 ]] || { echo "hardening.sh: run as root (network namespaces, TAP devices)" >&2; exit 1; }
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
cargo build --release -q -p netbackd -p bench
NB="$ROOT/target/release/netbackd"
WORK="$(mktemp -d)"
NS="hard$$"
cleanup() {
    [[ -n "${PID:-}" ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

probe() { cargo run --release -q -p bench -- probe 2>&1 | tail -1; }

# One run of variant $1: prints Gb/s.
one() {
    local variant=$1 extra=()
    case "$variant" in
        seccomp) ;;
        no-seccomp) extra=(--no-seccomp) ;;
        metrics) extra=(--metrics 9101) ;;
    esac
    ip netns add "$NS"
    ip -n "$NS" link set lo up
    ip netns exec "$NS" "$NB" --guests 1 --guest-net 10.199.99.0/24 --mtu "$MTU" \
        --uplink "tap:sn0,addr=10.199.99.1/24,mtu=$MTU" --run-dir "$WORK/run" --log warn \
        "${extra[@]}" > /dev/null 2> "$WORK/nb.log" &
    PID=$!
    for _ in $(seq 1 40); do
        ip netns exec "$NS" ping -c1 -W1 10.199.99.2 > /dev/null 2>&1 && break
        sleep 0.25
    done
    local scraper=""
    if [[ $variant == metrics ]]; then
        ip netns exec "$NS" bash -c 'while :; do
            exec 3<>/dev/tcp/127.0.0.1/9101 || exit 1
            printf "GET /metrics HTTP/1.0\r\n\r\n" >&3; cat <&3 > /dev/null; exec 3<&-
            sleep 1; done' 2> /dev/null &
        scraper=$!
    fi
    ip netns exec "$NS" iperf3 -c 10.199.99.2 -t "$SECS" -J > "$WORK/iperf.json" || true
    [[ -n $scraper ]] && kill "$scraper" 2> /dev/null
    kill "$PID"; wait "$PID" 2> /dev/null || true
    PID=""
    ip netns del "$NS"
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.3f" % (d["end"]["sum_received"]["bits_per_second"]/1e9))' "$WORK/iperf.json"
}

echo "probe before: $(probe)"
declare -A R
VARIANTS=(seccomp no-seccomp metrics)
for r in $(seq 1 "$RUNS"); do
    # Each round starts with the next variant, so none always runs first (after the probe's
    # build, or right after a namespace teardown the kernel finishes in the background).
    for i in 0 1 2; do
        v=${VARIANTS[$(((r - 1 + i) % 3))]}
        g=$(one "$v")
        R[$v]+="$g "
        echo "round $r $v: $g Gb/s"
    done
done
echo "probe after: $(probe)"
for v in seccomp no-seccomp metrics; do
    python3 - "$v" ${R[$v]} <<'PY'
import statistics, sys
v, xs = sys.argv[1], [float(x) for x in sys.argv[2:]]
print(f"{v:<11} median {statistics.median(xs):.2f} Gb/s  spread {min(xs):.2f}-{max(xs):.2f}  runs {' '.join(f'{x:.2f}' for x in xs)}")
PY
done

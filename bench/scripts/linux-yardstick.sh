#!/usr/bin/env bash
# The Linux yardstick for tcp-rx: one TCP stream through the Linux kernel's bridge, beside
# splitnet's tcp-rx at the same MTU and duration, in one run.
#
# Topology (all inside network namespaces this script creates and deletes on exit; the root
# namespace's interfaces are never touched: every veth is created directly inside a namespace):
#
#   [ysNNN-snd] vs0 10.99.0.1 ==veth== vbs -[ysNNN-br: br0]- vbr ==veth== vr0 10.99.0.2 [ysNNN-rcv]
#
# The sender namespace plays the remote host, br0 the driver domain's bridge, the receiver
# namespace the guest. iperf3 sends one stream (-P 1) for the given seconds after a one-second
# omitted warm-up (-O 1); the figure is the receiver's goodput (sum_received). A fresh namespace
# has no firewall rules; br_netfilter's hooks apply if the module is loaded (as in a dom0).
#
# Then splitnet's tcp-rx runs for the same MTU and seconds over the splitnet link (remote host on
# bridge-lite's uplink, netback, netfront; YARDSTICK_LINK=direct runs the smoltcp-to-smoltcp upper
# bound instead), and the script prints both figures and the ratio splitnet / Linux.
#
# Usage: sudo bench/scripts/linux-yardstick.sh [--mtu N] [--seconds S]   (default 1500, 10)
#        sudo bench/scripts/linux-yardstick.sh --real-sender [--mtus "M ..."] [--runs N] [--seconds S]
#          the real-sender mode: Linux's TCP stack and the stock iperf3 client send into a
#          netbackd guest through a TAP, beside this bridge path, MTUs 1500 9000 65000, 3
#          interleaved runs, CPU per domain (bench/scripts/real-sender.sh; see there).
# Needs: root, iproute2, iperf3 (apt-get install -y iperf3), python3, cargo. Not run by CI.
set -euo pipefail

if [[ "${1:-}" == "--real-sender" ]]; then
    shift
    exec "$(dirname "$0")/real-sender.sh" "$@"
fi

MTU=1500
SECS=10
LINK="${YARDSTICK_LINK:-splitnet}"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --mtu) MTU="$2"; shift 2 ;;
        --seconds) SECS="$2"; shift 2 ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "linux-yardstick.sh: unknown argument $1 (use --mtu N --seconds S, or --real-sender first)" >&2; exit 2 ;;
    esac
done

if [[ $EUID -ne 0 ]]; then
    echo "linux-yardstick.sh: needs root (network namespaces); rerun with sudo" >&2
    exit 1
fi
if ! command -v iperf3 >/dev/null 2>&1; then
    echo "linux-yardstick.sh: iperf3 is missing; install it with: apt-get install -y iperf3" >&2
    exit 1
fi
for tool in ip python3 cargo; do
    command -v "$tool" >/dev/null 2>&1 || { echo "linux-yardstick.sh: $tool is missing" >&2; exit 1; }
done

TAG="ys$$"
NS_SND="$TAG-snd" NS_BR="$TAG-br" NS_RCV="$TAG-rcv"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
WORK="$(mktemp -d)"

cleanup() {
    set +e
    [[ -n "${SERVER_PID:-}" ]] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    for ns in "$NS_SND" "$NS_BR" "$NS_RCV"; do
        ip netns del "$ns" 2>/dev/null
    done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# Build first, so compiling never overlaps a measurement.
echo "building splitnet's bench (release)..."
(cd "$ROOT" && cargo build --release -q -p bench)
BENCH="$ROOT/target/release/bench"

ip netns add "$NS_SND"
ip netns add "$NS_BR"
ip netns add "$NS_RCV"
ip -n "$NS_SND" link add vs0 type veth peer name vbs netns "$NS_BR"
ip -n "$NS_RCV" link add vr0 type veth peer name vbr netns "$NS_BR"
ip -n "$NS_BR" link add br0 type bridge
for dev in vbs vbr; do
    ip -n "$NS_BR" link set "$dev" mtu "$MTU"
    ip -n "$NS_BR" link set "$dev" master br0
    ip -n "$NS_BR" link set "$dev" up
done
ip -n "$NS_BR" link set br0 mtu "$MTU"
ip -n "$NS_BR" link set br0 up
ip -n "$NS_SND" link set vs0 mtu "$MTU"
ip -n "$NS_RCV" link set vr0 mtu "$MTU"
ip -n "$NS_SND" addr add 10.99.0.1/24 dev vs0
ip -n "$NS_RCV" addr add 10.99.0.2/24 dev vr0
for ns in "$NS_SND" "$NS_RCV"; do
    ip -n "$ns" link set lo up
done
ip -n "$NS_SND" link set vs0 up
ip -n "$NS_RCV" link set vr0 up

ip netns exec "$NS_RCV" iperf3 -s -1 -B 10.99.0.2 >/dev/null 2>&1 &
SERVER_PID=$!
# Wait for the server to listen (bounded).
for _ in $(seq 50); do
    ip netns exec "$NS_RCV" ss -ltn 2>/dev/null | grep -q ':5201' && break
    sleep 0.1
done

echo "Linux: iperf3, one stream, MTU $MTU, $SECS s (+1 s omitted warm-up), through br0 in $NS_BR"
# The cache-line round trip between the two CPUs before and after (see `bench probe --help`):
# a run during which the host moved this VM's vCPUs is not comparable.
L0=$("$BENCH" probe --ns)
ip netns exec "$NS_SND" iperf3 -c 10.99.0.2 -P 1 -t "$SECS" -O 1 -J >"$WORK/iperf.json"
L1=$("$BENCH" probe --ns)
LINUX_GBPS=$(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
print("%.3f" % (d["end"]["sum_received"]["bits_per_second"] / 1e9))' "$WORK/iperf.json")

echo "splitnet: tcp-rx --link $LINK --mtu $MTU --seconds $SECS"
"$BENCH" tcp-rx --link "$LINK" --mtu "$MTU" --seconds "$SECS" --warmup 1 --profile off \
    --quiet --json "$WORK/tcp-rx.json" | grep -E "^tcp-rx|throughput|packets|CPU" || true
read -r SPLITNET_GBPS USED_LINK SPLITNET_PROBE < <(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
c = d.get("cross_cpu") or {}
# As bench does: the probe before the warm-up counts only when none ran in the window.
p = ([] if c.get("during_ns") else [c.get("before_ns")]) + c.get("during_ns", []) + [c.get("after_ns")]
print("%.3f %s %s" % (d["throughput_gbps"], d["link"],
                      "/".join("?" if v is None else "%.0f" % v for v in p)))' "$WORK/tcp-rx.json")

echo
echo "MTU $MTU, $SECS s, one TCP stream:"
printf '  splitnet tcp-rx (link %s): %8.2f Gb/s   (cross-CPU %s ns)\n' "$USED_LINK" "$SPLITNET_GBPS" "$SPLITNET_PROBE"
printf '  Linux veth + bridge + veth: %8.2f Gb/s   (cross-CPU %s/%s ns before/after)\n' "$LINUX_GBPS" "$L0" "$L1"
python3 -c 'import sys; s, l = float(sys.argv[1]), float(sys.argv[2]); print("  ratio splitnet / Linux:     %8.2fx" % (s / l) if l > 0 else "  ratio: Linux measured 0")' \
    "$SPLITNET_GBPS" "$LINUX_GBPS"
python3 -c '
import sys
v = [float(x) for x in sys.argv[1].replace("/", " ").split() + sys.argv[2:] if x not in ("?", "nan")]
if v and max(v) > 2 * min(v):
    print("  (the cross-CPU probe moved by more than 2x between or during the two runs: the host")
    print("   placed this VM'"'"'s vCPUs differently, so the ratio compares two machines; rerun)")' \
    "$SPLITNET_PROBE" "$L0" "$L1"
if [[ "$USED_LINK" == "direct" ]]; then
    echo "  (link direct = smoltcp to smoltcp with no driver domain: an upper bound for splitnet, not its figure)"
fi

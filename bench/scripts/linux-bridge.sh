#!/usr/bin/env bash
# Linux kernel bridge forwarding rate vs bridge-lite, on this machine, in one run.
#
# Topology (all inside network namespaces this script creates and deletes; the root namespace's
# interfaces are never touched, veths are created directly inside the namespaces):
#
#   [sn-src] vs0 ==veth== vb0 -[sn-br: br0]- vb1 ==veth== vd0 [sn-dst]
#   [sn-dsrc] vx0 ==veth== vy0 [sn-ddst]          (no bridge: the same path minus br0)
#
# Traffic: 64-byte frames (60 bytes + FCS), IPv4/UDP between TEST-NET-1 addresses, from vs0 to
# station DST_MAC, which br0 has learned behind vb1, so every frame is known unicast through the
# bridge (and, with bridge-nf-call-iptables=1, through br_netfilter's IPv4 hooks, as in the
# seed's dom0). vd0's own address differs from DST_MAC, so the far stack sees PACKET_OTHERHOST
# and drops each frame at once after vd0 counted it: the far end costs as little as possible
# and the same on both paths. The kernel has no pktgen here (CONFIG_NET_PKTGEN is
# off), so the sender is a small standard-library Python program using an AF_PACKET TX ring
# (PACKET_MMAP, TPACKET_V2, qdisc bypass): it marks the whole ring ready with one strided
# write and one send() makes the kernel transmit all of it, so the sender costs almost nothing
# per frame in user space. The sender and all the softirq work it triggers run on one CPU
# (taskset), like bridge-lite's single-thread figure.
#
# Measured: frames/s arriving at vd0 (its rx_packets counter) over a window while the sender
# runs. The "direct" pair measures the same sender and veth path without the bridge, so the
# per-frame cost the bridge adds is 1/bridge_rate - 1/direct_rate. That difference also holds
# the second veth hop (vb1 -> vd0) a bridged path needs, so it is an upper bound on br0's own
# work; the end-to-end ratio, in turn, charges the sender and veths to Linux. The truth about
# "bridge work alone" lies between the two ratios printed.
#
# Then bridge-lite's forward_rate example (64 B, 1024 MACs per side, batch 32, one thread) runs
# and both figures are printed with the ratios.
#
# Usage: sudo bench/scripts/linux-bridge.sh [seconds-per-measurement [rounds]]  (default 3 3)
# Needs: root, iproute2, python3, cargo. Not run by CI.
set -euo pipefail

SECS="${1:-3}"
ROUNDS="${2:-3}"
CPU="${BRIDGE_BENCH_CPU:-1}"
TAG="sn$$"
NS_SRC="$TAG-src" NS_BR="$TAG-br" NS_DST="$TAG-dst" NS_DSRC="$TAG-dsrc" NS_DDST="$TAG-ddst"
SRC_MAC=02:00:5e:00:00:01
DST_MAC=02:00:5e:00:00:02   # the station frames are sent to (learned behind vb1 / vy0)
FAR_MAC=02:00:5e:00:00:12   # vd0's and vy0's own address: != DST_MAC, see below
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
WORK="$(mktemp -d)"

cleanup() {
    set +e
    [[ -n "${SENDER_PID:-}" ]] && kill "$SENDER_PID" 2>/dev/null && wait "$SENDER_PID" 2>/dev/null
    for ns in "$NS_SRC" "$NS_BR" "$NS_DST" "$NS_DSRC" "$NS_DDST"; do
        ip netns del "$ns" 2>/dev/null
    done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

if [[ $EUID -ne 0 ]]; then
    echo "linux-bridge.sh: needs root (network namespaces, AF_PACKET); rerun with sudo" >&2
    exit 1
fi

cat >"$WORK/tx.py" <<'PY'
# AF_PACKET TX ring sender: standard library only.
import array, mmap, socket, struct, sys, time

ifname, dst, src, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
SOL_PACKET, PACKET_VERSION, PACKET_TX_RING, PACKET_LOSS, PACKET_QDISC_BYPASS = 263, 10, 13, 14, 20
TPACKET_V2, TP_STATUS_SEND_REQUEST = 1, 1
DATA_OFF = 32                      # TPACKET2_HDRLEN - sizeof(struct sockaddr_ll)
FRAME, BLOCK, NBLOCKS = 128, 1 << 16, 16
NFRAMES = BLOCK // FRAME * NBLOCKS

mac = lambda s: bytes(int(x, 16) for x in s.split(":"))
def ipv4_udp(payload_len):
    # 192.0.2.0/24 (TEST-NET-1): never routed anywhere; the far namespace has no address, so
    # its stack drops the packet right after the veth counted it.
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + payload_len, 0, 0x4000, 64, 17, 0,
                               bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2])))
    csum = sum(struct.unpack("!10H", ip))
    csum = (csum & 0xffff) + (csum >> 16)
    csum = (csum & 0xffff) + (csum >> 16)
    struct.pack_into("!H", ip, 10, ~csum & 0xffff)
    return bytes(ip) + struct.pack("!HHHH", 9, 9, 8 + payload_len, 0) + bytes(payload_len)
# 60 bytes: Ethernet + IPv4 + UDP + 18 bytes (64 on the wire with the FCS veth does not add)
frame = mac(dst) + mac(src) + b"\x08\x00" + ipv4_udp(18)
assert len(frame) == 60
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: receive nothing
s.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
s.setsockopt(SOL_PACKET, PACKET_LOSS, 1)
s.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
s.setsockopt(SOL_PACKET, PACKET_TX_RING, struct.pack("IIII", BLOCK, NBLOCKS, FRAME, NFRAMES))
s.bind((ifname, 0))
ring = mmap.mmap(s.fileno(), BLOCK * NBLOCKS, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
for i in range(NFRAMES):
    off = i * FRAME
    struct.pack_into("IIIHH", ring, off, 0, len(frame), len(frame), 0, 0)
    ring[off + DATA_OFF: off + DATA_OFF + len(frame)] = frame
status = memoryview(ring).cast("I")[0::FRAME // 4]   # tp_status of every frame
ready = array.array("I", [TP_STATUS_SEND_REQUEST] * NFRAMES)
if seconds <= 0:                                      # one frame, to teach the bridge a MAC
    status[0] = TP_STATUS_SEND_REQUEST
    s.send(b"")
    sys.exit(0)
deadline, sent = time.monotonic() + seconds, 0
while time.monotonic() < deadline:
    status[:] = ready          # every frame ready: one strided write
    s.send(b"")                # blocking: returns when the whole ring has been transmitted
    sent += NFRAMES
print(f"sent={sent}")
PY

counter() { ip netns exec "$1" cat "/sys/class/net/$2/statistics/$3"; }

# measure NS_TX IF_TX NS_RX IF_RX -> prints frames/s at IF_RX
measure() {
    local ns_tx=$1 if_tx=$2 ns_rx=$3 if_rx=$4
    ip netns exec "$ns_tx" taskset -c "$CPU" python3 "$WORK/tx.py" "$if_tx" "$DST_MAC" "$SRC_MAC" \
        "$((SECS + 2))" >"$WORK/sender.out" &
    SENDER_PID=$!
    sleep 1
    local c0 t0 c1 t1
    c0=$(counter "$ns_rx" "$if_rx" rx_packets); t0=$(date +%s.%N)
    sleep "$SECS"
    c1=$(counter "$ns_rx" "$if_rx" rx_packets); t1=$(date +%s.%N)
    wait "$SENDER_PID"; SENDER_PID=
    python3 -c "print(f'{($c1 - $c0) / ($t1 - $t0):.0f}')"
}

echo "== setting up namespaces ($TAG-*)"
for ns in "$NS_SRC" "$NS_BR" "$NS_DST" "$NS_DSRC" "$NS_DDST"; do
    ip netns add "$ns"
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.default.disable_ipv6=1
    ip -n "$ns" link set lo up
done
ip -n "$NS_SRC" link add vs0 address "$SRC_MAC" type veth peer name vb0 netns "$NS_BR"
ip -n "$NS_DST" link add vd0 address "$FAR_MAC" type veth peer name vb1 netns "$NS_BR"
ip -n "$NS_BR" link add br0 type bridge stp_state 0 forward_delay 0 mcast_snooping 0
ip -n "$NS_BR" link set vb0 master br0
ip -n "$NS_BR" link set vb1 master br0
for l in br0 vb0 vb1; do ip -n "$NS_BR" link set "$l" up; done
ip -n "$NS_SRC" link set vs0 up
ip -n "$NS_DST" link set vd0 up
ip -n "$NS_DSRC" link add vx0 address "$SRC_MAC" type veth peer name vy0 netns "$NS_DDST" address "$FAR_MAC"
ip -n "$NS_DSRC" link set vx0 up
ip -n "$NS_DDST" link set vy0 up

# Teach br0 where DST_MAC is: one frame from vd0 (DST_MAC -> SRC_MAC).
ip netns exec "$NS_DST" python3 "$WORK/tx.py" vd0 "$SRC_MAC" "$DST_MAC" 0
sleep 0.2
if ! ip -n "$NS_BR" -o link show vb1 >/dev/null || \
   ! bridge -n "$NS_BR" fdb show br br0 | grep -q "$DST_MAC dev vb1"; then
    echo "linux-bridge.sh: br0 did not learn $DST_MAC on vb1; aborting" >&2
    exit 1
fi

NF_KEY=net.bridge.bridge-nf-call-iptables
NF_DEFAULT=$(ip netns exec "$NS_BR" sysctl -n "$NF_KEY" 2>/dev/null || echo absent)
echo "== root netns: $NF_KEY=$(sysctl -n "$NF_KEY" 2>/dev/null || echo absent);" \
     "bridge netns (fresh, no firewall rules): $NF_KEY=$NF_DEFAULT"

# The machine is shared and noisy: measure the configurations interleaved, ROUNDS times each,
# and keep each one's fastest round (the least disturbed), as bridge-lite's figure does.
NF_ALT=""
if [[ "$NF_DEFAULT" == 0 || "$NF_DEFAULT" == 1 ]] &&
   ip netns exec "$NS_BR" sysctl -qw "$NF_KEY=$NF_DEFAULT" 2>/dev/null; then
    NF_ALT=$((1 - NF_DEFAULT))
fi
best() { python3 -c "import sys; print(max(int(x) for x in sys.argv[1:]))" "$@"; }
D_ALL=() L_ALL=() A_ALL=()
for round in $(seq "$ROUNDS"); do
    echo "== round $round/$ROUNDS (${SECS}s per measurement, CPU $CPU)"
    D_ALL+=("$(measure "$NS_DSRC" vx0 "$NS_DDST" vy0)")
    echo "   direct veth pair, no bridge:      ${D_ALL[-1]} frames/s"
    L_ALL+=("$(measure "$NS_SRC" vs0 "$NS_DST" vd0)")
    echo "   Linux bridge, $NF_KEY=$NF_DEFAULT: ${L_ALL[-1]} frames/s"
    if [[ -n "$NF_ALT" ]]; then
        ip netns exec "$NS_BR" sysctl -qw "$NF_KEY=$NF_ALT"
        A_ALL+=("$(measure "$NS_SRC" vs0 "$NS_DST" vd0)")
        ip netns exec "$NS_BR" sysctl -qw "$NF_KEY=$NF_DEFAULT"
        echo "   Linux bridge, $NF_KEY=$NF_ALT: ${A_ALL[-1]} frames/s"
    fi
done
DIRECT=$(best "${D_ALL[@]}")
LINUX=$(best "${L_ALL[@]}")
LINUX_ALT=""
[[ -n "$NF_ALT" ]] && LINUX_ALT=$(best "${A_ALL[@]}")
echo "bridge port drops (vb0 rx_dropped, vb1 tx_dropped): $(counter "$NS_BR" vb0 rx_dropped)," \
     "$(counter "$NS_BR" vb1 tx_dropped)"

echo "== bridge-lite forward_rate (64 B, 1024 MACs per side, batch 32), pinned to CPU $CPU"
(cd "$ROOT" && cargo build --release -q -p bridge-lite --example forward_rate)
LITE_OUT=$(taskset -c "$CPU" "$ROOT/target/release/examples/forward_rate" --seconds "$((SECS * ROUNDS))")
echo "$LITE_OUT"
LITE=$(echo "$LITE_OUT" | sed -n 's/^bridge_lite_best_mpps=//p')

python3 - "$LITE" "$LINUX" "$DIRECT" "$NF_DEFAULT" "$LINUX_ALT" "$NF_ALT" <<'PY'
import sys
lite_mpps, linux, direct, nf, alt, nf_alt = sys.argv[1:7]
lite = float(lite_mpps) * 1e6
linux, direct = float(linux), float(direct)
def line(name, fps):
    added = 1e9 / fps - 1e9 / direct
    cost = (f"bridge adds {added:6.0f} ns/frame = {added / (1e9 / lite):5.1f}x bridge-lite's"
            if added > 0 else "bridge cost lost in noise (linux >= direct)")
    print(f"{name:<44} {fps/1e6:7.3f} Mpps  bridge-lite/linux = {lite/fps:6.1f}x   {cost}")
print()
print(f"{'bridge-lite (switch only, 1 thread)':<44} {lite/1e6:7.3f} Mpps  ({1e9/lite:.1f} ns/frame)")
print(f"{'veth pair without bridge (sender + veth)':<44} {direct/1e6:7.3f} Mpps  ({1e9/direct:.0f} ns/frame)")
line(f"Linux bridge, bridge-nf-call-iptables={nf}", linux)
if alt:
    line(f"Linux bridge, bridge-nf-call-iptables={nf_alt}", float(alt))
print("All figures: fastest round. ratio = bridge-lite Mpps / Linux end-to-end Mpps (goal >= 10x);")
print("'bridge adds' = 1/linux - 1/direct: what br0 (plus its second veth hop) costs over the bare veth")
print("path, against bridge-lite's ns/frame. bridge-nf-call-iptables: the fresh netns had the value shown.")
PY

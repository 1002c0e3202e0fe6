#!/usr/bin/env bash
# The real-sender benchmark: Linux's TCP stack sends one stream with the stock iperf3 client
# into a netbackd guest through a TAP, beside the Linux veth + bridge yardstick, in one run.
#
# netbackd (release build) runs in a fresh network namespace with one embedded guest and a TAP
# uplink (offloads on: Linux's TSO super-frames cross the TAP whole):
#
#   [rsNNN-nb]  iperf3 -c --> snb0 10.199.60.1 (TAP) == netbackd: switch, netback == guest1 10.199.60.2
#                                                         (dom0-netback thread)     (guest1 thread:
#                                                                                   netfront, smoltcp,
#                                                                                   iperf3 server)
#
# The yardstick: two namespaces joined by veths into a Linux bridge in a third (the dom0 bridge
# of a Xen host), the stock iperf3 server in the receiving one:
#
#   [rsNNN-snd] vs0 10.199.61.1 ==veth== vbs -[rsNNN-br: br0]- vbr ==veth== vr0 10.199.61.2 [rsNNN-rcv]
#
# For each MTU (IP MTU on every interface, and netbackd's --mtu) the two paths run RUNS times,
# interleaved (netbackd first on odd runs, Linux first on even ones, so slow drift of the shared
# machine falls on both). Each run is one stream (-P 1) for SECS seconds after a one-second
# omitted warm-up (-O 1); its figure is the receiver's goodput (sum_received). Printed: every
# run's Gb/s, the medians, the spread (max - min, and as % of the median), the ratio
# netbackd / Linux of the medians, and CPU seconds per domain over the whole iperf3 run (median
# of the runs): netbackd's threads from /proc/PID/task/*/stat grouped by name (dom0-netback: the
# driver domain's backend; guestN: a guest's vCPU; the rest: the main thread), the iperf3
# processes' own CPU (user + system, from wait4), and the whole machine's busy and softirq time
# from /proc/stat (on Linux's path the bridge and veth work runs there and in the iperf3
# processes; the machine figure also holds anything else running on the box).
#
# Usage: sudo bench/scripts/real-sender.sh [--mtus "1500 9000 65000"] [--runs 3] [--seconds 10]
#        (also: bench/scripts/linux-yardstick.sh --real-sender [same options])
# Needs: root, iproute2, ping, iperf3 (apt-get install -y iperf3), python3, cargo. Not run by CI.
set -euo pipefail

MTUS="1500 9000 65000"
RUNS=3
SECS=10
while [[ $# -gt 0 ]]; do
    case "$1" in
        --mtus) MTUS="$2"; shift 2 ;;
        --runs) RUNS="$2"; shift 2 ;;
        --seconds) SECS="$2"; shift 2 ;;
        -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
        *) echo "real-sender.sh: unknown argument $1 (use --mtus \"M ...\" --runs N --seconds S)" >&2; exit 2 ;;
    esac
done
for m in $MTUS; do
    if ! [[ "$m" =~ ^[0-9]+$ ]] || (( m < 576 || m > 65521 )); then
        echo "real-sender.sh: MTU $m is out of range: use 576 to 65521" >&2
        exit 2
    fi
done
if ! [[ "$RUNS" =~ ^[1-9][0-9]*$ && "$SECS" =~ ^[1-9][0-9]*$ ]]; then
    echo "real-sender.sh: --runs and --seconds take whole numbers from 1" >&2
    exit 2
fi

if [[ $EUID -ne 0 ]]; then
    echo "real-sender.sh: needs root (network namespaces, a TAP device); rerun with sudo" >&2
    exit 1
fi
if ! command -v iperf3 >/dev/null 2>&1; then
    echo "real-sender.sh: iperf3 is missing; install it with: apt-get install -y iperf3" >&2
    exit 1
fi
for tool in ip ping python3 cargo; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "real-sender.sh: $tool is missing (apt-get install -y iproute2 iputils-ping python3; cargo from rustup)" >&2
        exit 1
    }
done
if [[ ! -e /dev/net/tun ]]; then
    echo "real-sender.sh: no /dev/net/tun: load the tun module (modprobe tun)" >&2
    exit 1
fi

TAG="rs$$"
NS_NB="$TAG-nb" NS_SND="$TAG-snd" NS_BR="$TAG-br" NS_RCV="$TAG-rcv"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
WORK="$(mktemp -d)"
HELPER="$WORK/helper.py"
RESULTS="$WORK/results.jsonl"
NB_PID="" SERVER_PID=""

cleanup() {
    set +e
    if [[ -n "$NB_PID" ]]; then
        kill -TERM "$NB_PID" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$NB_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$NB_PID" 2>/dev/null
        wait "$NB_PID" 2>/dev/null
    fi
    [[ -n "$SERVER_PID" ]] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    for ns in "$NS_NB" "$NS_SND" "$NS_BR" "$NS_RCV"; do
        ip netns del "$ns" 2>/dev/null
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cat >"$HELPER" <<'PY'
"""Measurement helpers for real-sender.sh: run a command and report its CPU (wait4), snapshot
a process's per-thread CPU and the machine's, parse iperf3's JSON, and print the report."""
import json, os, signal, statistics, sys

TCK = os.sysconf("SC_CLK_TCK")

def rusage(out, argv):
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    # A signal to this wrapper (the script's cleanup) goes to the command too.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda s, _f: os.kill(pid, s))
    _, status, ru = os.wait4(pid, 0)
    with open(out, "w") as f:
        json.dump({"cpu_s": ru.ru_utime + ru.ru_stime}, f)
    sys.exit(os.waitstatus_to_exitcode(status))

def threads(pid):
    """CPU seconds per thread name of process `pid` (utime + stime)."""
    by_name = {}
    base = f"/proc/{pid}/task"
    for tid in os.listdir(base):
        try:
            stat = open(f"{base}/{tid}/stat").read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks = int(fields[11]) + int(fields[12])
        by_name[name] = by_name.get(name, 0) + ticks / TCK
    return by_name

def machine():
    """Whole-machine CPU seconds since boot: busy (all but idle and iowait) and softirq."""
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (f + [0] * 8)[:8]
    return {"busy": (user + nice + system + irq + softirq + steal) / TCK, "softirq": softirq / TCK}

def snapshot(pid):
    return {"threads": threads(pid) if pid else {}, "machine": machine()}

def iperf(path):
    d = json.load(open(path))
    if "error" in d:
        raise SystemExit(f"iperf3 failed: {d['error']}")
    return d["end"]["sum_received"]["bits_per_second"] / 1e9

def probe_ns(text):
    try:
        v = float(text)
    except ValueError:
        return None
    return None if v != v else v

def moved(probes):
    p = [x for x in probes if x is not None]
    return len(p) == 2 and max(p) > 2 * min(p)

def record(args):
    """record PATH MTU RUN before.json after.json iperf.json client.json [server.json|-] [stats.json|-] wall probe0 probe1"""
    path, mtu, run, before, after, ip, client, server, stats, wall, p0, p1 = args
    b, a = json.load(open(before)), json.load(open(after))
    cpu = {}
    for name, s in a["threads"].items():
        key = name if name == "dom0-netback" or name.startswith("guest") else "netbackd other"
        cpu[key] = cpu.get(key, 0) + s - b["threads"].get(name, 0)
    cpu["iperf3 -c"] = json.load(open(client))["cpu_s"]
    if server != "-":
        cpu["iperf3 -s"] = json.load(open(server))["cpu_s"]
    cpu["machine busy"] = a["machine"]["busy"] - b["machine"]["busy"]
    cpu["machine softirq"] = a["machine"]["softirq"] - b["machine"]["softirq"]
    rec = {"path": path, "mtu": int(mtu), "run": int(run), "gbps": iperf(ip), "cpu": cpu,
           "wall": float(wall), "cross_cpu_ns": [probe_ns(p0), probe_ns(p1)]}
    if stats != "-" and os.path.exists(stats):
        s = json.load(open(stats))
        up = s["backend"]["uplinks"][0][2]
        vif = s["backend"]["vifs"][0][1] if s["backend"]["vifs"] else {}
        rec["tap_rx_frames"], rec["tap_rx_bytes"] = up["rx_frames"], up["rx_bytes"]
        rec["vif_rx_packets"] = vif.get("rx_packets", 0)
        rec["vif_rx_gso_frames"] = vif.get("rx_gso_frames", 0)
    print(json.dumps(rec))
    shown = "/".join("?" if v is None else f"{v:.0f}" for v in rec["cross_cpu_ns"])
    flag = "  MOVED" if moved(rec["cross_cpu_ns"]) else ""
    print(f"    {path:8s} MTU {int(mtu):5d} run {run}: {rec['gbps']:7.2f} Gb/s"
          f"  (cross-CPU {shown} ns before/after{flag})", file=sys.stderr)

def report(path, runs, secs):
    recs = [json.loads(l) for l in open(path)]
    print(f"\nReal sender: one TCP stream, stock iperf3 -c, {secs} s (+1 s omitted), "
          f"{runs} interleaved runs per MTU; median (spread = max - min)\n")
    order = ["dom0-netback", "guest1", "netbackd other", "iperf3 -c", "iperf3 -s",
             "machine busy", "machine softirq"]
    for mtu in sorted({r["mtu"] for r in recs}):
        med = {}
        for path in ("netbackd", "linux"):
            rs = [r for r in recs if r["mtu"] == mtu and r["path"] == path]
            if not rs:
                continue
            g = [r["gbps"] for r in rs]
            m = statistics.median(g)
            med[path] = m
            label = "netbackd (TAP, guest)" if path == "netbackd" else "Linux veth+bridge"
            print(f"MTU {mtu} {label}: runs " + ", ".join(f"{x:.2f}" for x in g)
                  + f" Gb/s; median {m:.2f}, spread {max(g) - min(g):.2f}"
                  + (f" ({100 * (max(g) - min(g)) / m:.0f}%)" if m > 0 else ""))
            keys = [k for k in order if any(k in r["cpu"] for r in rs)]
            keys += sorted({k for r in rs for k in r["cpu"]} - set(keys))
            wall = statistics.median(r["wall"] for r in rs)
            cells = []
            for k in keys:
                v = statistics.median(r["cpu"].get(k, 0.0) for r in rs)
                cells.append(f"{k} {v:.2f}")
            print(f"    CPU s over the {wall:.1f} s run (median): " + "; ".join(cells))
            probes = [r.get("cross_cpu_ns", [None, None]) for r in rs]
            shown = ", ".join("/".join("?" if v is None else f"{v:.0f}" for v in p)
                              + ("*" if moved(p) else "") for p in probes)
            print(f"    cross-CPU round trip before/after each run (ns): {shown}"
                  + ("  (* moved more than 2x: the host placed the vCPUs differently"
                     " during that run)" if any(moved(p) for p in probes) else ""))
            if path == "netbackd" and "tap_rx_frames" in rs[0]:
                fr = [r["tap_rx_bytes"] / max(r["tap_rx_frames"], 1) for r in rs]
                gso = [r["vif_rx_gso_frames"] for r in rs]
                pk = [r["vif_rx_packets"] for r in rs]
                print(f"    TAP frames from Linux: mean {statistics.median(fr):.0f} B (median of runs);"
                      f" to the guest: {statistics.median(pk):.0f} packets, "
                      f"{statistics.median(gso):.0f} of them GSO")
        if med.get("linux"):
            print(f"MTU {mtu} ratio netbackd / Linux (medians): {med.get('netbackd', 0) / med['linux']:.2f}x")
        print()

cmd = sys.argv[1]
if cmd == "rusage":
    rusage(sys.argv[2], sys.argv[3:])
elif cmd == "snapshot":
    json.dump(snapshot(int(sys.argv[2])), sys.stdout)
elif cmd == "record":
    record(sys.argv[2:])
elif cmd == "report":
    report(sys.argv[2], sys.argv[3], sys.argv[4])
else:
    raise SystemExit(f"helper: unknown command {cmd}")
PY

# Build first, so compiling never overlaps a measurement.
echo "building netbackd and bench (release)..."
(cd "$ROOT" && cargo build --release -q -p netbackd -p bench)
NETBACKD="$ROOT/target/release/netbackd"
# `bench probe --ns`: the cache-line round trip between the two CPUs, before and after each
# run (60-70 ns on these VMs normally, 300+ ns when the host puts the vCPUs apart).
PROBE=("$ROOT/target/release/bench" probe --ns)

now() { date +%s.%N; }

# One netbackd run at MTU $1, run number $2.
run_netbackd() {
    local mtu="$1" run="$2" stats="$WORK/nb-stats.json"
    ip netns add "$NS_NB"
    ip -n "$NS_NB" link set lo up
    rm -f "$stats"
    ip netns exec "$NS_NB" "$NETBACKD" --guests 1 --mtu "$mtu" --guest-net 10.199.60.0/24 \
        --uplink "tap:snb0,addr=10.199.60.1/24,mtu=$mtu" --stats-json "$stats" --log warn \
        >"$WORK/nb.out" 2>"$WORK/nb.err" &
    NB_PID=$!
    local up=0
    for _ in $(seq 40); do
        if ip netns exec "$NS_NB" ping -c 1 -W 1 10.199.60.2 >/dev/null 2>&1; then up=1; break; fi
        kill -0 "$NB_PID" 2>/dev/null || break
        sleep 0.25
    done
    if [[ $up -ne 1 ]]; then
        echo "real-sender.sh: netbackd's guest never answered ping at MTU $mtu:" >&2
        cat "$WORK/nb.err" >&2
        exit 1
    fi
    local p0; p0=$("${PROBE[@]}")
    python3 "$HELPER" snapshot "$NB_PID" >"$WORK/before.json"
    local t0; t0=$(now)
    ip netns exec "$NS_NB" python3 "$HELPER" rusage "$WORK/client.json" \
        iperf3 -c 10.199.60.2 -P 1 -t "$SECS" -O 1 -J >"$WORK/iperf.json" || {
        echo "real-sender.sh: iperf3 into netbackd's guest failed at MTU $mtu:" >&2
        cat "$WORK/iperf.json" >&2
        exit 1
    }
    local t1; t1=$(now)
    python3 "$HELPER" snapshot "$NB_PID" >"$WORK/after.json"
    local p1; p1=$("${PROBE[@]}")
    kill -USR1 "$NB_PID"
    for _ in $(seq 50); do [[ -s "$stats" ]] && break; sleep 0.1; done
    python3 "$HELPER" record netbackd "$mtu" "$run" "$WORK/before.json" "$WORK/after.json" \
        "$WORK/iperf.json" "$WORK/client.json" - "$stats" "$(python3 -c "print($t1 - $t0)")" \
        "$p0" "$p1" >>"$RESULTS"
    kill -TERM "$NB_PID"
    wait "$NB_PID" || { echo "real-sender.sh: netbackd did not exit cleanly:" >&2; cat "$WORK/nb.err" >&2; exit 1; }
    NB_PID=""
    ip netns del "$NS_NB"
}

# The Linux yardstick's namespaces at MTU $1.
linux_up() {
    local mtu="$1"
    ip netns add "$NS_SND"
    ip netns add "$NS_BR"
    ip netns add "$NS_RCV"
    ip -n "$NS_SND" link add vs0 type veth peer name vbs netns "$NS_BR"
    ip -n "$NS_RCV" link add vr0 type veth peer name vbr netns "$NS_BR"
    ip -n "$NS_BR" link add br0 type bridge
    for dev in vbs vbr; do
        ip -n "$NS_BR" link set "$dev" mtu "$mtu"
        ip -n "$NS_BR" link set "$dev" master br0
        ip -n "$NS_BR" link set "$dev" up
    done
    ip -n "$NS_BR" link set br0 mtu "$mtu"
    ip -n "$NS_BR" link set br0 up
    ip -n "$NS_SND" link set vs0 mtu "$mtu"
    ip -n "$NS_RCV" link set vr0 mtu "$mtu"
    ip -n "$NS_SND" addr add 10.199.61.1/24 dev vs0
    ip -n "$NS_RCV" addr add 10.199.61.2/24 dev vr0
    for ns in "$NS_SND" "$NS_RCV"; do ip -n "$ns" link set lo up; done
    ip -n "$NS_SND" link set vs0 up
    ip -n "$NS_RCV" link set vr0 up
    # The bridge forwards once its ports are out of the listening state (forward delay 0 with
    # STP off, but wait for the first ping to be sure).
    for _ in $(seq 40); do
        ip netns exec "$NS_SND" ping -c 1 -W 1 10.199.61.2 >/dev/null 2>&1 && return 0
        sleep 0.25
    done
    echo "real-sender.sh: the Linux bridge path never passed a ping at MTU $mtu" >&2
    exit 1
}

linux_down() {
    for ns in "$NS_SND" "$NS_BR" "$NS_RCV"; do ip netns del "$ns" 2>/dev/null || true; done
}

# One Linux yardstick run at MTU $1, run number $2.
run_linux() {
    local mtu="$1" run="$2"
    ip netns exec "$NS_RCV" python3 "$HELPER" rusage "$WORK/server.json" \
        iperf3 -s -1 -B 10.199.61.2 >/dev/null 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 50); do
        ip netns exec "$NS_RCV" ss -ltn 2>/dev/null | grep -q ':5201' && break
        sleep 0.1
    done
    local p0; p0=$("${PROBE[@]}")
    python3 "$HELPER" snapshot 0 >"$WORK/before.json"
    local t0; t0=$(now)
    ip netns exec "$NS_SND" python3 "$HELPER" rusage "$WORK/client.json" \
        iperf3 -c 10.199.61.2 -P 1 -t "$SECS" -O 1 -J >"$WORK/iperf.json" || {
        echo "real-sender.sh: iperf3 through the Linux bridge failed at MTU $mtu:" >&2
        cat "$WORK/iperf.json" >&2
        exit 1
    }
    local t1; t1=$(now)
    python3 "$HELPER" snapshot 0 >"$WORK/after.json"
    local p1; p1=$("${PROBE[@]}")
    wait "$SERVER_PID" || true
    SERVER_PID=""
    python3 "$HELPER" record linux "$mtu" "$run" "$WORK/before.json" "$WORK/after.json" \
        "$WORK/iperf.json" "$WORK/client.json" "$WORK/server.json" - "$(python3 -c "print($t1 - $t0)")" \
        "$p0" "$p1" >>"$RESULTS"
}

echo "real sender: MTUs $MTUS, $RUNS runs each, $SECS s per run (+1 s omitted)"
echo "machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
: >"$RESULTS"
for mtu in $MTUS; do
    echo "MTU $mtu:"
    linux_up "$mtu"
    for run in $(seq "$RUNS"); do
        if (( run % 2 == 1 )); then
            run_netbackd "$mtu" "$run"
            run_linux "$mtu" "$run"
        else
            run_linux "$mtu" "$run"
            run_netbackd "$mtu" "$run"
        fi
    done
    linux_down
done
echo "load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
python3 "$HELPER" report "$RESULTS" "$RUNS" "$SECS"
echo "The embedded guest's netfront is this tree's (see netfront's feature negotiation): a guest"
echo "without GSO gets super-frames segmented, and checksums completed, by netback in software."

# dom0's side of the test: netbackd serves Linux's xen-netfront in a PV domU on real Xen.
# Runs the checks in order, each ending in a line "SPLITNET check <name> ok|FAILED: ...", then
# prints one verdict: "SPLITNET-TEST PASS ..." only after every check's data was verified,
# "SPLITNET-TEST FAIL <check> <why>" when a check failed on its own, or
# "SPLITNET-TEST NOVERDICT ..." when every failure came while a dom0 or guest program crashed
# (under emulation such crashes happen at random: see README.md), netbackd's own crashes
# excepted: those are failures. A check that can be repeated is run once more after such a
# failure. The guest runs domU/run.sh, an agent that takes
# commands through xenstore (g below).
# A file "only" beside this script (build.sh writes it from $ONLY) limits the run to the
# checks it lists, for development; such a run ends in "SPLITNET-TEST PARTIAL", never PASS.
export PATH=/sbin:/bin:/usr/bin:/usr/sbin:/usr/lib/xen-4.17/bin
NET=10.9.0
MIB=1048576
LOG=/var/log/netbackd.log
CONSOLE=/var/log/xen/console/guest-domu.log
ONLY=$(cat only 2>/dev/null)
FAILS=""
WHY=""
TAINTED=""
D=""

# NOW: whole seconds of uptime (no fork: programs crash at random here, so fork less)
now() { read -r NOW _ < /proc/uptime; NOW=${NOW%.*}; }
say() { read -r t _ < /proc/uptime; echo "SPLITNET $* (dom0 $t s)"; }

# Crashes of programs (ours or not) in dom0 and in the guest, as their kernels logged them.
crashes() {
    dmesg | grep -E 'segfault at|general protection|traps:|invalid opcode|Kernel panic'
    grep -aE 'segfault at|general protection|traps:|Oops' "$CONSOLE" 2>/dev/null
}
CRASH0=0
# begin: a check starts; crashes from now on taint its failure.
begin() { CRASH0=$(crashes | wc -l); }
crashed() { [ "$(crashes | wc -l)" -gt "$CRASH0" ]; }
# ours_crashed: netbackd is among the programs that crashed since begin: whatever the emulation
# does, that is never counted as flakiness.
ours_crashed() { crashes | tail -n +$((CRASH0 + 1)) | grep -q netbackd; }
ok() { say "check $1 ok: $2"; }
# bad CHECK WHY: a failed check, ours unless a program crashed while it ran.
bad() {
    if crashed && ! ours_crashed; then
        say "check $1 FAILED (a program crashed meanwhile): $2"
        TAINTED="$TAINTED $1"
        return
    fi
    say "check $1 FAILED: $2"
    FAILS="$FAILS $1"
    [ -n "$WHY" ] || WHY="$1 $2"
}
# want N: whether check N runs
want() { [ -z "$ONLY" ] || echo " $ONLY " | grep -q " $1 "; }

diag() {
    echo "--- diagnostics"
    echo "xl list:"; xl list 2>&1
    echo "backend tree:"; xenstore-ls -f /local/domain/0/backend/vif 2>&1 | head -60
    [ -n "$D" ] && { echo "frontend tree:"; xenstore-ls -f "/local/domain/$D/device/vif" 2>&1 | head -40; }
    echo "netbackd log (last 40 lines):"; tail -n 40 "$LOG"
    echo "crashes:"; crashes | head -n 10
    echo "---"
}

# The verdict, once: FAIL if a check failed on its own; NOVERDICT if every failure came with a
# program crash (under emulation those strike at random: the run cannot be judged).
verdict() {
    if [ -z "$FAILS$TAINTED" ]; then
        [ -z "$ONLY" ] || { echo "SPLITNET-TEST PARTIAL ok (only checks $ONLY ran)"; exit 3; }
        echo "SPLITNET-TEST PASS $*"
        exit 0
    fi
    diag
    grep -q 'SPLITNET gdb' "$LOG" && sed -n '/SPLITNET gdb/,$p' "$LOG"
    if [ -z "$FAILS" ]; then
        echo "SPLITNET-TEST NOVERDICT checks failed while a program crashed (emulation flakiness?):$TAINTED: $(crashes | tail -n 1)"
        exit 2
    fi
    [ -z "$ONLY" ] || { echo "SPLITNET-TEST PARTIAL failed: $WHY (only checks $ONLY ran)"; exit 3; }
    echo "SPLITNET-TEST FAIL $WHY (failed checks:$FAILS${TAINTED:+; also failed during a crash:$TAINTED})"
    exit 1
}

# A failure that leaves nothing further to check.
abort() {
    bad "$1" "$2"
    verdict
}

# run N NAME FN [again]: check N, FN sets MSG and returns its outcome; "again" repeats it once
# when it failed while a program crashed.
run() {
    want "$1" || return 0
    begin
    if $3; then ok "$1-$2" "$MSG"; return 0; fi
    if [ "${4:-}" = again ] && crashed && ! ours_crashed; then
        say "check $1-$2 failed while a program crashed ($MSG); once more"
        begin
        if $3; then ok "$1-$2" "$MSG (second try)"; return 0; fi
    fi
    bad "$1-$2" "$MSG"
    # Nothing later can pass without netbackd.
    if ! kill -0 "$NB" 2>/dev/null; then
        abort netbackd "is gone after check $1-$2: $(tail -n 3 "$LOG" | tr '\n' ' ')"
    fi
}

# g SECS CMD...: runs CMD in the guest (domU/run.sh); sets GRC (its exit status, or "timeout")
# and GOUT (the last line of its output).
SEQ=0
g() {
    tmo=$1; shift
    SEQ=$((SEQ + 1))
    # a write whose program crashed is tried again
    xenstore-write "$GP/cmd" "$SEQ $*" || xenstore-write "$GP/cmd" "$SEQ $*"
    now; end=$((NOW + tmo))
    while [ "$NOW" -le "$end" ]; do
        sleep 0.5
        a=$(xenstore-read "$GP/ack" 2>/dev/null)
        case "$a" in
        "$SEQ "*)
            a=${a#* }
            GRC=${a%% *}
            GOUT=${a#"$GRC"}
            GOUT=${GOUT# }
            return 0
            ;;
        esac
        kill -0 "$NB" 2>/dev/null || { GRC=dead; GOUT="netbackd is gone"; return 1; }
        now
    done
    GRC=timeout
    GOUT="the guest did not answer \"$*\" within $tmo s"
    return 1
}

# states DEVID: "<backend state> <frontend state>" of vif $D.DEVID
states() {
    echo "$(xenstore-read "/local/domain/0/backend/vif/$D/$1/state" 2>/dev/null || echo -)" \
        "$(xenstore-read "/local/domain/$D/device/vif/$1/state" 2>/dev/null || echo -)"
}

# wait_connected DEVID SECS: both sides Connected (4).
wait_connected() {
    now; end=$((NOW + $2))
    while [ "$NOW" -le "$end" ]; do
        [ "$(states "$1")" = "4 4" ] && return 0
        sleep 0.5
        now
    done
    return 1
}

# pingg COUNT SIZE: dom0 pings the guest; prints "<received>/<sent>".
pingg() {
    ping -c "$1" -s "$2" -W 5 "$NET.2" 2>&1 |
        grep -o '[0-9]* packets transmitted, [0-9]* packets received' | awk '{print $4 "/" $1}'
}

# ping_both COUNT SIZE: pings each way; at least COUNT-1 replies each way (the first may be
# lost to ARP). Sets PING.
ping_both() {
    g 60 pingd "$1" "$2"
    up=$GOUT
    down=$(pingg "$1" "$2")
    PING="domU->dom0 ${up:-none}, dom0->domU ${down:-none} ($2 B)"
    [ "${up%/*}" -ge $(($1 - 1)) ] 2>/dev/null && [ "${down%/*}" -ge $(($1 - 1)) ] 2>/dev/null
}

# waitfile FILE SIZE STALL: waits until FILE holds SIZE bytes, failing once it has not grown
# for STALL seconds; prints "<sha256> <size>" or why not.
waitfile() {
    last=-1; now; since=$NOW
    while :; do
        n=$(wc -c < "$1")
        [ "$n" -ge "$2" ] && break
        now
        if [ "$n" != "$last" ]; then
            last=$n; since=$NOW
        elif [ $((NOW - since)) -ge "$3" ]; then
            echo "stalled at $n of $2 bytes"; return 1
        fi
        kill -0 "$NB" 2>/dev/null || { echo "netbackd is gone at $n of $2 bytes"; return 1; }
        sleep 0.5
    done
    echo "$(sha256sum "$1" | cut -d' ' -f1) $n"
}

# mkdata FILE SIZE...: random data; FILE.sha when complete.
mkdata() {
    while [ $# -ge 2 ]; do
        head -c "$2" /dev/urandom > "$1"
        echo "$(sha256sum "$1" | cut -d' ' -f1) $(wc -c < "$1")" > "$1.sha"
        shift 2
    done
}
shaof() {
    for i in $(seq 1 240); do [ -s "$1.sha" ] && break; sleep 0.5; done
    cut -d' ' -f1 "$1.sha" 2>/dev/null
}

stat_of() { read -r v < "/sys/class/net/sn0/statistics/$1"; echo "$v"; }

# A fresh TCP port for every transfer: a retried check must not meet the listener of its
# first try.
PORT=5000

# tcp_up FILE SIZE: the guest sends its FILE (SIZE bytes, made by its mkdata) to dom0; sha256
# compared. Sets XFER to what happened and AVG to the frames' average size on the TAP.
tcp_up() {
    PORT=$((PORT + 1))
    set -- "$PORT" "$@"
    AVG=0
    rm -f /tmp/got; : > /tmp/got
    (sleep 100000 | nc -l -p "$1" > /tmp/got 2>/dev/null) >/dev/null 2>&1 &
    g 120 shaof "$2" 110
    [ "$GRC" = 0 ] || { XFER="guest's data: $GOUT"; return 1; }
    sha=${GOUT%% *}
    rx0=$(stat_of rx_bytes); rp0=$(stat_of rx_packets); now; t0=$NOW
    g 300 send "$2" "$1" 280
    sent="$GRC: $GOUT"
    got=$(waitfile /tmp/got "$3" 10)
    now; t=$((NOW - t0))
    frames=$(($(stat_of rx_packets) - rp0))
    AVG=$((($(stat_of rx_bytes) - rx0) / (frames > 0 ? frames : 1)))
    if [ "${got%% *}" != "$sha" ]; then
        XFER="guest's nc: $sent; dom0 got: $got in ~${t} s, $frames frames of $AVG B on average; sha256 wanted $sha"
        return 1
    fi
    XFER="${got#* } bytes in ~${t} s, $frames frames of $AVG B on average, sha256 $sha"
}

# tcp_down FILE SIZE: dom0 sends its FILE (SIZE bytes) to the guest; sha256 compared.
tcp_down() {
    PORT=$((PORT + 1))
    set -- "$PORT" "$@"
    AVG=0
    sha=$(shaof "$2")
    g 20 listen "$1" /tmp/down || { XFER="listen: $GOUT"; return 1; }
    tx0=$(stat_of tx_bytes); tp0=$(stat_of tx_packets); now; t0=$NOW
    (timeout 280 nc -w 10 "$NET.2" "$1" < "$2" > /dev/null 2>&1) &
    g 300 waitfile /tmp/down "$3" 10
    got=$GOUT
    now; t=$((NOW - t0))
    frames=$(($(stat_of tx_packets) - tp0))
    AVG=$((($(stat_of tx_bytes) - tx0) / (frames > 0 ? frames : 1)))
    if [ "$GRC" != 0 ] || [ "${got%% *}" != "$sha" ]; then
        XFER="the guest got: $got (in ~${t} s), $frames frames of $AVG B on average; sha256 wanted $sha"
        return 1
    fi
    XFER="${got#* } bytes in ~${t} s, $frames frames of $AVG B on average, sha256 $sha"
}

# ---- the checks (each sets MSG)

check_ping() {
    ping_both 4 56
    r=$?
    MSG=$PING
    return $r
}

check_tcp_up() {
    tcp_up /tmp/u16 $((16 * MIB))
    r=$?
    MSG=$XFER
    return $r
}

check_tcp_down() {
    tcp_down /tmp/d16 $((16 * MIB))
    r=$?
    MSG=$XFER
    return $r
}

check_mtu9000() {
    why=""
    ip link set sn0 mtu 9000 || why="ip link set sn0 mtu 9000 failed; "
    g 20 mtu 9000
    [ "$GRC" = 0 ] || why="${why}guest mtu: $GOUT; "
    # 8000-byte pings, 3 each way: at MTU 9000 one frame per echo request or reply (6 each way
    # on the TAP, a few more for ARP); fragmented at 1500 they would take 6 frames each (36).
    # TCP's frame sizes prove nothing here: the TAP carries TSO super-frames at any MTU.
    rp0=$(stat_of rx_packets); tp0=$(stat_of tx_packets)
    ping_both 3 8000 || why="${why}ping $PING; "
    rf=$(($(stat_of rx_packets) - rp0)); tf=$(($(stat_of tx_packets) - tp0))
    jping="$PING; $rf frames from the guest and $tf to it on the TAP"
    [ "$rf" -le 12 ] && [ "$tf" -le 12 ] || why="${why}8000-byte pings took $rf frames from the guest and $tf to it (fragmented?); "
    say "5-mtu9000: ping $jping"
    tcp_up /tmp/u4 $((4 * MIB)) || why="${why}up: $XFER; "
    xup=$XFER
    tcp_down /tmp/d4 $((4 * MIB)) || why="${why}down: $XFER; "
    xdown=$XFER
    ip link set sn0 mtu 1500
    g 20 mtu 1500
    MSG="ping $jping; 4 MiB domU->dom0: $xup; 4 MiB dom0->domU: $xdown"
    [ -z "$why" ] || { MSG=$why; return 1; }
}

# xl network-detach, then xl network-attach (space-separated settings), traffic again
check_detach_attach() {
    why=""
    now; t0=$NOW
    xl network-detach domu 0 > /tmp/xl-detach.log 2>&1 ||
        why="xl network-detach failed: $(tail -n 2 /tmp/xl-detach.log | tr '\n' ' '); "
    for i in $(seq 1 30); do
        xenstore-exists "/local/domain/0/backend/vif/$D/0" 2>/dev/null || break
        sleep 0.5
    done
    xenstore-exists "/local/domain/0/backend/vif/$D/0" 2>/dev/null &&
        why="${why}backend directory still there ($(states 0)); "
    now; detach="detached in $((NOW - t0)) s"
    say "6-detach-attach: $detach"
    g 40 gone
    [ "$GRC" = 0 ] || why="${why}guest: $GOUT; "
    grep -q "vif$D.0: device removed" "$LOG" || why="${why}netbackd did not log the device's removal; "
    now; t0=$NOW
    xl network-attach domu mac=00:16:3e:00:00:02 script=vif-splitnet > /tmp/xl-attach.log 2>&1 ||
        why="${why}xl network-attach failed: $(tail -n 2 /tmp/xl-attach.log | tr '\n' ' '); "
    DEV=$(xenstore-list "/local/domain/0/backend/vif/$D" 2>/dev/null | tail -n 1)
    DEV=${DEV:-0}
    if wait_connected "$DEV" 90; then
        now; say "6-detach-attach: vif $D.$DEV Connected $((NOW - t0)) s after xl network-attach"
        g 60 up
        [ "$GRC" = 0 ] || why="${why}guest up after attach: $GOUT; "
        ping_both 4 56 || why="${why}ping $PING; "
        tcp_up /tmp/u1 $MIB || why="${why}1 MiB domU->dom0: $XFER; "
    else
        why="${why}vif $D.$DEV states $(states "$DEV") 90 s after attach; "
    fi
    MSG="$detach; re-attached as devid $DEV and Connected; ping $PING; 1 MiB domU->dom0: $XFER"
    [ -z "$why" ] || { MSG=$why; return 1; }
}

# xl destroy during a transfer; netbackd keeps serving and releases every mapping
maps() { grep -c gntdev "/proc/$NB/maps" 2>/dev/null; }
check_destroy() {
    why=""
    PORT=$((PORT + 1))
    rm -f /tmp/stream; : > /tmp/stream
    (sleep 100000 | nc -l -p "$PORT" > /tmp/stream 2>/dev/null) >/dev/null 2>&1 &
    sleep 1
    g 20 stream "$PORT"
    ping -i 0.2 -W 1 "$NET.2" > /tmp/ping7 2>&1 &
    pinger=$!
    sleep 3
    s1=$(wc -c < /tmp/stream); p1=$(grep -c 'bytes from' /tmp/ping7)
    sleep 2
    s2=$(wc -c < /tmp/stream); p2=$(grep -c 'bytes from' /tmp/ping7)
    m0=$(maps)
    inflight="TCP stream $s1 -> $s2 bytes, ping replies $p1 -> $p2, $m0 gntdev mappings"
    say "7-destroy: in flight: $inflight"
    [ "$s2" -gt "$s1" ] || why="the guest's TCP stream was not flowing ($inflight); "
    [ "${m0:-0}" -gt 0 ] || why="${why}netbackd held no gntdev mapping before the destroy ($inflight); "
    now; t0=$NOW
    xl destroy domu > /tmp/xl-destroy.log 2>&1 ||
        why="${why}xl destroy failed: $(tail -n 2 /tmp/xl-destroy.log | tr '\n' ' '); "
    now; destroy="xl destroy took $((NOW - t0)) s"
    kill "$pinger" 2>/dev/null
    gonein=""
    for i in $(seq 1 60); do
        if ! xl list 2>/dev/null | grep -qE '^(domu|\(null\)) '; then now; gonein=$((NOW - t0)); break; fi
        sleep 0.5
    done
    [ -n "$gonein" ] ||
        why="${why}domain still listed 30 s after xl destroy: $(xl list 2>&1 | tail -n +3 | tr -s ' ' | tr '\n' ';'); "
    m=$(maps)
    [ "$m" = 0 ] || why="${why}netbackd still has $m gntdev mappings; "
    report=""
    if kill -0 "$NB" 2>/dev/null; then
        n0=$(grep -c 'netbackd counters' "$LOG")
        kill -USR1 "$NB"
        for i in $(seq 1 20); do [ "$(grep -c 'netbackd counters' "$LOG")" -gt "$n0" ] && break; sleep 0.5; done
        sleep 0.5
        report=$(grep 'netbackd counters' "$LOG" | tail -n 1)
        case "$report" in
        *": 0 vif(s), 0 device(s)"*) ;;
        *) why="${why}netbackd's report after the destroy: ${report:-none}; " ;;
        esac
    else
        why="${why}netbackd is gone: $(tail -n 3 "$LOG" | tr '\n' ' '); "
    fi
    MSG="in flight: $inflight; $destroy; gone from xl list after $gonein s; 0 gntdev mappings; netbackd serving: ${report#*: }"
    [ -z "$why" ] || { MSG=$why; return 1; }
}

# netbackd stops cleanly on SIGTERM (--close-on-exit: every device closed, nothing left mapped)
check_shutdown() {
    kill -TERM "$NB"
    for i in $(seq 1 30); do kill -0 "$NB" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$NB" 2>/dev/null; then
        MSG="netbackd still running 15 s after SIGTERM"
        return 1
    fi
    if [ -n "${GDBPID:-}" ]; then
        wait "$GDBPID"
        grep -q 'exited normally' "$LOG" && rc=0 || rc="not 0 ($(grep -m1 'exited with code' "$LOG"))"
    else
        wait "$NB"
        rc=$?
    fi
    exitline=$(grep 'exit: ' "$LOG" | tail -n 1 | sed 's/.*exit: //')
    MSG="exit status $rc; ${exitline:-no exit line}"
    [ "$rc" = 0 ] && echo "$exitline" | grep -q ' 0 unmaps failed'
}

# ---- the run

say "start${ONLY:+ (only checks $ONLY)}; cpu flags:$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx|avx2|xsave|fsgsbase|smap|pcid)$' | tr '\n' ' ')"
begin
mkdata /tmp/d16 $((16 * MIB)) /tmp/d4 $((4 * MIB)) &

# --close-on-exit: check 8 is a clean stop that closes every device (without it a stop leaves
# the vifs connected for the next netbackd).
NBARGS="--xen --uplink tap:sn0,addr=$NET.1/24 --log info --close-on-exit"
if [ -f gdb ]; then
    # build.sh DEBUG_GDB=1: a crash prints a backtrace, the registers and the faulting code
    gdb -q -batch -ex 'handle SIGUSR1 nostop noprint pass' -ex 'handle SIGTERM nostop noprint pass' \
        -ex 'handle SIGPIPE nostop noprint pass' -ex run -ex 'echo SPLITNET gdb: netbackd stopped\n' \
        -ex 'bt 30' -ex 'info registers' -ex 'x/6i $pc-12' -ex kill \
        --args netbackd $NBARGS > "$LOG" 2>&1 &
    GDBPID=$!
    for i in $(seq 1 60); do NB=$(pidof netbackd) && break; sleep 0.5; done
else
    netbackd $NBARGS > "$LOG" 2>&1 &
    NB=$!
fi
for i in $(seq 1 60); do
    ip addr show sn0 2>/dev/null | grep -q "$NET.1/24" && break
    kill -0 "$NB" 2>/dev/null || break
    sleep 0.5
done
ip addr show sn0 2>/dev/null | grep -q "$NET.1/24" || abort 0-netbackd "did not bring up sn0: $(tail -n 3 "$LOG")"
say "netbackd running as pid $NB: $(grep -m1 'real Xen' "$LOG" | sed 's/^[^]]*\] //')"

# 1: both ends Connected (4), as xenstore says in dom0 (not repeatable: it is the setup)
xl create /guest/domu.cfg > /var/log/xen/xl-create.log 2>&1 ||
    abort 1-connected "xl create failed: $(tail -n 3 /var/log/xen/xl-create.log)"
D=$(xl domid domu)
GP=/local/domain/$D/data/splitnet
# the guest's console, live on dom0's (and so in the serial log), prefixed
(tail -n +1 -F "$CONSOLE" 2>/dev/null | sed 's/^/domU| /') &
say "domain $D created"
if wait_connected 0 120; then
    hs=$(xenstore-read "/local/domain/0/backend/vif/$D/0/hotplug-status" 2>/dev/null)
    [ "$hs" = connected ] ||
        abort 1-connected "both ends Connected but hotplug-status is '${hs:-missing}', not 'connected' (did vif-splitnet run? $(xenstore-read "/local/domain/0/backend/vif/$D/0/hotplug-error" 2>/dev/null))"
    ok 1-connected "backend state 4, frontend state 4, hotplug-status connected"
else
    abort 1-connected "backend/frontend states are $(states 0) after 120 s"
fi
g 90 up || g 60 up || abort 1-connected "$GOUT"
[ "$GRC" = 0 ] || abort 1-connected "the guest could not configure its interface: $GOUT"
say "guest interface: $GOUT"
g 20 mkdata /tmp/u16 $((16 * MIB)) /tmp/u4 $((4 * MIB)) /tmp/u1 $MIB

run 2 ping check_ping again
run 3 tcp-domU-to-dom0 check_tcp_up again           # netback's tx path (checksum offload, TSO)
run 4 tcp-dom0-to-domU check_tcp_down again         # the rx path: copies into guest buffers
run 5 mtu9000 check_mtu9000 again                   # the guest needs feature-sg for it
run 6 detach-attach check_detach_attach
run 7 destroy check_destroy
run 8 shutdown check_shutdown

echo "--- netbackd log"
cat "$LOG"
echo "---"
verdict "netbackd served Linux xen-netfront: both ends Connected, ping both ways, 16 MiB TCP each way, MTU 9000 both ways, detach and re-attach, destroy mid-transfer with every mapping released, clean exit (all data sha256-checked)"

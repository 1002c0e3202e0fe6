# The guest's side of the test: an agent that runs what dom0's run.sh asks for and answers
# through xenstore, in the guest's own data/splitnet/ directory (the guest may write there and
# dom0 reads it). A command arrives in data/splitnet/cmd as "<seq> <words>"; the answer goes to
# data/splitnet/ack as "<seq> <exit status> <last line of output>", and to the console.
# Every command bounds its own time, so the agent always comes back for the next one.
# The guest's network is $NET.0/24 (it is $NET.2, dom0 $NET.1): splitnet.net=A.B.C on the kernel
# command line (each guest's config names its own), else 10.9.0.
NET=10.9.0
for w in $(cat /proc/cmdline); do
    case "$w" in splitnet.net=*) NET=${w#splitnet.net=} ;; esac
done

# Fork little: programs crash at random under this emulation.
now() { read -r t _ < /proc/uptime; echo "$t"; }
secs() { read -r t _ < /proc/uptime; echo "${t%.*}"; }

# The interface xen-netfront made (eth0, unless a re-attach numbered it otherwise).
iface() {
    for d in /sys/class/net/eth*; do
        [ -e "$d" ] && { basename "$d"; return 0; }
    done
    return 1
}

# up [MTU]: waits up to 30 s for netfront's interface, brings it up with $NET.2/24 (and MTU).
up() {
    n=""
    for i in $(seq 1 150); do n=$(iface) && break; sleep 0.2; done
    [ -n "$n" ] || { echo "no eth interface after 30 s"; return 1; }
    [ -z "${1:-}" ] || ip link set "$n" mtu "$1" || return 1
    ip link set "$n" up && ip addr add "$NET.2/24" dev "$n" || return 1
    echo "$n mac $(cat /sys/class/net/"$n"/address) mtu $(cat /sys/class/net/"$n"/mtu)"
}

# gone: waits up to 30 s for netfront's interface to disappear (after a detach).
gone() {
    for i in $(seq 1 150); do iface >/dev/null || { echo "no eth interface"; return 0; }; sleep 0.2; done
    echo "$(iface) still there after 30 s"; return 1
}

# mtu N
mtu() {
    n=$(iface) || { echo "no interface"; return 1; }
    ip link set "$n" mtu "$1" || return 1
    echo "$n mtu $(cat /sys/class/net/"$n"/mtu)"
}

# pingd COUNT SIZE: pings dom0, prints "<received>/<sent>" (or what ping said instead).
pingd() {
    out=$(ping -c "$1" -s "$2" -W 5 "$NET.1" 2>&1)
    r=$(echo "$out" | grep -o '[0-9]* packets transmitted, [0-9]* packets received' |
        awk '{print $4 "/" $1}')
    [ -n "$r" ] || { echo "ping said: $(echo "$out" | tail -n 2 | tr '\n' ' ')"; return 1; }
    echo "$r"
}

# mkdata FILE SIZE [FILE SIZE...]: random data, made in the background (dom0 asks for it early,
# while other checks run); FILE.sha gets "<sha256> <size>" when FILE is complete.
mkdata() {
    (
        while [ $# -ge 2 ]; do
            head -c "$2" /dev/urandom > "$1"
            echo "$(sha256sum "$1" | cut -d' ' -f1) $(wc -c < "$1")" > "$1.sha"
            shift 2
        done
    ) >/dev/null 2>&1 &
    echo "making $*"
}

# shaof FILE SECS: waits up to SECS for mkdata's FILE; prints "<sha256> <size>".
shaof() {
    end=$(($(secs) + $2))
    until [ -s "$1.sha" ]; do
        [ "$(secs)" -lt "$end" ] || { echo "$1 not made within $2 s"; return 1; }
        sleep 0.5
    done
    cat "$1.sha"
}

# send FILE PORT SECS: sends FILE to dom0's PORT over TCP, within SECS.
send() {
    t0=$(now)
    timeout "$3" nc -w 10 "$NET.1" "$2" < "$1"; rc=$?
    echo "nc exit $rc after $(awk "BEGIN{print $(now)-$t0}") s"
    return $rc
}

# sendbg FILE PORT SECS: as send, in the background (dom0 times the arrival)
sendbg() {
    (timeout "$3" nc -w 10 "$NET.1" "$2" < "$1") >/dev/null 2>&1 &
    echo "sending $1 to $2"
}

# ifinfo: the interface's name and ifindex (a detach and re-attach makes a new one)
ifinfo() {
    n=$(iface) || { echo "no interface"; return 1; }
    echo "$n ifindex $(cat /sys/class/net/"$n"/ifindex) mtu $(cat /sys/class/net/"$n"/mtu)"
}

# ethstats: the interface's counters, on one line
ethstats() {
    n=$(iface) || { echo "no interface"; return 1; }
    out="$n"
    for c in rx_packets rx_bytes rx_dropped rx_errors tx_packets tx_bytes tx_dropped tx_errors; do
        out="$out $c=$(cat /sys/class/net/"$n"/statistics/$c)"
    done
    echo "$out"
}

# listen PORT FILE: a one-connection TCP listener writing into FILE, in the background
# (busybox nc stops reading its socket when its own stdin ends: keep stdin open).
listen() {
    rm -f "$2"; : > "$2"
    (sleep 100000 | nc -l -p "$1" > "$2" 2>/dev/null) >/dev/null 2>&1 &
    echo "listening on $1"
}

# waitfile FILE SIZE STALL: waits until FILE holds SIZE bytes, failing once it has not grown
# for STALL seconds; prints "<sha256> <size>".
waitfile() {
    last=-1; since=$(secs)
    while :; do
        n=$(wc -c < "$1")
        [ "$n" -ge "$2" ] && break
        if [ "$n" != "$last" ]; then
            last=$n; since=$(secs)
        elif [ $(($(secs) - since)) -ge "$3" ]; then
            echo "stalled at $n of $2 bytes ($(awk '/^MemAvailable/{print $2}' /proc/meminfo) KiB of memory available)"; return 1
        fi
        sleep 0.5
    done
    echo "$(sha256sum "$1" | cut -d' ' -f1) $n"
}

# timedwait FILE SIZE STALL: as waitfile, watching FILE every 0.2 s (up to 90 s for the first
# byte); prints "<sha256> <size> <centiseconds from the first byte seen to the last> <bytes
# already there at the first look>".
timedwait() {
    last=0; since=$(secs); t0=""; n0=0; stall=90
    while :; do
        n=$(wc -c < "$1")
        read -r t _ < /proc/uptime; t=${t%.*}${t#*.}
        if [ -z "$t0" ] && [ "$n" -gt 0 ]; then t0=$t; n0=$n; stall=$3; fi
        [ "$n" -ge "$2" ] && break
        if [ "$n" != "$last" ]; then
            last=$n; since=$(secs)
        elif [ $(($(secs) - since)) -ge "$stall" ]; then
            echo "stalled at $n of $2 bytes ($(awk '/^MemAvailable/{print $2}' /proc/meminfo) KiB of memory available)"; return 1
        fi
        sleep 0.2
    done
    echo "$(sha256sum "$1" | cut -d' ' -f1) $n $((t - t0)) $n0"
}

# timedlisten PORT FILE SIZE STALL: listen, with timedwait watching FILE from now on, in the
# background; its answer goes to FILE.timed (see timed)
timedlisten() {
    # (not "listen ... >/dev/null": busybox sh would hand the background nc the agent's own
    # output, and the agent would wait for it)
    rm -f "$2" "$2.timed"; : > "$2"
    (sleep 100000 | nc -l -p "$1" > "$2" 2>/dev/null) >/dev/null 2>&1 &
    (timedwait "$2" "$3" "$4" > "$2.tmp"; mv "$2.tmp" "$2.timed") >/dev/null 2>&1 &
    echo "listening on $1, timing $2"
}

# ptimedwait TOTAL STALL FILE...: as timedwait, for the sum of the FILEs' sizes; prints
# "<sha256s, comma-separated> <total> <centiseconds first byte to last> <bytes at first look>"
ptimedwait() {
    want=$1; stall0=$2; shift 2
    last=0; since=$(secs); t0=""; n0=0; stall=90
    while :; do
        if [ $# = 1 ]; then n=$(wc -c < "$1"); else n=$(wc -c "$@" | tail -n 1); n=${n% *}; n=${n##* }; fi
        read -r t _ < /proc/uptime; t=${t%.*}${t#*.}
        if [ -z "$t0" ] && [ "$n" -gt 0 ]; then t0=$t; n0=$n; stall=$stall0; fi
        [ "$n" -ge "$want" ] && break
        if [ "$n" != "$last" ]; then
            last=$n; since=$(secs)
        elif [ $(($(secs) - since)) -ge "$stall" ]; then
            echo "stalled at $n of $want bytes"; return 1
        fi
        sleep 0.2
    done
    shas=""
    for f in "$@"; do shas="$shas,$(sha256sum "$f" | cut -d' ' -f1)"; done
    echo "${shas#,} $n $((t - t0)) $n0"
}

# ptimedlisten PORT TOTAL STALL FILE...: plisten, with ptimedwait watching the FILEs, in the
# background; its answer goes to /tmp/pt.timed (see timed)
ptimedlisten() {
    p0=$1; want=$2; stall=$3; shift 3
    p=$p0
    rm -f /tmp/pt.timed
    for f in "$@"; do
        rm -f "$f"; : > "$f"
        (sleep 100000 | nc -l -p "$p" > "$f" 2>/dev/null) >/dev/null 2>&1 &
        p=$((p + 1))
    done
    (ptimedwait "$want" "$stall" "$@" > /tmp/pt.tmp; mv /tmp/pt.tmp /tmp/pt.timed) >/dev/null 2>&1 &
    echo "listening on $# ports from $p0, timing them"
}

# timed FILE SECS: waits up to SECS for timedlisten's answer about FILE, and prints it
timed() {
    end=$(($(secs) + $2))
    until [ -e "$1.timed" ]; do
        [ "$(secs)" -lt "$end" ] || { echo "no answer about $1 within $2 s"; return 1; }
        sleep 0.5
    done
    cat "$1.timed"
    case "$(cat "$1.timed")" in stalled*) return 1 ;; esac
}

# queues: the interface's queues as Linux made them (netfront: one pair per negotiated queue)
queues() {
    n=$(iface) || { echo "no interface"; return 1; }
    echo $(ls /sys/class/net/"$n"/queues)
}

# psend PORT FILE...: sends each FILE to dom0's PORT, PORT+1, ... at once, in the background
psend() {
    p0=$1; p=$1; shift
    for f in "$@"; do
        (timeout 280 nc -w 10 "$NET.1" "$p" < "$f") >/dev/null 2>&1 &
        p=$((p + 1))
    done
    echo "sending $# files from port $p0"
}

# plisten PORT FILE...: a one-connection listener on PORT, PORT+1, ... for each FILE
plisten() {
    p0=$1; p=$1; shift
    for f in "$@"; do
        rm -f "$f"; : > "$f"
        (sleep 100000 | nc -l -p "$p" > "$f" 2>/dev/null) >/dev/null 2>&1 &
        p=$((p + 1))
    done
    echo "listening on $# ports from $p0"
}

# pwait SIZE STALL FILE...: waits for every FILE to hold SIZE bytes; prints their sha256s on
# one line (or why not)
pwait() {
    size=$1; stall=$2; shift 2
    out=""
    for f in "$@"; do
        r=$(waitfile "$f" "$size" "$stall") || { echo "$f: $r"; return 1; }
        out="$out ${r%% *}"
    done
    echo "$out"
}

# stream PORT: sends zeros to dom0's PORT until the domain dies.
stream() {
    (nc -w 10 "$NET.1" "$1" < /dev/zero) >/dev/null 2>&1 &
    echo "streaming to $1"
}

for i in $(seq 1 50); do [ -e /dev/xen/xenbus ] && break; sleep 0.2; done
last=$(cat /tmp/agent.last 2>/dev/null)
xenstore-write data/splitnet/ready "$(now)" ||
    echo "SPLITNET domU cannot write data/splitnet in xenstore: dom0 cannot drive this guest"
echo "SPLITNET domU agent ready at $(now) s"
while :; do
    c=$(xenstore-read data/splitnet/cmd 2>/dev/null) || c=""
    seq=${c%% *}
    if [ -n "$c" ] && [ "$seq" != "$last" ]; then
        last=$seq
        echo "$seq" > /tmp/agent.last
        cmd=${c#* }
        out=$(eval "$cmd" 2>&1)
        rc=$?
        line=$(echo "$out" | tail -n 1)
        echo "SPLITNET domU [$seq] $cmd -> $rc $line (at $(now) s)"
        # a write whose program crashed (emulation) is tried again
        xenstore-write data/splitnet/ack "$seq $rc $line" ||
            xenstore-write data/splitnet/ack "$seq $rc $line"
    fi
    sleep 0.5
done

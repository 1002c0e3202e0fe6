#!/bin/bash
# Builds what boot.sh boots: Xen 4.17 (Debian's hypervisor), a Debian 6.1 PV dom0 running
# netbackd, and a PV domU with Linux's xen-netfront, all as initramfs images (no disks).
# Run as root on Debian 12 (it installs qemu, busybox-static, cpio and the Xen tools with apt).
#
#   WORK=/tmp/splitnet-xen NETBACKD=target/release/netbackd [ONLY="6 7"] [DEBUG_GDB=1] ./build.sh
#   ... [BENCH="64 3"] ./build.sh
#
# dom0/ is copied to /payload in dom0 (its run.sh runs the checks and prints the verdict);
# domU/ to /payload in the guest (its run.sh answers dom0's commands). dom0 gets Xen's stock
# vif-bridge hotplug script (and the scripts it sources) from the xen-utils-common package, and
# Linux's bridge module, for the host-mode checks.
# BENCH="MIB RUNS": no checks, only transfer times of MIB MiB each way (1 stream, then 4),
# RUNS times with netbackd and RUNS times with Linux's own xen-netback, alternating (see
# dom0/run.sh's bench and README.md).
# Exit 77 when what it needs from Debian cannot be had (no mirror, a package gone): the
# environment's fault, not the test's.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${WORK:-/tmp/splitnet-xen}
: "${NETBACKD:?set NETBACKD to the netbackd binary (cargo build --release -p netbackd)}"
NETBACKD=$(realpath "$NETBACKD")
VIF_SCRIPT=$(realpath "$HERE/../../scripts/vif-splitnet")
mkdir -p "$WORK"; cd "$WORK"
export DEBIAN_FRONTEND=noninteractive

unavailable() {
    echo "xen-nested: SKIP: $* (check that a Debian 12 mirror is reachable: apt-get update)" >&2
    exit 77
}
need=()
for p in qemu-system-x86 busybox-static cpio xen-utils-4.17 xen-utils-common xenstore-utils; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -q >/dev/null || unavailable "apt-get update failed"
    apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null ||
        unavailable "apt-get install ${need[*]} failed"
fi

# KERNEL_PKG (e.g. linux-image-6.1.0-47-amd64) pins the kernel; by default the current one
kernel_pkg() {
    KPKG=${KERNEL_PKG:-$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}')}
    KV=${KPKG#linux-image-}
}
kernel_pkg
if [ ! -f xen.elf ] || [ ! -d kroot/lib/modules/"$KV" ] || [ ! -f vmlinuz."$KV" ]; then
    rm -rf kroot xroot ./*.deb
    if ! apt-get download "$KPKG" xen-hypervisor-4.17-amd64 >/dev/null 2>download.err; then
        # Stale package lists name a kernel the mirror no longer has: refresh them, once.
        apt-get update -q >/dev/null 2>&1 || unavailable "apt-get update failed"
        kernel_pkg
        apt-get download "$KPKG" xen-hypervisor-4.17-amd64 >/dev/null 2>download.err ||
            unavailable "cannot download $KPKG and xen-hypervisor-4.17-amd64: $(tail -n 1 download.err)"
    fi
    mkdir kroot xroot
    dpkg-deb -x "${KPKG}"_*.deb kroot
    dpkg-deb -x xen-hypervisor-4.17-amd64_*.deb xroot
    zcat xroot/boot/xen-4.17-amd64.gz > xen.elf   # multiboot ELF: qemu -kernel loads it as it is
    cp kroot/boot/vmlinuz-"$KV" vmlinuz."$KV"
    rm -f ./*.deb
fi
cp vmlinuz."$KV" vmlinuz
M=kroot/lib/modules/$KV/kernel

# copy an ELF and the shared libraries it needs into root $1
add_elf() {
    local root=$1 f=$2 dest=${3:-$2} l
    mkdir -p "$root$(dirname "$dest")"; cp -L "$f" "$root$dest"
    if ldd "$f" >/dev/null 2>&1; then
        for l in $(ldd "$f" | grep -o '/[^ ]*'); do mkdir -p "$root$(dirname "$l")"; cp -L "$l" "$root$l"; done
    fi
}

rm -rf d0 du
mkdir -p d0/{bin,sbin,proc,sys,dev,tmp,run,root,guest,lib/modules,etc/xen/scripts} \
         d0/var/{run/xen,lib/xen,lib/xenstored,log/xen} d0/usr/{bin,sbin}
cp /bin/busybox d0/bin/
# tun: netbackd's uplinks and host-mode vif netdevs are TAP devices; llc, stp, bridge (in
# that order): dom0's Linux bridge xenbr0. dom0's init loads them in the order of load.list.
mods=(xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs tun llc stp bridge)
for m in "${mods[@]}"; do
    cp "$(find "$M" -name "$m.ko")" d0/lib/modules/
    echo "$m.ko" >> d0/lib/modules/load.list
done
# BENCH: Linux's own xen-netback as well, not loaded at boot: the bench loads it and removes it
# in turn with netbackd
[ -z "${BENCH:-}" ] || cp "$(find "$M" -name xen-netback.ko)" d0/lib/modules/
for b in /usr/lib/xen-4.17/bin/{xl,xenstored,xenconsoled,xen-init-dom0,libxl-save-helper} /usr/bin/xenstore /bin/bash; do
    add_elf d0 "$b"
done
cp -L /lib/x86_64-linux-gnu/libgcc_s.so.1 d0/lib/x86_64-linux-gnu/   # xl aborts at exit without it
for n in read write ls list exists rm chmod watch; do ln -sf /usr/bin/xenstore d0/usr/bin/xenstore-$n; done
ln -sf /usr/lib/xen-4.17/bin/xl d0/sbin/xl
cp /etc/xen/xl.conf d0/etc/xen/
install -m755 "$VIF_SCRIPT" d0/etc/xen/scripts/vif-splitnet
# Xen's own vif-bridge, as Debian installs it, and what it sources; it runs on busybox's ip,
# brctl, logger and expr (iptables only with ip=, which Debian's copy disables anyway).
for f in vif-bridge vif-common.sh xen-hotplug-common.sh xen-network-common.sh \
         xen-script-common.sh locking.sh logging.sh hotplugpath.sh; do
    cp -a /etc/xen/scripts/"$f" d0/etc/xen/scripts/
done
# netbackd without its DWARF (symbols stay for backtraces): a smaller initramfs boots faster
add_elf d0 "$NETBACKD" /usr/sbin/netbackd
strip --strip-debug d0/usr/sbin/netbackd
install -m755 "$HERE/dom0-init.sh" d0/init
cp -a "$HERE/dom0" d0/payload
# ONLY="6 7": run only those checks (development; such a run never passes)
[ -n "${ONLY:-}" ] && echo "$ONLY" > d0/payload/only
[ -n "${BENCH:-}" ] && echo "$BENCH" > d0/payload/bench
# DEBUG_GDB=1: netbackd runs under gdb (Debian's gdb-minimal), which prints a backtrace and
# the registers should it crash
if [ "${DEBUG_GDB:-0}" = 1 ]; then
    if [ ! -x gdbroot/usr/bin/gdb ]; then
        apt-get download gdb-minimal >/dev/null 2>&1 || unavailable "cannot download gdb-minimal"
        rm -rf gdbroot; mkdir gdbroot; dpkg-deb -x gdb-minimal_*.deb gdbroot; rm -f gdb-minimal_*.deb
    fi
    add_elf d0 gdbroot/usr/bin/gdb /usr/bin/gdb
    touch d0/payload/gdb
fi

mkdir -p du/{bin,proc,sys,dev,tmp,lib/modules,usr/bin}
cp /bin/busybox du/bin/
cp "$(find "$M" -name xen-netfront.ko)" du/lib/modules/
# the guest talks to dom0's test driver through xenstore (its own data/ directory)
add_elf du /usr/bin/xenstore
for n in read write rm; do ln -sf /usr/bin/xenstore du/usr/bin/xenstore-$n; done
install -m755 "$HERE/domU-init.sh" du/init
cp -a "$HERE/domU" du/payload
(cd du && find . | cpio -o -H newc 2>/dev/null | gzip -1) > d0/guest/domu.cpio.gz
cp vmlinuz d0/guest/vmlinuz
cp "$HERE/domu.cfg" "$HERE/domh.cfg" d0/guest/
(cd d0 && find . | cpio -o -H newc 2>/dev/null | gzip -1) > dom0.cpio.gz
echo "built $WORK/dom0.cpio.gz ($(du -h dom0.cpio.gz | cut -f1)), kernel $KV"

#!/bin/bash
# splitnet on real Xen: builds netbackd (release), builds Xen 4.17 + a Debian PV dom0 running
# netbackd + a PV domU with Linux's xen-netfront (build.sh), boots them under qemu's software
# emulation (boot.sh) and runs the checks in dom0/run.sh: both ends Connected, ping both ways,
# 16 MiB TCP each way, MTU 9000, detach and re-attach, destroy during a transfer, clean exit;
# then host mode (the stock vif-bridge into a Linux bridge xenbr0): mtu= and rate= from the vif
# line, 2 queues with split event channels, kill -9 and restart mid-transfer, xl save and
# restore, and seccomp confinement throughout (README.md lists every check).
# BENCH="MIB RUNS" instead times netbackd against Linux's xen-netback (README.md; not a test).
#
#   netbackd/tests/xen-nested/run.sh          (as root, on Debian 12 x86-64; ~8 minutes idle)
#
# Exit: 0 PASS; 1 FAIL (a check failed, or netbackd or the images did not build: ours); 2 no
# verdict (every boot crashed or hung under emulation, or the budget ran out first; a warning
# names what each boot saw); 3 a partial run passed or failed (build.sh's ONLY, development
# only); 77 cannot run here (not root, not Debian 12 with apt, no x86-64, no Debian mirror),
# with the reason printed.
#
# Environment: WORK (default /tmp/splitnet-xen: images, serial logs), TRIES (default 3),
# BOOT_TIMEOUT (seconds one boot may take, default 900), BUDGET (seconds for the whole run from
# the start of this script, builds included, default 720: a retry starts only if MIN_BOOT,
# default 420 s, still fits; see boot.sh).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
export WORK=${WORK:-/tmp/splitnet-xen}
START=$(date +%s)
BUDGET=${BUDGET:-720}
# BENCH="MIB RUNS" (build.sh): the timing mode, not a test: one boot with room for it
if [ -n "${BENCH:-}" ]; then
    BUDGET=${BUDGET_BENCH:-7200}
    export TRIES=${TRIES:-1} BOOT_TIMEOUT=${BOOT_TIMEOUT:-7000} MIN_BOOT=${MIN_BOOT:-60}
fi

skip() { echo "xen-nested: SKIP: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root (apt-get for qemu and the Xen tools, and qemu itself)"
[ "$(uname -m)" = x86_64 ] || skip "needs an x86-64 host (Xen's dom0 and the guest are x86-64)"
grep -q '^VERSION_ID="12"' /etc/os-release 2>/dev/null && command -v apt-get >/dev/null ||
    skip "needs Debian 12 with apt-get: the images are made from its Xen 4.17 and Linux packages"

echo "=== building netbackd (release)"
(cd "$ROOT" && cargo build --release -p netbackd) || { echo "xen-nested: FAIL: netbackd did not build"; exit 1; }
echo "=== building the images in $WORK ($(($(date +%s) - START)) s)"
set +e
NETBACKD="$ROOT/target/release/netbackd" "$HERE/build.sh"
rc=$?
[ "$rc" = 0 ] || [ "$rc" = 77 ] || echo "xen-nested: FAIL: build.sh exited $rc"
[ "$rc" = 0 ] || exit $((rc == 77 ? 77 : 1))
echo "=== booting ($(($(date +%s) - START)) s; budget $BUDGET s)"
DEADLINE=$((START + BUDGET)) "$HERE/boot.sh"
rc=$?
echo "=== done in $(($(date +%s) - START)) s: exit $rc"
exit $rc

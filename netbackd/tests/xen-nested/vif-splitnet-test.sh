#!/bin/sh
# Checks netbackd/scripts/vif-splitnet against a fake xenstore (the xenstore-* commands are
# shims over a directory), as libxl would run it. Needs no Xen and no root:
#   sh netbackd/tests/xen-nested/vif-splitnet-test.sh      (exit 0: every case held)
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
SCRIPT=$HERE/../../scripts/vif-splitnet
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
mkdir -p "$T/bin" "$T/store" "$T/sys"
# xenstore-read PATH / xenstore-write PATH VALUE [PATH VALUE...] / xenstore-rm PATH
cat > "$T/bin/xenstore-read" <<'SHIM'
#!/bin/sh
cat "$STORE$1" 2>/dev/null
SHIM
cat > "$T/bin/xenstore-write" <<'SHIM'
#!/bin/sh
while [ $# -ge 2 ]; do mkdir -p "$(dirname "$STORE$1")"; printf %s "$2" > "$STORE$1"; shift 2; done
SHIM
cat > "$T/bin/xenstore-rm" <<'SHIM'
#!/bin/sh
rm -rf "$STORE$1"
SHIM
chmod +x "$T/bin/"*
export STORE=$T/store PATH="$T/bin:$PATH" SPLITNET_SYSFS=$T/sys
BE=/local/domain/0/backend/vif/7/0
fails=0
check() { # check NAME EXPECTED-STATUS ACTUAL-STATUS [condition...]
    name=$1 want=$2 got=$3; shift 3
    if [ "$got" = "$want" ] && { [ $# -eq 0 ] || "$@"; }; then
        echo "ok: $name"
    else
        echo "FAILED: $name (exit $got, wanted $want)"; fails=$((fails + 1))
    fi
}
status() { cat "$STORE$BE/hotplug-status" 2>/dev/null; }

env -u XENBUS_PATH sh "$SCRIPT" online type_if=vif 2>/dev/null
check "online without XENBUS_PATH fails" 1 $?

XENBUS_PATH=$BE sh "$SCRIPT" online type_if=vif 2>/dev/null
check "online before any backend offered the vif fails, saying why" 1 $? \
    grep -q "netbackd" "$STORE$BE/hotplug-error"

# Another backend's features (Linux's xen-netback writes feature-rx-copy too) are not netbackd's.
rm -rf "$STORE"/*; xenstore-write "$BE/feature-rx-copy" 1
XENBUS_PATH=$BE sh "$SCRIPT" online type_if=vif 2>/dev/null
check "online with another backend's features but no splitnet-backend fails" 1 $? \
    grep -q "splitnet-backend is missing" "$STORE$BE/hotplug-error"

# A vif netbackd refused (bridge= names no switch it has) fails with netbackd's reason.
rm -rf "$STORE"/*; xenstore-write "$BE/feature-rx-copy" 1 "$BE/splitnet-backend" 1 \
    "$BE/error" 'no splitnet switch named "dmz" (this backend has xenbr0)'
XENBUS_PATH=$BE sh "$SCRIPT" online type_if=vif 2>/dev/null
check "online refuses a vif netbackd refused, with its reason" 1 $? \
    grep -q 'no splitnet switch named "dmz"' "$STORE$BE/hotplug-error"
[ "$(status)" = error ]
check "a refused vif's hotplug-status is error" 0 $?

rm -rf "$STORE"/*; xenstore-write "$BE/feature-rx-copy" 1 "$BE/splitnet-backend" 1
mkdir -p "$T/sys/bus/xen-backend/devices/vif-7-0/driver"
XENBUS_PATH=$BE sh "$SCRIPT" online type_if=vif 2>/dev/null
check "online refuses a vif Linux's xen-netback has taken" 1 $? \
    grep -q "xen-netback" "$STORE$BE/hotplug-error"
rm -rf "$T/sys/bus"

rm -rf "$STORE"/*; xenstore-write "$BE/feature-rx-copy" 1 "$BE/splitnet-backend" 1 "$BE/hotplug-status" ""
XENBUS_PATH=$BE sh "$SCRIPT" online type_if=vif
check "online writes hotplug-status=connected" 0 $? [ "$(status)" = connected ]

XENBUS_PATH=$BE sh "$SCRIPT" offline type_if=vif
check "offline removes hotplug-status" 0 $? [ ! -e "$STORE$BE/hotplug-status" ]

rm -rf "$STORE"/*
XENBUS_PATH=$BE sh "$SCRIPT" offline type_if=vif
check "offline succeeds with the directory already gone" 0 $?

xenstore-write "$BE/feature-rx-copy" 1 "$BE/splitnet-backend" 1
XENBUS_PATH=$BE sh "$SCRIPT" add
check "add is online" 0 $? [ "$(status)" = connected ]
XENBUS_PATH=$BE sh "$SCRIPT" remove
check "remove is offline" 0 $? [ ! -e "$STORE$BE/hotplug-status" ]

sh "$SCRIPT" bogus 2>/dev/null
check "an unknown action fails" 1 $?

[ "$fails" = 0 ] && echo "vif-splitnet: every case held" || echo "vif-splitnet: $fails case(s) failed"
[ "$fails" = 0 ]

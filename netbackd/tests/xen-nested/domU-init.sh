#!/bin/busybox sh
# domU's /init: loads xen-netfront, then runs /payload/run.sh (its output goes to the guest
# console), with PATH set for the xenstore tools and the payload restarted when it dies.
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
ip link set lo up
echo "SPLITNET domU up at $(cut -d' ' -f1 /proc/uptime) s"
insmod /lib/modules/xen-netfront.ko
# The agent is restarted should it die (programs crash at random under emulation).
cd /payload
while true; do
    sh ./run.sh
    echo "SPLITNET domU agent exited with $?; restarting it"
    sleep 1
done

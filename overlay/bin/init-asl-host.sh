#!/bin/sh
# init-asl-host.sh: the boot workflow of ASL/AUTH-HOST-IMAGE/1 section 5, run as PID 1 by the
# initramfs (switch_root), or by hand with ASL_NO_PID1=1.
#   1. offline: only `lo` up, every other interface down, unless network.enabled in config.yaml
#   2. mount the writable data disk (label, default ASL-DATA, or storage.device) at /var/lib/asl
#   3./4./5. asl-auth-host: per domain, verify certificate, DAM, policy hash and log against the
#      trust pinned in the image (writable only when all hold, else read-only with the reason on the
#      console and in the log), write this boot's environment claim, print READY on the console.
# Kernel command line: asl.test=1 (or the test-mode marker file on the data disk) prints ASL-CHECK
# lines after READY, then runs commands typed on the console (one per line, each followed by
# ASL-CMD-EXIT <status>) until "poweroff" or 60 s without input, and powers off; asl.rescue=1 skips
# storage and service and opens asl-rescue.
# Paths and settings come from the host package (`python3 -m asl_host.config --shell`, asl_host.paths);
# none is repeated here. ASL_CONFIG in the environment overrides the configuration file.
set -u
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
BB=busybox
say() { echo "asl-init: $*"; }
check() { echo "ASL-CHECK $*"; }
is_pid1() { [ "$$" = 1 ] && [ -z "${ASL_NO_PID1:-}" ]; }

finish() {  # $1: exit status when not PID 1
    sync
    if [ "$TEST_MODE" = 1 ] && is_pid1; then
        [ -n "${MOUNTED:-}" ] && $BB umount "$ASL_MOUNTPOINT" 2>/dev/null
        say "test mode: powering off"
        $BB poweroff -f
    fi
    is_pid1 || exit "$1"
    say "starting asl-rescue on the console"
    while :; do $BB setsid $BB cttyhack "${ASL_RESCUE_BIN:-asl-rescue}"; sleep 1; done
}

# 0. kernel file systems (the initramfs moved /dev here)
[ -r /proc/cmdline ] || $BB mount -t proc proc /proc
[ -d /sys/class ] || $BB mount -t sysfs sysfs /sys
[ -d /dev/pts ] || { $BB mkdir -p /dev/pts && $BB mount -t devpts devpts /dev/pts; }
CMDLINE=$(cat /proc/cmdline)
TEST_MODE=0
RESCUE=0
case " $CMDLINE " in *" asl.test=1 "*) TEST_MODE=1 ;; esac
case " $CMDLINE " in *" asl.rescue=1 "*) RESCUE=1 ;; esac
say "ASL authority host boot workflow ($(cat /etc/hostname 2>/dev/null), kernel $(uname -r))"

if ! cfg=$(python3 -m asl_host.config --shell ${ASL_CONFIG:+"$ASL_CONFIG"}); then
    say "FATAL: the host configuration is invalid (see above); asl-auth-host not started"
    finish 2
fi
eval "$cfg"
is_pid1 && $BB hostname "$ASL_HOSTNAME"

# 1. offline by default
$BB ip link set lo up
for dev in /sys/class/net/*; do
    name=${dev##*/}
    [ "$name" = lo ] && continue
    [ -e "$dev" ] || continue
    if [ "$ASL_NETWORK_ENABLED" = 1 ]; then
        $BB ip link set "$name" up && say "network: $name up (network.enabled: true)"
    else
        $BB ip link set "$name" down
    fi
done
[ "$ASL_NETWORK_ENABLED" = 1 ] || say "network: offline (only lo up; set network.enabled: true to change)"

if [ "$RESCUE" = 1 ]; then
    say "rescue mode (asl.rescue=1): storage not mounted, asl-auth-host not started"
    TEST_MODE=0
    finish 0
fi

# 2. the writable data disk
if [ -n "$ASL_STORAGE_DEVICE" ]; then want=$ASL_STORAGE_DEVICE; else want="LABEL=$ASL_STORAGE_LABEL"; fi
DEV=""
i=0
while :; do
    if [ -n "$ASL_STORAGE_DEVICE" ]; then
        [ -b "$ASL_STORAGE_DEVICE" ] && DEV=$ASL_STORAGE_DEVICE
    else
        DEV=$($BB findfs "LABEL=$ASL_STORAGE_LABEL" 2>/dev/null || true)
    fi
    [ -n "$DEV" ] && break
    [ "$i" -ge "$ASL_WAIT_SECONDS" ] && break
    [ "$i" = 0 ] && say "waiting up to ${ASL_WAIT_SECONDS}s for the data disk $want"
    sleep 1
    i=$((i + 1))
done
if [ -z "$DEV" ]; then
    echo "ASL-ERROR: data disk $want not found: attach a disk with an ext4 file system labelled" \
        "$ASL_STORAGE_LABEL (mkfs.ext4 -L $ASL_STORAGE_LABEL DEVICE) or set storage.device in $ASL_CONFIG;" \
        "$ASL_MOUNTPOINT is NOT mounted and asl-auth-host was NOT started"
    check "storage missing"
    finish 3
fi
if command -v e2fsck >/dev/null 2>&1; then
    e2fsck -p "$DEV" >/dev/null 2>&1
    rc=$?
    [ "$rc" -le 1 ] || say "WARNING: e2fsck -p $DEV exited $rc"
fi
$BB mkdir -p "$ASL_MOUNTPOINT"
if ! $BB mount -o "$ASL_MOUNT_OPTIONS" "$DEV" "$ASL_MOUNTPOINT"; then
    echo "ASL-ERROR: cannot mount data disk $DEV at $ASL_MOUNTPOINT; asl-auth-host was NOT started"
    finish 3
fi
MOUNTED=1
say "storage: $DEV mounted at $ASL_MOUNTPOINT"
[ -e "$ASL_MOUNTPOINT/$ASL_TEST_MODE_MARKER" ] && TEST_MODE=1

# 3.-5. stores, DAM, service
READY=$ASL_READY_FILE
rm -f "$READY"
asl-auth-host --config "$ASL_CONFIG" --ready-file "$READY" &
SERVICE=$!
i=0
while [ ! -e "$READY" ] && kill -0 "$SERVICE" 2>/dev/null && [ "$i" -lt 600 ]; do
    sleep 0.5
    i=$((i + 1))
done
if [ ! -e "$READY" ]; then
    wait "$SERVICE"
    echo "ASL-ERROR: asl-auth-host did not start (exit $?); see $ASL_LOG_FILE"
    $BB tail -n 5 "$ASL_LOG_FILE" 2>/dev/null
    finish 4
fi

if [ "$TEST_MODE" = 1 ]; then
    check "mount $($BB awk -v m="$ASL_MOUNTPOINT" '$2 == m { print $2, $1, $3 }' /proc/mounts)"
    check "root $($BB awk '$2 == "/" { print $3 }' /proc/mounts)"
    up=""
    for dev in /sys/class/net/*; do
        [ -e "$dev/flags" ] || continue
        [ $(( $(cat "$dev/flags") & 1 )) = 1 ] && up="$up ${dev##*/}"
    done
    check "ifaces-up${up:- none}"
    check "listening $(cat /proc/net/tcp /proc/net/tcp6 /proc/net/udp /proc/net/udp6 2>/dev/null \
        | $BB awk '$4 == "0A" || ($4 == "07" && $2 !~ /:0000$/)' | $BB wc -l)"
    check "boots $(cat "$ASL_MOUNTPOINT/$ASL_BOOTS_FILE")"
    check "stores $(cd "$ASL_MOUNTPOINT" && for d in $ASL_DOMAINS; do [ -f "$d/$ASL_DOMAIN_MARKER" ] && printf '%s ' "$d"; done)"
    check "log $($BB wc -l < "$ASL_LOG_FILE") lines in $ASL_LOG_FILE"
    kill "$SERVICE" 2>/dev/null
    wait "$SERVICE" 2>/dev/null
    check "console"
    # busybox ash: dash's read has no timeout
    # shellcheck disable=SC2016
    $BB sh -c 'while IFS= read -r -t 60 line; do
        [ "$line" = poweroff ] && break
        sh -c "$line"
        echo "ASL-CMD-EXIT $?"
    done'
    finish 0
fi
is_pid1 || exit 0
# PID 1: reap children for as long as the machine runs.
while :; do wait; sleep 60; done

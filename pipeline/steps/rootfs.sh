#!/bin/sh
# Step 1, rootfs: a minimal Debian root (mmdebstrap --variant=minbase) with the kernel and the
# Debian packages of our runtime dependencies. Writes out/work/rootfs and out/work/rootfs-meta/
# (sources.jsonl: every .deb, Packages index and InRelease with its SHA-256; mirrors.list).
ASL_STEP_NAME=rootfs
. pipeline/steps/common.sh
ROOTFS=$WORK/rootfs
META=$WORK/rootfs-meta
CACHE=${IMG_PATHS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/asl-capture/debs}
case $CACHE in "~"/*) CACHE=$HOME/${CACHE#"~/"} ;; esac
case $CACHE in "$ASL_REPO"/*) die "package cache $CACHE must be outside the repository" ;; esac
rm -rf "$ROOTFS" "$META"
mkdir -p "$META" "$CACHE" "$WORK"
META_ABS=$(cd "$META" && pwd)
CACHE_ABS=$(cd "$CACHE" && pwd)

"$ASL_PY" pipeline/tools/aptsources.py mirrors --suites "$IMG_SUITES" --components "$IMG_COMPONENTS" \
    --mirror "$IMG_MIRROR" --security-mirror "$IMG_SECURITY_MIRROR" > "$META/mirrors.list" || exit 2
step_log "mirrors: $(wc -l < "$META/mirrors.list") suites; cache: $CACHE_ABS"

set -f  # the dpkg path filters contain globs
set -- --variant="$IMG_VARIANT" --architectures="$IMG_ARCHITECTURE" --format=directory \
    --mode="${ASL_MMDEBSTRAP_MODE:-root}" --components="$(echo "$IMG_COMPONENTS" | tr ' ' ,)" \
    --include="$(echo "$IMG_PACKAGES" | tr ' ' ,)"
for p in $IMG_PATH_EXCLUDE; do set -- "$@" --dpkgopt="path-exclude=$p"; done
for p in $IMG_PATH_INCLUDE; do set -- "$@" --dpkgopt="path-include=$p"; done
set +f
# Our own busybox initramfs boots the image: keep initramfs-tools from building one in the chroot.
set -- "$@" --essential-hook='chroot "$1" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs && ln -s /bin/true "$1/usr/sbin/update-initramfs"'
# Package cache outside the repository: a second build does not download again.
set -- "$@" --skip=essential/unlink \
    --setup-hook='mkdir -p "$1/var/cache/apt/archives/"' \
    --setup-hook="sync-in $CACHE_ABS /var/cache/apt/archives/" \
    --customize-hook="sync-out /var/cache/apt/archives $CACHE_ABS"
# Pinned sources, read while apt's lists are still in the chroot.
set -- "$@" --customize-hook="$ASL_PY $ASL_REPO/pipeline/tools/aptsources.py pinned --root \"\$1\" --cache $CACHE_ABS --out $META_ABS/sources.jsonl"
set -- "$@" --customize-hook="echo $IMG_HOSTNAME > \"\$1/etc/hostname\"; rm -f \"\$1/etc/resolv.conf\""
mmdebstrap "$@" "$IMG_SUITE" "$ROOTFS" - < "$META/mirrors.list"
# mmdebstrap's directory output is not clamped: do it here (mksquashfs clamps again later).
clamp_mtimes "$ROOTFS"
step_log "rootfs: $(find "$ROOTFS" | wc -l) paths, kernel $(kernel_release "$ROOTFS")"

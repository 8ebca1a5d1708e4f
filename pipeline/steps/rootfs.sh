#!/bin/sh
# Step 1, rootfs: a minimal Debian root (mmdebstrap --variant=minbase) with the kernel and the
# Debian packages of our runtime dependencies. Writes out/work/rootfs and out/work/rootfs-meta/
# (sources.jsonl: every .deb, Packages index, InRelease and keyring with its SHA-256; mirrors.list;
# debian/: the InRelease, Packages and keyring files themselves, attached to the step's record).
ASL_STEP_NAME=rootfs
. pipeline/steps/common.sh
ROOTFS=$WORK/rootfs
META=$WORK/rootfs-meta
CACHE=${IMG_PATHS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/asl-capture/debs}
case $CACHE in "~"/*) CACHE=$HOME/${CACHE#"~/"} ;; esac
STORE=${IMG_PATHS_STORE:-${XDG_CACHE_HOME:-$HOME/.cache}/asl-capture/sha256}
case $STORE in "~"/*) STORE=$HOME/${STORE#"~/"} ;; esac
case $CACHE in "$ASL_REPO"/*) die "package cache $CACHE must be outside the repository" ;; esac
case $STORE in "$ASL_REPO"/*) die "source store $STORE must be outside the repository" ;; esac
rm -rf "$ROOTFS" "$META"
mkdir -p "$META" "$CACHE" "$STORE" "$WORK"
META_ABS=$(cd "$META" && pwd)
CACHE_ABS=$(cd "$CACHE" && pwd)
STORE_ABS=$(cd "$STORE" && pwd)
# Host paths inside the hook commands below, single-quoted for sh (any build directory name works).
q() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }
META_Q=$(q "$META_ABS")
CACHE_Q=$(q "$CACHE_ABS")
STORE_Q=$(q "$STORE_ABS")
REPO_Q=$(q "$ASL_REPO")
PY_Q=$(q "$ASL_PY")

"$ASL_PY" pipeline/tools/aptsources.py mirrors --suites "$IMG_SUITES" --components "$IMG_COMPONENTS" \
    --mirror "$IMG_MIRROR" --security-mirror "$IMG_SECURITY_MIRROR" > "$META/mirrors.list" || exit 2
step_log "mirrors: $(wc -l < "$META/mirrors.list") suites; cache: $CACHE_ABS; store: $STORE_ABS"

set -f  # the dpkg path filters contain globs
set -- --variant="$IMG_VARIANT" --architectures="$IMG_ARCHITECTURE" --format=directory \
    --mode="${ASL_MMDEBSTRAP_MODE:-root}" --components="$(echo "$IMG_COMPONENTS" | tr ' ' ,)" \
    --include="$(echo "$IMG_PACKAGES" | tr ' ' ,)"
for p in $IMG_PATH_EXCLUDE; do set -- "$@" --dpkgopt="path-exclude=$p"; done
for p in $IMG_PATH_INCLUDE; do set -- "$@" --dpkgopt="path-include=$p"; done
set +f
# Our own busybox initramfs boots the image: keep initramfs-tools from building one in the chroot.
set -- "$@" --essential-hook='chroot "$1" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs && ln -s /bin/true "$1/usr/sbin/update-initramfs"'
# apt behaves the same whoever calls the build from wherever: mmdebstrap lets apt download as the
# _apt user only when _apt can reach the target (not below a mode-0700 directory, nor under umask
# 077), and the image then differs. So apt never drops to _apt while building (a temporary apt.conf
# file, removed again), and the state that depends on it, the partial/ download directories, is set
# to what a sandboxed apt leaves (_apt:root 0700) whichever way it went.
{
    echo 'APT::Sandbox::User "root";'
    # a rebuild from the durable source store: its signed indexes may be past their Valid-Until
    [ "${ASL_APT_CHECK_VALID_UNTIL:-1}" != 0 ] || echo 'Acquire::Check-Valid-Until "false";'
} > "$META/apt-build.conf"
set -- "$@" --setup-hook="mkdir -p \"\$1/etc/apt/apt.conf.d\" && cp $META_Q/apt-build.conf \"\$1/etc/apt/apt.conf.d/00asl-build\""
# Package cache outside the repository: a second build does not download again. Only the .deb files
# go in (apt cleans them out of the image again).
set -- "$@" --skip=essential/unlink \
    --setup-hook="mkdir -p \"\$1/var/cache/apt/archives/\" && find $CACHE_Q -maxdepth 1 -type f -name '*.deb' -exec cp -t \"\$1/var/cache/apt/archives/\" {} +"
# Pinned sources, read while apt's lists are still in the chroot; every file they name is kept by
# digest in the durable source store (asl-verify rebuild reads it) and each .deb in the cache.
set -- "$@" --customize-hook="PYTHONPATH=$REPO_Q $PY_Q $REPO_Q/pipeline/tools/aptsources.py pinned --root \"\$1\" --archives \"\$1/var/cache/apt/archives\" --cache $CACHE_Q --store $STORE_Q --out $META_Q/sources.jsonl --save $META_Q/debian --mirrors $META_Q/mirrors.list"
# What the build host leaks into the root: its hostname and resolv.conf (copied by mmdebstrap with the
# host's modes: removed, then /etc/hostname written afresh, 0644), the
# mirror URIs (the sources.list mmdebstrap writes; the image is offline, its packages are named by
# digest in /asl/build-manifest.cbor), and the temporary apt configuration above.
set -- "$@" --customize-hook="rm -f \"\$1/etc/hostname\" \"\$1/etc/resolv.conf\" \"\$1/etc/apt/apt.conf.d/00asl-build\" \"\$1\"/etc/apt/sources.list.d/0000*; printf '%s\\n' '# Offline image: no apt sources. The Debian packages it was built from are listed, by' '# SHA-256, in /asl/build-manifest.cbor on the ISO.' > \"\$1/etc/apt/sources.list\"; echo $IMG_HOSTNAME > \"\$1/etc/hostname\"; chmod 0644 \"\$1/etc/hostname\" \"\$1/etc/apt/sources.list\""
set -- "$@" --customize-hook="for d in /var/lib/apt/lists/partial /var/cache/apt/archives/partial; do mkdir -p \"\$1\$d\" && chroot \"\$1\" chown _apt:root \$d && chmod 0700 \"\$1\$d\"; done"
mmdebstrap "$@" "$IMG_SUITE" "$ROOTFS" - < "$META/mirrors.list"
# mmdebstrap's directory output is not clamped: do it here (mksquashfs clamps again later).
clamp_mtimes "$ROOTFS"
step_log "rootfs: $(find "$ROOTFS" | wc -l) paths, kernel $(kernel_release "$ROOTFS")"

#!/bin/sh
# Install the Debian tools the build pipeline and the boot tests need (idempotent; run as root or
# with sudo available). The mirror is whatever this machine's apt sources say.
set -eu
PKGS="mmdebstrap squashfs-tools xorriso grub-pc-bin grub-efi-amd64-bin grub-common mtools
isolinux syslinux-common busybox-static cpio kmod dosfstools e2fsprogs qemu-system-x86 ovmf
minisign python3 python3-yaml python3-cbor2 python3-cryptography python3-click git ca-certificates openssl
util-linux gpgv python3-zstandard"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
missing=""
for p in $PKGS; do
    dpkg-query -W -f '${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing="$missing $p"
done
if [ -z "$missing" ]; then
    echo "install-deps: all $(echo $PKGS | wc -w) packages already installed"
    exit 0
fi
echo "install-deps: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing

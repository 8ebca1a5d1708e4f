#!/bin/sh
# Step 4, iso: squashfs system image (read-only, xz, clamped times), busybox initramfs (loads the
# modules, finds the ISO, mounts the squashfs under a writable tmpfs overlay, switch_root), the build
# manifest /asl/build-manifest.cbor, then grub-mkrescue/xorriso -> out/<name>-<version>.iso.
ASL_STEP_NAME=iso
. pipeline/steps/common.sh
ISOROOT=$WORK/isoroot
ISOFS=$WORK/isofs
INITRD=$WORK/initramfs
META=$WORK/rootfs-meta
KVER=$(kernel_release "$ISOROOT")
SQUASHFS_COMP=zstd
rm -rf "$ISOFS" "$INITRD" "$ISO" "$WORK/iso-contents.cbor"
mkdir -p "$ISOFS/live" "$ISOFS/asl" "$INITRD/bin" "$OUT"
cp -R "$WORK/bootloader/." "$ISOFS/"

# 1. The read-only system image. mksquashfs refuses SOURCE_DATE_EPOCH together with -all-time.
step_log "mksquashfs ($(du -sh "$ISOROOT" | cut -f1))"
env -u SOURCE_DATE_EPOCH mksquashfs "$ISOROOT" "$ISOFS/live/system.squashfs" -noappend -no-progress \
    -comp "$SQUASHFS_COMP" -mkfs-time "$SOURCE_DATE_EPOCH" -all-time "$SOURCE_DATE_EPOCH" >/dev/null
cp "$ISOROOT/boot/vmlinuz-$KVER" "$ISOFS/live/vmlinuz"
SQUASH_SHA=$(sha256sum "$ISOFS/live/system.squashfs" | cut -d' ' -f1)
printf '%s %s %s\n' "$IMG_NAME" "$IMG_VERSION" "$SQUASH_SHA" > "$ISOFS/asl/image-id"

# 2. The initramfs: busybox from the image itself, the modules listed by the overlay step.
BUSYBOX=$ISOROOT/usr/bin/busybox
[ -f "$BUSYBOX" ] || BUSYBOX=$ISOROOT/bin/busybox
[ -f "$BUSYBOX" ] && [ ! -L "$BUSYBOX" ] || die "busybox (package busybox-static) missing from the image"
cp "$BUSYBOX" "$INITRD/bin/busybox"
cp pipeline/initramfs/init "$INITRD/init"
cp "$ISOFS/asl/image-id" "$INITRD/asl-image-id"
: > "$INITRD/modules.load"
while read -r rel; do
    mkdir -p "$INITRD/lib/modules/$KVER/$(dirname "$rel")"
    cp "$ISOROOT/lib/modules/$KVER/$rel" "$INITRD/lib/modules/$KVER/$rel"
    echo "/lib/modules/$KVER/$rel" >> "$INITRD/modules.load"
done < "$ISOROOT/lib/modules/$KVER/asl-modules.load"
find "$INITRD" -type d -exec chmod 0755 {} +
find "$INITRD" -type f -exec chmod 0644 {} +
chmod 0755 "$INITRD/init" "$INITRD/bin/busybox"
clamp_mtimes "$INITRD"
(cd "$INITRD" && find . -print | LC_ALL=C sort | cpio -o -H newc --reproducible -R 0:0 --quiet) \
    | gzip -9 -n > "$ISOFS/live/initrd.img"

# 3. The build manifest: digests of the pinned sources, the overlay tree and the system tree.
PYTHONPATH=$ASL_REPO${PYTHONPATH:+:$PYTHONPATH} "$ASL_PY" pipeline/tools/buildmanifest.py \
    --name "$IMG_NAME" --version "$IMG_VERSION" --epoch "$SOURCE_DATE_EPOCH" --kernel "$KVER" \
    --sources "$META/sources.jsonl" --overlay "$WORK/overlay-staged" --system "$ISOROOT" \
    --file "live/vmlinuz=$ISOFS/live/vmlinuz" --file "live/initrd.img=$ISOFS/live/initrd.img" \
    --file "live/system.squashfs=$ISOFS/live/system.squashfs" \
    --out "$ISOFS/asl/build-manifest.cbor"
find "$ISOFS" -type d -exec chmod 0755 {} +
find "$ISOFS" -type f -exec chmod 0644 {} +
clamp_mtimes "$ISOFS"

# 4. The ISO (BIOS and UEFI). Fixed volume dates and UUID (xorriso), fixed FAT serial (mformat).
ASL_REAL_MFORMAT=$(command -v mformat) || die "mformat (package mtools) not found"
export ASL_REAL_MFORMAT
uuid=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y%m%d%H%M%S00)
PATH=$ASL_REPO/pipeline/tools/fixed-bin:$PATH grub-mkrescue --locales= --fonts= --themes= \
    -o "$ISO" "$ISOFS" -- \
    -volume_date all_file_dates "=$SOURCE_DATE_EPOCH" -volume_date uuid "$uuid" \
    -volid ASL_AUTH_HOST 2>"$WORK/grub-mkrescue.log" \
    || { cat "$WORK/grub-mkrescue.log" >&2; die "grub-mkrescue failed"; }
chmod 0644 "$ISO"

# 5. What grub-mkrescue added beside the tree it was given, the system area, and the owners of the
# squashfs tree: stored with the step's record (--attach), so every file of the ISO is accounted for.
PYTHONPATH=$ASL_REPO${PYTHONPATH:+:$PYTHONPATH} "$ASL_PY" pipeline/tools/isocontents.py \
    --iso "$ISO" --tree "$ISOFS" --system "$ISOROOT" --squashfs live/system.squashfs \
    --compression "$SQUASHFS_COMP" --out "$WORK/iso-contents.cbor"
step_log "$ISO: $(du -h "$ISO" | cut -f1), sha256 $(sha256sum "$ISO" | cut -d' ' -f1)"

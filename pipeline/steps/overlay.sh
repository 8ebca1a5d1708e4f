#!/bin/sh
# Step 2, overlay: the ISO root (out/work/isoroot) = the rootfs, its kernel modules trimmed to the
# ones the image needs, plus overlay/ (spec section 3 -> section 4) and the host runtime (asl_host
# and the asl_capture modules it imports), byte-for-byte. Refuses overlay entries that escape the
# root. Also writes out/work/overlay-staged (the overlay with normalised modes, digested in the build manifest).
ASL_STEP_NAME=overlay
. pipeline/steps/common.sh
exec "$ASL_PY" pipeline/tools/overlay.py \
    --rootfs "$WORK/rootfs" --overlay "${ASL_OVERLAY_DIR:-$IMG_PATHS_OVERLAY}" \
    --staged "$WORK/overlay-staged" --out "$WORK/isoroot" \
    --package "$IMG_PYTHON_PACKAGE" --shared "$IMG_PYTHON_SHARED" --package-dest "$IMG_PYTHON_DEST" \
    --trust-roots "$IMG_TRUST_ROOTS" --trust-policy-hash "$IMG_TRUST_POLICY_HASH" \
    --modules "$IMG_KERNEL_MODULES" --epoch "$SOURCE_DATE_EPOCH"

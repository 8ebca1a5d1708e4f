#!/bin/sh
# Step 0, builder: the host tools the later steps run (mmdebstrap, apt, squashfs-tools, xorriso,
# grub's *-bin, mtools, cpio, gzip, busybox, kmod, coreutils, python3) with their Debian package,
# version and files digest, and this project's package with its tree digest, as pinned sources in
# out/work/builder/tools.jsonl (asl-capture --sources puts them in the step's signed record).
ASL_STEP_NAME=builder
. pipeline/steps/common.sh
rm -rf "$WORK/builder"
mkdir -p "$WORK/builder"
PYTHONPATH=$ASL_REPO${PYTHONPATH:+:$PYTHONPATH} exec "$ASL_PY" pipeline/tools/buildertools.py \
    --out "$WORK/builder/tools.jsonl" --package asl_capture

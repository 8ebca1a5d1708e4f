#!/bin/sh
# Build the ASL authority-host ISO: builder -> rootfs -> overlay -> bootloader -> iso, each step run under
# `asl-capture --step NAME` with its inputs (-i) and outputs (-o) named precisely, so the signed
# chain in out/provenance traces every input to an earlier output or a pinned source.
#
#   ./pipeline/build.sh                         # out/<name>-<version>.iso and out/provenance/
#   asl-capture -- ./pipeline/build.sh          # the same, nested under an outer record
#   ASL_CAPTURE_BARE=1 ./pipeline/build.sh      # steps run without asl-capture (benchmarks)
#
# Environment: SOURCE_DATE_EPOCH (default: the last commit's time), ASL_CAPTURE_DIR (default
# $PWD/out/provenance), ASL_IMAGE_CONFIG (default pipeline/image.yaml), ASL_CAPTURE (the
# asl-capture command, default `asl-capture`), ASL_STEPS (subset to run, default all five).
set -eu
cd "$(dirname "$0")/.."
umask 022
TZ=UTC
LC_ALL=C
# No .pyc files appear in the checkout or the image while building: every path stays recorded,
# none has to be excluded from a snapshot.
PYTHONDONTWRITEBYTECODE=1
export TZ LC_ALL PYTHONDONTWRITEBYTECODE
ASL_PY=${ASL_PYTHON:-python3}
ASL_IMAGE_CONFIG=${ASL_IMAGE_CONFIG:-pipeline/image.yaml}
export ASL_IMAGE_CONFIG
_cfg=$("$ASL_PY" pipeline/tools/imageconfig.py --config "$ASL_IMAGE_CONFIG" --shell) || exit 2
eval "$_cfg"
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || true)
    [ -n "$SOURCE_DATE_EPOCH" ] || SOURCE_DATE_EPOCH=1735689600  # no commit yet: 2025-01-01Z
fi
export SOURCE_DATE_EPOCH
W=$IMG_PATHS_WORK
ISO=$IMG_PATHS_OUT/$IMG_NAME-$IMG_VERSION.iso
mkdir -p "$W"
if [ -z "${ASL_CAPTURE_DIR:-}" ]; then
    ASL_CAPTURE_DIR=$PWD/$IMG_PATHS_PROVENANCE
    export ASL_CAPTURE_DIR
fi
STEPS=${ASL_STEPS:-builder rootfs overlay bootloader iso}

run_step() {  # run_step NAME [asl-capture options...]
    name=$1
    shift
    echo "build: step $name" >&2
    t0=$(date +%s)
    if [ "${ASL_CAPTURE_BARE:-0}" = 1 ]; then
        sh "pipeline/steps/$name.sh"
    else
        # shellcheck disable=SC2086
        ${ASL_CAPTURE:-asl-capture} --step "$name" "$@" -- sh "pipeline/steps/$name.sh"
    fi
    echo "build: step $name done in $(( $(date +%s) - t0 ))s" >&2
}

for step in $STEPS; do
    case $step in
        builder)
            # the host tools the later steps run, as pinned sources (package, version, files digest)
            run_step builder -i pipeline/steps/builder.sh -i pipeline/tools/buildertools.py -i asl_capture \
                --exclude '__pycache__' --exclude '*.pyc' \
                -o "$W/builder" --sources "$W/builder/tools.jsonl" ;;
        rootfs)
            # the sources file is written by the step and read by asl-capture after it exits
            run_step rootfs -i pipeline/steps/rootfs.sh -i pipeline/steps/common.sh \
                -i pipeline/tools/aptsources.py -i pipeline/tools/imageconfig.py -i "$ASL_IMAGE_CONFIG" \
                -o "$W/rootfs" -o "$W/rootfs-meta" --sources "$W/rootfs-meta/sources.jsonl" \
                --attach "$W/rootfs-meta/debian" ;;
        overlay)
            run_step overlay -i pipeline/steps/overlay.sh -i pipeline/tools/overlay.py \
                -i "$IMG_PATHS_OVERLAY" -i "$IMG_PYTHON_PACKAGE" -i "$IMG_PYTHON_SHARED" -i "$IMG_TRUST_ROOTS" \
                -i "$IMG_TRUST_POLICY_HASH" -i "$W/rootfs" -i "$ASL_IMAGE_CONFIG" \
                -o "$W/isoroot" -o "$W/overlay-staged" ;;
        bootloader)
            run_step bootloader -i pipeline/steps/bootloader.sh -i "$ASL_IMAGE_CONFIG" \
                -o "$W/bootloader" ;;
        iso)
            run_step iso -i pipeline/steps/iso.sh -i pipeline/initramfs -i pipeline/tools/buildmanifest.py \
                -i pipeline/tools/isocontents.py -i "$IMG_PYTHON_SHARED" \
                -i pipeline/tools/fixed-bin -i "$W/isoroot" -i "$W/overlay-staged" -i "$W/bootloader" \
                -i "$W/rootfs-meta/sources.jsonl" -i "$ASL_IMAGE_CONFIG" \
                -o "$W/isofs" -o "$W/initramfs" -o "$W/iso-contents.cbor" -o "$ISO" \
                --attach "$W/iso-contents.cbor" ;;
        *) echo "build: unknown step $step" >&2; exit 2 ;;
    esac
done
echo "build: $ISO" >&2

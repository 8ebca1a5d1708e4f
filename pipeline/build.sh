#!/bin/sh
# Build the ASL authority-host ISO: the steps of pipeline/steps.conf (builder -> rootfs -> overlay
# -> bootloader -> iso), each run under `asl-capture --step NAME` with the inputs (-i) and outputs
# (-o) the table names, so the signed chain in out/provenance traces every input to an earlier
# output or a pinned source.
#
#   ./pipeline/build.sh                         # out/<name>-<version>.iso and out/provenance/
#   asl-capture -- ./pipeline/build.sh          # the same, nested under an outer record
#   ASL_CAPTURE_BARE=1 ./pipeline/build.sh      # steps run without asl-capture (benchmarks)
#
# Environment: SOURCE_DATE_EPOCH (default: the last commit's time), ASL_CAPTURE_DIR (default
# $PWD/out/provenance), ASL_IMAGE_CONFIG (default pipeline/image.yaml), ASL_CAPTURE (the
# asl-capture command, default `asl-capture`), ASL_STEPS (subset to run, default all of the table).
cd "$(dirname "$0")/.."
ASL_STEP_NAME=build
. pipeline/steps/common.sh
export ASL_IMAGE_CONFIG
mkdir -p "$WORK"
if [ -z "${ASL_CAPTURE_DIR:-}" ]; then
    ASL_CAPTURE_DIR=$PWD/$IMG_PATHS_PROVENANCE
    export ASL_CAPTURE_DIR
fi
STEPS=${ASL_STEPS:-$(step_names)}

run_step() {  # run_step NAME: the step's script under asl-capture, with its options from the step table
    name=$1
    [ -f "pipeline/steps/$name.sh" ] && step_names | grep -qx "$name" || die "unknown step $name"
    echo "build: step $name" >&2
    t0=$(date +%s)
    if [ "${ASL_CAPTURE_BARE:-0}" = 1 ]; then
        sh "pipeline/steps/$name.sh"
    else
        set -- -i "pipeline/steps/$name.sh" -i pipeline/steps/common.sh -i "$STEP_TABLE"
        while read -r _step _role _value; do
            [ "$_step" = "$name" ] || continue
            eval "_value=\"$_value\""
            case $_role in
                in) set -- "$@" -i "$_value" ;;
                out) set -- "$@" -o "$_value" ;;
                exclude) set -- "$@" --exclude "$_value" ;;
                sources) set -- "$@" --sources "$_value" ;;
                attach) set -- "$@" --attach "$_value" ;;
                *) die "$STEP_TABLE: step $name: unknown role $_role" ;;
            esac
        done < "$STEP_TABLE"
        # shellcheck disable=SC2086
        ${ASL_CAPTURE:-asl-capture} --step "$name" "$@" -- sh "pipeline/steps/$name.sh"
    fi
    echo "build: step $name done in $(( $(date +%s) - t0 ))s" >&2
}

for step in $STEPS; do
    run_step "$step"
done
echo "build: $ISO" >&2

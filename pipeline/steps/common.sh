# Sourced by pipeline/build.sh and every step script (POSIX sh): the one prelude. Runs from the
# repository root; fixes the environment that leaks into build outputs (umask, time zone, locale),
# loads pipeline/image.yaml and, in a step, checks that the inputs earlier steps make are there.
set -eu
umask 022
TZ=UTC
LC_ALL=C
# No .pyc files appear in the checkout or the image while building: every path stays recorded,
# none has to be excluded from a snapshot (the builder and iso steps run this checkout's asl_capture).
PYTHONDONTWRITEBYTECODE=1
export TZ LC_ALL PYTHONDONTWRITEBYTECODE
ASL_REPO=$(pwd)
ASL_PY=${ASL_PYTHON:-python3}
ASL_IMAGE_CONFIG=${ASL_IMAGE_CONFIG:-pipeline/image.yaml}
_cfg=$("$ASL_PY" pipeline/tools/imageconfig.py --config "$ASL_IMAGE_CONFIG" --shell) || exit 2
eval "$_cfg"
OUT=$IMG_PATHS_OUT
WORK=$IMG_PATHS_WORK
ISO_NAME=$IMG_NAME-$IMG_VERSION.iso
ISO=$OUT/$ISO_NAME
STEP_TABLE=pipeline/steps.conf
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || true)
    [ -n "$SOURCE_DATE_EPOCH" ] || SOURCE_DATE_EPOCH=1735689600  # 2025-01-01T00:00:00Z, no commit yet
fi
export SOURCE_DATE_EPOCH
step_log() { printf '%s: %s\n' "${ASL_STEP_NAME:-step}" "$*" >&2; }
die() { printf '%s: error: %s\n' "${ASL_STEP_NAME:-step}" "$*" >&2; exit 2; }
# Set every mtime under $1 to SOURCE_DATE_EPOCH (symlinks themselves, not their targets).
clamp_mtimes() { find "$1" -depth -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} + ; }
# The kernel release installed in a root: exactly one is expected.
kernel_release() {
    _k=$(ls "$1/lib/modules")
    [ "$(printf '%s\n' "$_k" | wc -l)" -eq 1 ] || die "expected one kernel in $1/lib/modules, found: $_k"
    printf '%s\n' "$_k"
}
# The step names of the table, in order.
step_names() { awk '!/^#/ && NF && !seen[$1]++ { print $1 }' "$STEP_TABLE"; }
# The step whose output (by the table) holds path $1.
_maker() {
    while read -r _s _r _v; do
        [ "$_r" = out ] || continue
        eval "_v=\"$_v\""
        case $1 in "$_v" | "$_v"/*) printf '%s\n' "$_s"; return ;; esac
    done < "$STEP_TABLE"
    printf 'an earlier\n'
}
# In a step: every input under $WORK (made by an earlier step) must exist.
if [ "${ASL_STEP_NAME:-build}" != build ]; then
    while read -r _s _r _v; do
        [ "$_s" = "$ASL_STEP_NAME" ] && [ "$_r" = in ] || continue
        eval "_v=\"$_v\""
        case $_v in
            "$WORK"/*) [ -e "$_v" ] || die "$_v missing: run the $(_maker "$_v") step first" ;;
        esac
    done < "$STEP_TABLE"
fi

# Sourced by every step script (POSIX sh). Runs from the repository root; fixes the environment
# that leaks into build outputs (umask, time zone, locale) and loads pipeline/image.yaml.
set -eu
umask 022
TZ=UTC
LC_ALL=C
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

"""Every path the authority host uses, defined once.

The boot script ``init-asl-host.sh`` does not repeat them: it evaluates the assignments printed by
``python3 -m asl_host.config --shell`` (:func:`shell_constants`), which also carry the settings of
``config.yaml``.
"""

from __future__ import annotations

from pathlib import Path

#: The host's configuration (ASL/AUTH-HOST-CONFIG/1) and, beside it, ``policy.hash``.
DEFAULT_CONFIG = Path("/etc/asl-auth-host/config.yaml")
POLICY_HASH_NAME = "policy.hash"
#: Written by ``asl-auth-host`` once it is ready; the boot script waits for it.
READY_FILE = Path("/run/asl-auth-host.ready")
#: The host's own state on the data disk (boot counter, witness), relative to the mount point.
STATE_DIR = ".asl-host"
BOOTS_NAME = "boots"
WITNESS_NAME = "dam-witness"
#: Marks an initialised domain store (relative to the store).
DOMAIN_MARKER = ".asl-domain"
#: On the data disk: boot in self-test mode (print ASL-CHECK lines, power off).
TEST_MODE_MARKER = ".asl-test-mode"
#: The rescue shell's launcher (started on the console when the boot cannot continue).
RESCUE_BIN = Path("/bin/asl-rescue")


def shell_constants() -> dict[str, str]:
    """The constants the boot script needs, as ``ASL_*`` names."""
    return {
        "ASL_CONFIG": str(DEFAULT_CONFIG),
        "ASL_READY_FILE": str(READY_FILE),
        "ASL_STATE_DIR": STATE_DIR,
        "ASL_BOOTS_FILE": f"{STATE_DIR}/{BOOTS_NAME}",
        "ASL_DOMAIN_MARKER": DOMAIN_MARKER,
        "ASL_TEST_MODE_MARKER": TEST_MODE_MARKER,
        "ASL_RESCUE_BIN": str(RESCUE_BIN),
    }

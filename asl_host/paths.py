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

# Inside a domain store (config.yaml domains.<name>.path, below the data disk's mount point).
#: The domain's authority artifacts: the threshold-signed certificate, the DAM, the policy.
AUTHORITY_DIR = "authority"
CERT_NAME = "certificate.cbor"
DAM_NAME = "dam.cose"
POLICY_NAME = "policy.cbor"
#: The append-only, hash-linked log of signed receipts (a CBOR sequence of COSE_Sign1).
LOG_NAME = "log.cbor"
#: Content-addressed artifacts: objects/sha256/<2 hex>/<62 hex>.
OBJECTS_DIR = "objects"
#: The domain's private keys (domain root and principals), 0600: on the data disk, never in the image.
KEYS_DIR = "keys"
DOMAIN_ROOT_KEY = "root"
#: Where ``asl-rescue check`` moves objects whose bytes no longer match their name.
QUARANTINE_DIR = "quarantine"

# In the host's state directory on the data disk.
HOST_KEY_NAME = "host.key"
CLAIMS_DIR = "env-claims"

# The pinned trust, in the image beside config.yaml (inputs of the image build, pipeline/image.yaml).
ROOTS_NAME = "roots.cbor"
#: The build manifest of the image on the boot medium (mounted by the initramfs): its SHA-256 is the
#: image identity that ``asl-verify iso`` prints.
BUILD_MANIFEST = Path("/run/live/iso/asl/build-manifest.cbor")
#: What the environment claim hashes as "the installed host tools".
HOST_TOOLS = (Path("/bin/asl-auth-host"), Path("/bin/asl-rescue"), Path("/bin/init-asl-host.sh"),
              Path("/usr/local/bin/asl-admin"))

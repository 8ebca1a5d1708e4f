"""The record format in code, in one place: every document of docs/FORMAT.md as a frozen, typed dataclass.

Each type has ``to_value`` (the CBOR data-model value; ``dcbor.encode`` gives its one encoding) and
a strict ``from_value`` (and ``from_cbor`` for whole documents) that checks every field against the
CDDL and raises :class:`~asl_capture.errors.FormatError` naming the offending field, e.g.
``argv[0]: expected text or bytes, found uint``. Versions and COSE content types are defined once,
in :mod:`asl_capture.format.constants`.

- :mod:`.record`: :class:`StepRecord` and its parts (:class:`Inputs`, :class:`Outputs`, :class:`Log`,
  :class:`Host`, :class:`Vcs`, :class:`Source`): section 5.
- :mod:`.checkpoint`: :class:`Checkpoint`, the payload of ``checkpoint.cose``: section 4.1.
- :mod:`.tree`: :class:`Manifest`, :class:`Entry`, :class:`Changes` and :func:`diff`: section 6.
- :mod:`.build`: :class:`BuildManifest`, ``/asl/build-manifest.cbor`` in the ISO: section 10.
- :mod:`.release`: :class:`ReleaseManifest`, ``RELEASE.cbor`` of a release directory: section 11.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from asl_capture.format.build import BuildManifest, BuildSource, SystemTree, TreeDigest
    from asl_capture.format.checkpoint import Checkpoint
    from asl_capture.format.constants import (
        BUILD_MANIFEST_VERSION,
        CHECKPOINT_CONTENT_TYPE,
        CHECKPOINT_VERSION,
        MANIFEST_VERSION,
        RECORD_VERSION,
        RELEASE_CONTENT_TYPE,
        RELEASE_VERSION,
        STEP_CONTENT_TYPE,
    )
    from asl_capture.format.record import (
        STATUSES,
        Attachment,
        Host,
        Inputs,
        Log,
        Outputs,
        RunAs,
        Source,
        StepRecord,
        Vcs,
    )
    from asl_capture.format.release import BuildKey, ReleaseFile, ReleaseManifest, Surface
    from asl_capture.format.tree import KINDS, Changes, Entry, Manifest, diff

#: Where each name lives. A name is imported from its module on first use (PEP 562), so a tool pays
#: only for the documents it handles (``asl-capture`` never loads the build or release manifests).
_MODULES = {
    "BuildManifest": "build",
    "BuildSource": "build",
    "SystemTree": "build",
    "TreeDigest": "build",
    "Checkpoint": "checkpoint",
    "BUILD_MANIFEST_VERSION": "constants",
    "CHECKPOINT_CONTENT_TYPE": "constants",
    "CHECKPOINT_VERSION": "constants",
    "MANIFEST_VERSION": "constants",
    "RECORD_VERSION": "constants",
    "RELEASE_CONTENT_TYPE": "constants",
    "RELEASE_VERSION": "constants",
    "STEP_CONTENT_TYPE": "constants",
    "STATUSES": "record",
    "Attachment": "record",
    "Host": "record",
    "Inputs": "record",
    "Log": "record",
    "Outputs": "record",
    "RunAs": "record",
    "Source": "record",
    "StepRecord": "record",
    "Vcs": "record",
    "BuildKey": "release",
    "ReleaseFile": "release",
    "ReleaseManifest": "release",
    "Surface": "release",
    "KINDS": "tree",
    "Changes": "tree",
    "Entry": "tree",
    "Manifest": "tree",
    "diff": "tree",
}


def __getattr__(name: str) -> object:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "BUILD_MANIFEST_VERSION", "CHECKPOINT_CONTENT_TYPE", "CHECKPOINT_VERSION", "KINDS", "MANIFEST_VERSION",
    "RECORD_VERSION", "RELEASE_CONTENT_TYPE", "RELEASE_VERSION", "STATUSES", "STEP_CONTENT_TYPE", "Attachment",
    "BuildKey", "BuildManifest", "BuildSource", "Changes", "Checkpoint", "Entry", "Host", "Inputs", "Log", "Manifest",
    "Outputs", "ReleaseFile", "ReleaseManifest", "RunAs", "Source", "StepRecord", "Surface", "SystemTree", "TreeDigest",
    "Vcs", "diff",
]

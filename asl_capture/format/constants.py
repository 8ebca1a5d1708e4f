"""Versions and COSE content types of the documents in docs/FORMAT.md, each defined here only."""

from __future__ import annotations

#: ``v`` of a step record (FORMAT.md section 5).
RECORD_VERSION = 1
#: ``v`` of the signed checkpoint (section 4.1).
CHECKPOINT_VERSION = 1
#: ``v`` of a tree manifest and of a change list (section 6).
MANIFEST_VERSION = 1
#: ``v`` of the release manifest ``RELEASE.cbor`` (section 11).
RELEASE_VERSION = 1
#: ``v`` of the build manifest the ISO carries as ``/asl/build-manifest.cbor`` (section 10).
BUILD_MANIFEST_VERSION = 1

#: Content type (COSE header label 3) of a chain item.
STEP_CONTENT_TYPE = "application/vnd.asl.step+cbor"
#: Content type of ``checkpoint.cose``.
CHECKPOINT_CONTENT_TYPE = "application/vnd.asl.checkpoint+cbor"
#: Content type of ``RELEASE.cbor``, signed by the release key (never by a build key).
RELEASE_CONTENT_TYPE = "application/vnd.asl.release+cbor"

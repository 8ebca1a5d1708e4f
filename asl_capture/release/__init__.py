"""Publishing a verified build as a signed release, and verifying a release (``docs/RELEASE.md``).

- :mod:`.manifest`: ``RELEASE.cbor``, the release manifest (COSE_Sign1 by the release key).
- :mod:`.surface`: the image's compatibility surface and the versioning rule (spec section 8).
- :mod:`.intoto`: the in-toto Statement v1 / SLSA Provenance v1 export in a DSSE envelope.
- :mod:`.publish`: ``asl-release publish``; :mod:`.verify`: ``asl-verify release``.
"""

"""asl-capture: signed, hash-linked CBOR provenance records for build steps.

The library core (everything outside :mod:`asl_capture.cli`) never prints, never exits and
imports no ``click``; the command-line tools are thin wrappers around it.
"""

__version__ = "0.1.0"

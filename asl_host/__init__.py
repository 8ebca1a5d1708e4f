"""The authority host that runs inside the image (spec ASL/AUTH-HOST-IMAGE/1, sections 3 and 5).

A package of its own, beside the build tool ``asl_capture``: it imports only the shared primitives
it needs from there (deterministic CBOR today) and is what the image installs, together with exactly
the ``asl_capture`` modules it imports (``pipeline/tools/overlay.py`` computes that closure).

:mod:`.paths` holds every path constant (the boot script asks for them), :mod:`.errors` the
exception base, :mod:`.config` loads ``/etc/asl-auth-host/config.yaml``, :mod:`.authhost` is the
``asl-auth-host`` service, :mod:`.admin` is ``asl-admin`` and :mod:`.rescue` is ``asl-rescue``.
Only :mod:`.cli` and the ``main`` functions print; nothing here imports ``click``.
"""

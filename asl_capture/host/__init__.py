"""The authority host that runs inside the image (spec ASL/AUTH-HOST-IMAGE/1, sections 3 and 5).

:mod:`.config` loads ``/etc/asl-auth-host/config.yaml`` and computes the policy hash,
:mod:`.authhost` is the ``asl-auth-host`` service (open domain stores, enforce the DAM, log, READY),
:mod:`.admin` is ``asl-admin`` and :mod:`.rescue` is ``asl-rescue``. Only the ``main`` functions
print; they import nothing heavy (no ``cryptography``, no ``click``) so the service starts quickly
on slow (emulated) hardware.
"""

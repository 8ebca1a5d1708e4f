"""The host runtime's exception hierarchy: one base, :class:`HostError`, with specific subclasses.

The host's command-line tools catch :class:`HostError` in one place (:func:`asl_host.cli.run`),
print ``prog: ClassName: message`` on one line and exit with :attr:`HostError.exit_code`
(1 = a check failed / refused, 2 = usage, configuration or unreadable input).
"""

from __future__ import annotations

EXIT_FAILED = 1
EXIT_USAGE = 2


class HostError(Exception):
    """Base of every error the host runtime raises on purpose."""

    exit_code: int = EXIT_USAGE


class HostConfigError(HostError):
    """``config.yaml`` or ``policy.hash`` is missing, malformed or inconsistent."""


class StorageError(HostError):
    """The writable storage is missing, not mounted or not writable."""


class PolicyError(HostError):
    """The host refuses: the policy does not match its pinned hash or the data disk's witness."""

    exit_code = EXIT_FAILED

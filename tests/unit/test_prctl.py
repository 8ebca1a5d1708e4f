"""asl_capture.prctl: PR_SET_DUMPABLE/PR_GET_DUMPABLE through its own _ctypes binding, as ctypes sees them."""

from __future__ import annotations

import errno
import subprocess
import sys

import pytest

from asl_capture import prctl

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(2) is Linux's")

CHILD = """
import ctypes
from asl_capture import prctl
libc = ctypes.CDLL(None, use_errno=True)
print(prctl.is_dumpable(), libc.prctl(3, 0, 0, 0, 0))
prctl.make_undumpable()
print(prctl.is_dumpable(), libc.prctl(3, 0, 0, 0, 0))
"""


def test_a_fresh_process_is_dumpable_then_not_as_ctypes_sees_it() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "1", "False", "0"]


def test_a_failing_call_returns_minus_one_and_keeps_errno() -> None:
    function, get_errno = prctl._prctl()
    assert function(-1, 0, 0, 0, 0) == -1
    assert get_errno() == errno.EINVAL
    assert function(prctl.PR_GET_DUMPABLE, 0, 0, 0, 0) in (0, 1)

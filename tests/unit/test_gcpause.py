"""gcpause restores the collector's state, also when the block raises."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from asl_capture import gcpause


@pytest.fixture(autouse=True)
def _restore_gc() -> Iterator[None]:
    was = gc.isenabled()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


@pytest.mark.parametrize("enabled", [True, False])
def test_paused_disables_then_restores(enabled: bool) -> None:
    (gc.enable if enabled else gc.disable)()
    with gcpause.paused():
        assert not gc.isenabled()
        with gcpause.paused():  # nesting keeps it off until the outer block ends
            pass
        assert not gc.isenabled()
    assert gc.isenabled() is enabled


def test_paused_restores_after_an_exception() -> None:
    gc.enable()
    with pytest.raises(RuntimeError), gcpause.paused():
        raise RuntimeError("boom")
    assert gc.isenabled()

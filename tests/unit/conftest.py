"""Fixtures of the unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from asl_capture.format import _check


@pytest.fixture(params=["interpreted", "compiled"])
def parser_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run a test once with every document parsed by ``_check.interpret`` and once by the compiled
    parsers, so the two paths of ``Struct.from_value`` are held to the same results and errors."""
    monkeypatch.setattr(_check, "_PARSERS", {})
    monkeypatch.setattr(_check, "_USES", {})
    monkeypatch.setattr(_check, "INTERPRET_FIRST", 1 << 62 if request.param == "interpreted" else 0)
    yield request.param

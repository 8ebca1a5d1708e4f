"""Project defaults from ``[tool.asl-capture]`` in ``pyproject.toml``."""

from __future__ import annotations

from pathlib import Path

import pytest

from asl_capture.errors import UsageError
from asl_capture.projectconfig import ProjectConfig, load


def test_absent_file_or_table_gives_defaults(tmp_path: Path) -> None:
    assert load(tmp_path) == ProjectConfig()
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert load(tmp_path) == ProjectConfig()


def test_table_is_read(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.asl-capture]\nprovenance = "out/p"\nexclude = ["a", "b/*"]\n')
    assert load(tmp_path) == ProjectConfig(provenance=Path("out/p"), excludes=("a", "b/*"))


@pytest.mark.parametrize("body", [
    '[tool.asl-capture]\nprovenance = 3\n',
    '[tool.asl-capture]\nexclude = "out"\n',
    '[tool.asl-capture]\nexclude = [1]\n',
    '[tool.asl-capture]\nunknown = 1\n',
    '[tool.asl-capture]\nprovenance = \n',
])
def test_bad_tables_are_usage_errors(tmp_path: Path, body: str) -> None:
    (tmp_path / "pyproject.toml").write_text(body)
    with pytest.raises(UsageError, match=r"pyproject\.toml"):
        load(tmp_path)


def test_repository_defaults_put_the_chain_beside_the_iso() -> None:
    config = load(Path(__file__).resolve().parents[2])
    assert config.provenance == Path("out/provenance")
    assert "out/work" in config.excludes

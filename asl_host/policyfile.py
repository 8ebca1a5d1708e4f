"""The operator's policy file: YAML with the DomainPolicy fields (example: docs/examples/policy.yaml).

Arrays are put in canonical (sorted) order here; duplicates, unknown and missing fields are refused
by :meth:`DomainPolicy.from_value`, naming the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from asl_capture import dcbor
from asl_host.config import read_yaml
from asl_host.formats import DomainPolicy, FormatError


def _canonical(value: Any, where: str) -> dcbor.Value:
    if isinstance(value, dict):
        return {str(k): _canonical(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        items = [_canonical(v, where) for v in value]
        if not all(isinstance(i, str) for i in items):
            raise FormatError(f"{where}: expected a list of text")
        texts = [str(i) for i in items]
        if len(set(texts)) != len(texts):
            raise FormatError(f"{where}: duplicate entries")
        return list(sorted(texts))
    if isinstance(value, bool | int | str) or value is None:
        return value
    raise FormatError(f"{where}: {type(value).__name__} is not allowed in a policy")


def load_policy(path: Path) -> DomainPolicy:
    """Read a policy YAML file. Raises FormatError (one line, naming the file and field)."""
    data = read_yaml(path, FormatError)
    if isinstance(data, dict):
        data.setdefault("reserved0", 0)
    return DomainPolicy.from_value(_canonical(data, str(path)), str(path))

"""Shared by the event-model tests: the spec examples and comparable views of
both schema views (an EventRecord from the fast path, an Event from pydantic)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import msgspec

from mcpsift.events import Event, EventRecord

__all__ = [
    "EXAMPLES_PATH",
    "EXAMPLES",
    "TIMESTAMP_PATHS",
    "drop_none",
    "normalise_timestamps",
    "record_view",
    "model_view",
    "tagged",
]

# the project's copy of spec/examples.jsonl (tests/test_readme.py keeps it in step)
EXAMPLES_PATH = Path(__file__).resolve().parents[2] / "docs" / "examples.jsonl"
EXAMPLES: list[dict[str, Any]] = [json.loads(line) for line in EXAMPLES_PATH.read_text().splitlines() if line.strip()]
TIMESTAMP_PATHS = (("time",), ("token", "issued_at"), ("token", "expires_at"))


def drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_none(v) for v in value]
    return value


def normalise_timestamps(doc: dict[str, Any]) -> dict[str, Any]:
    for path in TIMESTAMP_PATHS:
        obj: Any = doc
        for key in path[:-1]:
            obj = obj.get(key) if isinstance(obj, dict) else None
        if isinstance(obj, dict) and isinstance(obj.get(path[-1]), str):
            obj[path[-1]] = dt.datetime.fromisoformat(obj[path[-1]]).isoformat()
    return doc


_RECORD_TOP_DEFAULTS = {
    f.encode_name: f.default
    for f in msgspec.structs.fields(EventRecord)
    if f.default is not msgspec.NODEFAULT and f.default is not None
}


def record_view(record: Any) -> dict[str, Any]:
    """An EventRecord as plain JSON values, comparable with :func:`model_view`.

    ``EventRecord`` omits fields at their default (``tenant: "default"``) when
    converted; those are filled back in, since the decoded value is the same.
    """
    doc = drop_none(msgspec.to_builtins(record))
    for key, default in _RECORD_TOP_DEFAULTS.items():
        doc.setdefault(key, default)
    return normalise_timestamps(doc)


def model_view(model: Event) -> dict[str, Any]:
    return normalise_timestamps(drop_none(model.model_dump(mode="json", by_alias=True, exclude_none=True)))


def tagged(value: Any) -> Any:
    """``value`` with every scalar tagged by its type, so 1, 1.0 and True differ."""
    if isinstance(value, dict):
        return ("dict", sorted((k, tagged(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("list", [tagged(v) for v in value])
    return (type(value).__name__, value)

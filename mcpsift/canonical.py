"""Canonical JSON and ``sha256:`` references, as spec/events.md defines them.

Every producer (collectors, gateways, tests) and every consumer computes
``definition_hash`` and ``arguments_hash`` with these functions, so one tool
definition has exactly one hash everywhere.

Canonical JSON here means: object keys sorted (by code point, which equals
UTF-8 byte order), no insignificant white space, UTF-8 without ``\\u``
escapes for non-ASCII text.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import orjson

__all__ = [
    "canonical_json",
    "sha256_ref",
    "definition_hash",
    "arguments_hash",
    "TOOL_DEFINITION_KEYS",
]

#: The members of a tool definition that its ``definition_hash`` covers.
TOOL_DEFINITION_KEYS = ("name", "description", "input_schema", "annotations")


def canonical_json(value: Any) -> bytes:
    """Serialise ``value`` to canonical JSON bytes."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        # orjson refuses integers beyond 64 bits; the standard library writes
        # them exactly and otherwise produces the same bytes for JSON values.
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")


def sha256_ref(data: bytes | str) -> str:
    """``"sha256:<hex>"`` of ``data`` (text is encoded as UTF-8)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return "sha256:" + hashlib.sha256(data).hexdigest()


def definition_hash(tool: dict[str, Any]) -> str:
    """The ``definition_hash`` of a tool definition given as a JSON-like dict.

    Only ``name``, ``description``, ``input_schema`` and ``annotations`` count;
    members that are absent (or ``None``) are left out rather than hashed as
    ``null``, so a producer that omits ``input_schema`` and one that never had
    it agree.
    """
    subset = {k: tool[k] for k in TOOL_DEFINITION_KEYS if tool.get(k) is not None}
    return sha256_ref(canonical_json(subset))


def arguments_hash(arguments: dict[str, Any] | None) -> str:
    """The ``arguments_hash`` of a tool call's arguments, before redaction."""
    return sha256_ref(canonical_json(arguments if arguments is not None else {}))

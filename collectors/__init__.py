"""Collector hooks embedded in MCP servers and gateways (light: pydantic, msgspec, orjson only).

The hooks themselves (SDK middleware, token verifier, ASGI middleware,
publishers) arrive with their own issue; what every producer needs already
lives here: the canonical hashes and token fingerprinting, so a raw token
never leaves the process that saw it.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Optional

from mcpsift.canonical import arguments_hash, canonical_json, definition_hash, sha256_ref

__all__ = ["fingerprint_token", "arguments_hash", "definition_hash", "canonical_json", "sha256_ref"]


def fingerprint_token(token: str | bytes, key: Optional[bytes] = None) -> str:
    """The ``token.fingerprint`` of a raw credential.

    With ``key``: ``"hmac-sha256:<hex>"``, a keyed HMAC, so the fingerprint
    cannot be checked against guessed tokens by whoever reads the log.
    Without: ``"sha256:<hex>"`` of the raw token (the spec's plain form).
    """
    raw = token.encode("utf-8") if isinstance(token, str) else token
    if key:
        return "hmac-sha256:" + hmac.new(key, raw, hashlib.sha256).hexdigest()
    return sha256_ref(raw)

"""Resource URI normalisation, shared by enrichment and the detectors.

Two spellings of one MCP server's canonical resource URI must compare equal:
scheme and host are case-insensitive, a default port and a trailing slash do
not change the resource (spec/detections.md, ``auth.audience_mismatch``).
"""

from __future__ import annotations

import functools
from urllib.parse import urlsplit, urlunsplit

__all__ = ["normalize_resource"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


@functools.lru_cache(maxsize=4096)
def normalize_resource(uri: str) -> str:
    """The comparable form of a resource URI; a value that is not a URL is returned stripped."""
    text = uri.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return text.rstrip("/")
    if not parts.scheme or not parts.netloc:
        return text.rstrip("/")
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    netloc = host
    if parts.username is not None:
        userinfo = parts.username + (f":{parts.password}" if parts.password is not None else "")
        netloc = f"{userinfo}@{host}"
    if port is not None and _DEFAULT_PORTS.get(scheme) != port:
        netloc = f"{netloc}:{port}"
    path = parts.path.rstrip("/")
    return urlunsplit((scheme, netloc, path, parts.query, parts.fragment))

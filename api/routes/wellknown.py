"""``GET /.well-known/oauth-protected-resource``: the RFC 9728 protected-resource
metadata of this API (open: a client reads it before it has a token)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ..auth import WELL_KNOWN, protected_resource_metadata
from ..deps import SettingsDep

__all__ = ["router"]

router = APIRouter(tags=["auth"])

_EXAMPLE = {
    "resource": "https://mcpsift.example.com",
    "authorization_servers": ["https://idp.example.com"],
    "bearer_methods_supported": ["header"],
    "scopes_supported": ["mcpsift:ingest", "mcpsift:viewer", "mcpsift:analyst", "mcpsift:admin"],
    "resource_name": "mcpsift audit and incident-response API",
}


@router.get(
    WELL_KNOWN,
    summary="OAuth 2.0 protected-resource metadata (RFC 9728)",
    responses={200: {"content": {"application/json": {"example": _EXAMPLE}}}},
)
async def protected_resource(settings: SettingsDep) -> dict[str, Any]:
    return protected_resource_metadata(settings)


@router.get(WELL_KNOWN + "/{resource_path:path}", include_in_schema=False)
async def protected_resource_with_path(resource_path: str, settings: SettingsDep) -> dict[str, Any]:
    # RFC 9728 §3.1: a resource with a path has its metadata at the well-known path + that path
    return protected_resource_metadata(settings)

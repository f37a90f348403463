"""``/v1/apikeys``: API keys for automation (admin only). A key is in the
answer to its creation and never again; only its hash is stored.

An admin limited to some tenants can make, see and revoke only keys within
those tenants; an all-tenant key needs an all-tenant admin.
"""

from __future__ import annotations

from typing import Annotated, Optional

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mcpsift.store.keys import ApiKey, ApiKeys

from ..deps import StoreDep
from ..security import ROLES, Principal, TenantScope, require

__all__ = ["router"]

router = APIRouter(prefix="/v1/apikeys", tags=["apikeys"])

AdminDep = Annotated[Principal, Depends(require("admin"))]


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"role": "viewer", "tenants": ["acme"], "name": "grafana"}]},
    )

    role: str = Field(description=f"one of {', '.join(ROLES)}")
    #: the tenants the key may see; empty with all_tenants=true for every tenant
    tenants: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(default_factory=list, max_length=100)
    all_tenants: bool = False
    name: str = Field(default="", max_length=200)

    @model_validator(mode="after")
    def _check(self) -> "ApiKeyCreate":
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}; roles: {', '.join(ROLES)}")
        if self.all_tenants == bool(self.tenants):
            raise ValueError("give tenants, or all_tenants=true (exactly one of them)")
        return self


class ApiKeyPublic(BaseModel):
    key_id: str
    name: str
    roles: list[str]
    tenants: Optional[list[str]]
    all_tenants: bool
    created_by: str
    created_at: str
    revoked_at: Optional[str]


class ApiKeyCreated(ApiKeyPublic):
    #: the key itself: shown this once, not stored
    key: str


def _within(scope: TenantScope, key: ApiKey) -> bool:
    if scope.tenants is None:
        return True
    return key.tenants is not None and set(key.tenants) <= scope.tenants


@router.get("", response_model=list[ApiKeyPublic], summary="Every API key (never the secrets)")
async def list_keys(principal: AdminDep, store: StoreDep) -> list[dict]:
    keys = await run_in_threadpool(ApiKeys(store).list)
    return [k.public() for k in keys if _within(principal.scope, k)]


@router.post("", response_model=ApiKeyCreated, status_code=201, summary="Make an API key; it is shown only in this answer")
async def create_key(body: ApiKeyCreate, principal: AdminDep, store: StoreDep) -> dict:
    tenants = None if body.all_tenants else body.tenants
    if principal.scope.tenants is not None and (tenants is None or not set(tenants) <= principal.scope.tenants):
        raise HTTPException(403, "you can make keys only for your own tenants")
    record, key = await run_in_threadpool(
        ApiKeys(store).create, [body.role], tenants, body.name, principal.subject
    )
    return {**record.public(), "key": key}


@router.delete("/{key_id}", response_model=ApiKeyPublic, summary="Revoke an API key (at once, for good)")
async def revoke_key(key_id: str, principal: AdminDep, store: StoreDep, request: Request) -> dict:
    keys = ApiKeys(store)
    key = await run_in_threadpool(keys.get, key_id)
    if key is None or not _within(principal.scope, key):
        raise HTTPException(404, f"no API key {key_id!r}; `mcpsift apikey list` shows them")
    revoked = await run_in_threadpool(keys.revoke, key_id)
    authenticator = getattr(request.app.state, "authenticator", None)
    if authenticator is not None and hasattr(authenticator, "forget_key"):
        authenticator.forget_key(key_id)
    assert revoked is not None
    return revoked.public()

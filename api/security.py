"""Who is asking: the :class:`Principal` every route gets, roles, and the
``require(role)`` dependency.

Routes never authenticate themselves: they declare what they need
(``principal: Annotated[Principal, Depends(require("viewer"))]``) and pass
``principal.scope`` to the store, whose queries apply it (tenant isolation
at the store layer, so no route can forget it).

How a request becomes a principal is the app's ``authenticator`` (JWT bearer
tokens, API keys; ``app.state.authenticator``, set when the app is built).
Without one the app runs in insecure local mode and every caller is
:data:`LOCAL_ADMIN` — ``mcpsift serve --insecure-local`` only.
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Optional, Protocol

from fastapi import HTTPException, Request
from pydantic import BaseModel, ConfigDict

__all__ = [
    "ROLES",
    "Role",
    "Principal",
    "TenantScope",
    "Authenticator",
    "LOCAL_ADMIN",
    "current_principal",
    "require",
    "sender_tenants",
]

Role = Literal["ingest", "viewer", "analyst", "admin"]
ROLES: tuple[str, ...] = ("ingest", "viewer", "analyst", "admin")

#: what each role may also do: admin ⊇ analyst ⊇ viewer; ingest only writes events
_IMPLIES: dict[str, frozenset[str]] = {
    "ingest": frozenset({"ingest"}),
    "viewer": frozenset({"viewer"}),
    "analyst": frozenset({"analyst", "viewer"}),
    "admin": frozenset({"admin", "analyst", "viewer"}),
}


class TenantScope(BaseModel):
    """The tenants a caller may see: ``tenants=None`` means every tenant (an
    explicitly multi-tenant principal); otherwise exactly these."""

    model_config = ConfigDict(frozen=True)

    tenants: Optional[frozenset[str]] = None

    def allows(self, tenant: str) -> bool:
        return self.tenants is None or tenant in self.tenants


class Principal(BaseModel):
    model_config = ConfigDict(frozen=True)

    #: who (JWT ``sub``, or ``apikey:<key id>``)
    subject: str
    roles: frozenset[str]
    scope: TenantScope
    #: how they proved it: ``jwt``, ``api_key`` or ``insecure_local``
    via: str

    def has(self, role: str) -> bool:
        return any(role in _IMPLIES.get(r, frozenset()) for r in self.roles)


LOCAL_ADMIN = Principal(
    subject="local", roles=frozenset({"admin", "ingest"}), scope=TenantScope(tenants=None), via="insecure_local"
)


class Authenticator(Protocol):
    async def authenticate(self, request: Request) -> Principal:
        """The principal of ``request``; raises HTTPException(401) with a
        ``WWW-Authenticate`` header when it has no valid credentials."""
        ...


async def current_principal(request: Request) -> Principal:
    """The caller; also kept in ``request.state.principal`` for the access audit."""
    cached = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    authenticator: Any = getattr(request.app.state, "authenticator", None)
    principal = LOCAL_ADMIN if authenticator is None else await authenticator.authenticate(request)
    request.state.principal = principal
    return principal


def sender_tenants(request: Request) -> Optional[frozenset[str]]:
    """The tenants the authenticated caller may write events for (None: any);
    read after ``require("ingest")`` ran for the request."""
    principal = getattr(request.state, "principal", None)
    return principal.scope.tenants if principal is not None else None


def require(role: str) -> Callable[..., Any]:
    """A dependency: the caller's principal, if it has ``role`` (403 otherwise)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r} (roles: {', '.join(ROLES)})")

    async def dependency(request: Request) -> Principal:
        principal = await current_principal(request)
        if not principal.has(role):
            raise HTTPException(403, f"this needs the {role} role")
        return principal

    dependency.__name__ = f"require_{role}"
    return dependency

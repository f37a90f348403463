"""Shared by the query-API tests: demo traffic in a store, a test authenticator, a client.

The data is real: :func:`mcpsift.dashboards.load.load_demo` validates every
generated event with the pipeline's own stage, stores it with the embedded
runner's row function, and runs the detectors to store the alerts (3 tenants).
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

from fastapi import HTTPException, Request

from mcpsift.api.security import Principal, TenantScope

__all__ = ["HeaderAuthenticator", "as_", "TENANTS", "load", "window_params"]

TENANTS = ("acme", "globex", "initech")


class HeaderAuthenticator:
    """``X-Test-Principal: <role>:<tenant>[,<tenant>]`` (``*`` = every tenant) -> a Principal."""

    async def authenticate(self, request: Request) -> Principal:
        value = request.headers.get("x-test-principal")
        if not value:
            raise HTTPException(401, "no credentials", headers={"WWW-Authenticate": "Bearer"})
        role, _, tenants = value.partition(":")
        scope = TenantScope(tenants=None if tenants == "*" else frozenset(tenants.split(",")))
        return Principal(subject=f"user-{role}-{tenants}", roles=frozenset({role}), scope=scope, via="api_key")


def as_(role: str, tenants: str) -> dict[str, str]:
    return {"X-Test-Principal": f"{role}:{tenants}"}


def load(store: Any) -> Any:
    from mcpsift.dashboards.load import load_demo

    return load_demo(store, hours=0.5, tenants=len(TENANTS), seed=1)


def window_params(report: Any) -> dict[str, str]:
    """since/until covering all loaded traffic."""
    return {
        "since": (report.start - _dt.timedelta(minutes=5)).isoformat(),
        "until": (report.end + _dt.timedelta(minutes=5)).isoformat(),
    }

"""``GET /healthz``: liveness plus the runner's progress counters (open: no tenant data, no secrets)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ..deps import RunnerDep
from .otlp import counters_of

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz(request: Request, runner: RunnerDep) -> dict[str, Any]:
    status = runner.status()
    # open to anyone (liveness): counters only, and of a runner error only its kind,
    # since its message may quote stored data (the full text is in serve's log)
    if status["error"] is not None:
        status["error"] = str(status["error"]).split(":", 1)[0]
    return {"status": "ok" if status["error"] is None else "degraded", **status, "otlp": counters_of(request.app).as_dict()}

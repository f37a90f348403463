"""``GET /healthz``: liveness plus the runner's progress counters."""

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
    return {"status": "ok" if status["error"] is None else "degraded", **status, "otlp": counters_of(request.app).as_dict()}

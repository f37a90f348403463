"""``/v1/outputs``: SIEM delivery status, re-drive of dead deliveries, re-enabling
an output its receiver disabled (what ``mcpsift outputs`` calls while ``serve`` runs)."""

from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, Depends, HTTPException
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict

from ..deps import RunnerDep
from ..security import require

__all__ = ["router"]

router = APIRouter(prefix="/v1/outputs", tags=["outputs"], dependencies=[Depends(require("viewer"))])


class RedriveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: only these alert ids (default: every dead delivery of the output)
    alert_ids: Optional[list[str]] = None


def _lane_or_404(runner: Any, name: str) -> None:
    if name not in runner.dispatcher.lanes:
        known = ", ".join(sorted(runner.dispatcher.lanes)) or "none configured"
        raise HTTPException(404, f"no enabled output named {name!r} (outputs: {known})")


@router.get("", summary="Per output: backlog, delivered, dead, last error, disabled state")
async def outputs_status(runner: RunnerDep) -> list[dict[str, Any]]:
    return await run_in_threadpool(runner.dispatcher.status)


@router.post(
    "/{name}/redrive", summary="Make dead deliveries of this output pending again", dependencies=[Depends(require("admin"))]
)
async def redrive(name: str, runner: RunnerDep, body: Optional[RedriveRequest] = None) -> dict[str, Any]:
    _lane_or_404(runner, name)
    count = await run_in_threadpool(
        runner.store.redrive_deliveries, name, body.alert_ids if body else None
    )
    runner.dispatcher.wake()
    return {"output": name, "redriven": count}


@router.post(
    "/{name}/enable", summary="Re-enable an output its receiver disabled (HTTP 410)", dependencies=[Depends(require("admin"))]
)
async def enable(name: str, runner: RunnerDep) -> dict[str, Any]:
    _lane_or_404(runner, name)
    await run_in_threadpool(runner.dispatcher.enable, name)
    return {"output": name, "enabled": True}

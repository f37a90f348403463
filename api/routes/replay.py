"""``/v1/replay``: run the detectors again over a stored time range (admin).

``POST /v1/replay`` starts a job (202) and answers its progress;
``GET /v1/replay/{job_id}`` follows it; ``GET /v1/replay`` lists this
process's jobs. See :mod:`mcpsift.streams.replay` for what a replay does.
"""

from __future__ import annotations

import datetime as _dt
from typing import Annotated, Any, Optional

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mcpsift.detectors import RULES
from mcpsift.streams.outbox import Outbox
from mcpsift.streams.replay import ReplayBusy, ReplayJob, ReplayRunner

from ..deps import SettingsDep, StoreDep
from ..security import Principal, require

__all__ = ["router", "MAX_REPLAY_DAYS"]

router = APIRouter(prefix="/v1/replay", tags=["replay"])

#: the longest range one replay may cover
MAX_REPLAY_DAYS = 31

AdminDep = Annotated[Principal, Depends(require("admin"))]


class ReplayRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"since": "2026-11-20T00:00:00Z", "until": "2026-11-21T00:00:00Z", "rules": ["auth.token_reuse_across_audiences"]}]
        },
    )

    since: _dt.datetime
    until: _dt.datetime
    #: only these rule ids (default: every enabled rule)
    rules: Optional[list[str]] = Field(default=None, min_length=1, max_length=len(RULES))

    @model_validator(mode="after")
    def _check(self) -> "ReplayRequest":
        for name in ("since", "until"):
            if getattr(self, name).tzinfo is None:
                setattr(self, name, getattr(self, name).replace(tzinfo=_dt.timezone.utc))
        if self.since >= self.until:
            raise ValueError("since must be before until")
        if self.until - self.since > _dt.timedelta(days=MAX_REPLAY_DAYS):
            raise ValueError(f"a replay covers at most {MAX_REPLAY_DAYS} days; split the range")
        unknown = sorted(set(self.rules or ()) - set(RULES))
        if unknown:
            raise ValueError(f"unknown rule id(s) {', '.join(unknown)} (see `mcpsift rules`)")
        return self


def _runner(request: Request) -> ReplayRunner:
    state = request.app.state
    if getattr(state, "replays", None) is None:
        state.replays = ReplayRunner()
    return state.replays


def _visible(job: ReplayJob, principal: Principal) -> bool:
    mine = principal.scope.tenants
    return mine is None or (job.tenants is not None and job.tenants <= mine)


@router.post("", status_code=202, summary="Re-run the detectors over a stored time range")
async def start_replay(
    body: ReplayRequest, request: Request, principal: AdminDep, store: StoreDep, settings: SettingsDep
) -> dict[str, Any]:
    runner = getattr(request.app.state, "runner", None)
    job = ReplayJob(
        store=store,
        settings=settings,
        since=body.since,
        until=body.until,
        rules=body.rules,
        tenants=principal.scope.tenants,
        outbox=Outbox(store, settings.outputs, getattr(runner, "dispatcher", None)),
        requested_by=principal.subject,
    )
    try:
        _runner(request).start(job)
    except ReplayBusy as exc:
        raise HTTPException(409, str(exc)) from None
    return job.progress()


@router.get("", summary="Replays run by this process, newest first")
async def list_replays(request: Request, principal: AdminDep) -> list[dict[str, Any]]:
    jobs = [j for j in _runner(request).jobs.values() if _visible(j, principal)]
    return [j.progress() for j in sorted(jobs, key=lambda j: j.started_at or 0, reverse=True)]


@router.get("/{job_id}", summary="Progress of one replay")
async def replay_status(job_id: str, request: Request, principal: AdminDep) -> dict[str, Any]:
    job = _runner(request).jobs.get(job_id)
    if job is None or not _visible(job, principal):
        raise HTTPException(404, f"no replay {job_id!r} in this process")
    return job.progress()

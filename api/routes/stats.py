"""``GET /v1/stats``: counts over time for quick charts."""

from __future__ import annotations

import datetime as _dt
from typing import Annotated, Literal, Optional

from fastapi import APIRouter, Query

from mcpsift.store import queries

from ..deps import QueryLimitsDep, StoreDep, ViewerDep
from ..models import StatsPoint, StatsPublic, StatsSeries
from ..querying import run_query

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["stats"])


@router.get(
    "/stats",
    response_model=StatsPublic,
    summary="Counts per time bucket: events by type or tenant, alerts by rule or severity",
    description="The range defaults to the last 24 hours; at most 2,000 buckets.",
)
async def get_stats(
    principal: ViewerDep,
    store: StoreDep,
    limits: QueryLimitsDep,
    by: Literal["type", "tenant", "rule", "severity"] = "type",
    bucket: Literal["minute", "five_minutes", "hour", "day"] = "hour",
    tenant: Annotated[Optional[str], Query(max_length=1024)] = None,
    since: Optional[_dt.datetime] = None,
    until: Optional[_dt.datetime] = None,
) -> StatsPublic:
    def read():  # type: ignore[no-untyped-def]
        window = queries.resolve_range(since, until, limits)
        return window, queries.stats(store, principal.scope, window, by=by, bucket=bucket, tenant=tenant)

    window, rows = await run_query(read)
    series: dict[str, StatsSeries] = {}
    for row in rows:
        entry = series.setdefault(row["key"], StatsSeries(key=row["key"], total=0, points=[]))
        entry.points.append(StatsPoint(t=row["bucket_start"], count=int(row["count"])))
        entry.total += int(row["count"])
    return StatsPublic(
        by=by, bucket=bucket, since=window.since, until=window.until,
        total=sum(s.total for s in series.values()), series=sorted(series.values(), key=lambda s: -s.total),
    )

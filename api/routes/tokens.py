"""``GET /v1/tokens/{fingerprint}``: every server a token was presented to, with the verdicts."""

from __future__ import annotations

import datetime as _dt
from typing import Annotated, Optional

from fastapi import APIRouter, Path

from mcpsift.store import queries

from ..deps import QueryLimitsDep, StoreDep, ViewerDep
from ..models import TokenPublic
from ..querying import not_found, run_query

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["timelines"])


@router.get(
    "/tokens/{fingerprint}",
    response_model=TokenPublic,
    summary="A token (by fingerprint): servers, verdicts, principals, first/last seen",
    description="The range defaults to the last 31 days. Follow up with "
    "`GET /v1/events?token_fingerprint=...` for the events themselves.",
    responses={404: {"description": "no such token in your tenants and range"}},
)
async def token_summary(
    principal: ViewerDep,
    store: StoreDep,
    limits: QueryLimitsDep,
    fingerprint: Annotated[str, Path(max_length=1024, examples=["sha256:5d41402abc4b2a76b9719d911017c592"])],
    since: Optional[_dt.datetime] = None,
    until: Optional[_dt.datetime] = None,
) -> TokenPublic:
    def read():  # type: ignore[no-untyped-def]
        window = queries.resolve_range(since, until, limits, default_span=limits.lookup_span)
        return queries.token_summary(store, principal.scope, fingerprint, window)

    found = await run_query(read)
    if found is None:
        raise not_found("such token")
    return TokenPublic(**found)

"""Running store reads from a route: off the event loop, with errors a caller can act on.

:func:`run_query` is the one place routes call the query layer through: a
:class:`~mcpsift.store.queries.QueryError` (bad filter, cursor, range) becomes a
400 with its message; any other failure of the store becomes a 503 that says
to retry or narrow the query — never SQL or a stack trace (those go to the
server log).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, TypeVar

from fastapi import HTTPException
from fastapi.concurrency import run_in_threadpool

from mcpsift.store.queries import QueryError

__all__ = ["run_query", "not_found"]

log = logging.getLogger("mcpsift.api")
R = TypeVar("R")


async def run_query(fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
    try:
        return await run_in_threadpool(fn, *args, **kwargs)
    except QueryError as exc:
        raise HTTPException(400, str(exc)) from None
    except LookupError:
        raise
    except Exception:
        log.exception("query %s failed", getattr(fn, "__name__", fn))
        raise HTTPException(
            503, "the store could not answer this query; retry, or narrow the time range and filters"
        ) from None


def not_found(what: str) -> HTTPException:
    return HTTPException(404, f"no {what} in the tenants you may see (check the id and the since/until range)")

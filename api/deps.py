"""Dependency aliases shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from mcpsift.settings import Settings
from mcpsift.store import Store
from mcpsift.store.queries import QueryLimits
from mcpsift.streams.embedded import EmbeddedRunner

from .security import Principal, require

__all__ = ["StoreDep", "RunnerDep", "SettingsDep", "ViewerDep", "AnalystDep", "AdminDep", "QueryLimitsDep"]


def _store(request: Request) -> Store:
    return request.app.state.store


def _runner(request: Request) -> EmbeddedRunner:
    return request.app.state.runner


def _settings(request: Request) -> Settings:
    return request.app.state.settings


StoreDep = Annotated[Store, Depends(_store)]
RunnerDep = Annotated[EmbeddedRunner, Depends(_runner)]
SettingsDep = Annotated[Settings, Depends(_settings)]


def _query_limits(request: Request) -> "QueryLimits":
    return getattr(request.app.state, "query_limits", None) or QueryLimits()


#: the caller, if they may read (viewer) / triage alerts (analyst); pass ``.scope`` to the store
ViewerDep = Annotated[Principal, Depends(require("viewer"))]
AnalystDep = Annotated[Principal, Depends(require("analyst"))]
AdminDep = Annotated[Principal, Depends(require("admin"))]
QueryLimitsDep = Annotated[QueryLimits, Depends(_query_limits)]

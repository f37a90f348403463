"""Dependency aliases shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from mcpsift.settings import Settings
from mcpsift.store import Store
from mcpsift.streams.embedded import EmbeddedRunner

__all__ = ["StoreDep", "RunnerDep", "SettingsDep"]


def _store(request: Request) -> Store:
    return request.app.state.store


def _runner(request: Request) -> EmbeddedRunner:
    return request.app.state.runner


def _settings(request: Request) -> Settings:
    return request.app.state.settings


StoreDep = Annotated[Store, Depends(_store)]
RunnerDep = Annotated[EmbeddedRunner, Depends(_runner)]
SettingsDep = Annotated[Settings, Depends(_settings)]

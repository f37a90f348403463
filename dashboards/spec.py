"""The one source of truth for a panel: a small typed spec per panel.

A :class:`PanelSpec` says what a panel shows (title, description, kind), how
it gets it (``sql`` with the ClickHouse plugin's macros and Grafana template
variables, ``format``) and what comes back (``columns``: the exact result
columns, in order, with the time column and the label columns named). The
Grafana JSON (:mod:`mcpsift.dashboards.build`), the PNG snapshots
(:mod:`mcpsift.dashboards.snapshot`) and the test that runs every query on
chDB all read these specs; nothing about a panel is written twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

__all__ = ["PanelKind", "QueryFormat", "Link", "PanelSpec", "VariableSpec", "DashboardSpec"]

PanelKind = Literal["timeseries", "barchart", "table", "stat", "piechart"]
QueryFormat = Literal["time_series", "table"]


@dataclass(frozen=True)
class Link:
    """A data link on one column of a table: ``url`` may use Grafana variables
    (``${api_base_url:raw}``) and ``${__value.raw:percentencode}`` for the cell."""

    column: str
    title: str
    url: str
    new_tab: bool = True


@dataclass(frozen=True)
class PanelSpec:
    key: str
    title: str
    description: str
    kind: PanelKind
    sql: str
    #: the result columns, exactly and in order
    columns: tuple[str, ...]
    #: (x, y, w, h) on Grafana's 24-column grid
    grid: tuple[int, int, int, int]
    format: QueryFormat = "table"
    #: the DateTime column a time series is drawn over (None: no time axis)
    time_column: Optional[str] = None
    #: string columns that name a series (time series in long format) or a
    #: category (bar and pie charts); the remaining columns are values
    label_columns: tuple[str, ...] = ()
    unit: str = "short"
    #: per-column units that differ from ``unit`` (table columns, ratios)
    column_units: dict[str, str] = field(default_factory=dict)
    stacked: bool = False
    links: tuple[Link, ...] = ()
    decimals: Optional[int] = None

    @property
    def value_columns(self) -> tuple[str, ...]:
        skip = set(self.label_columns) | ({self.time_column} if self.time_column else set())
        return tuple(c for c in self.columns if c not in skip)


@dataclass(frozen=True)
class VariableSpec:
    """A template variable beyond the ones every dashboard has.

    ``kind``: ``textbox`` (free text, default ``default``) or ``constant``
    (hidden, value ``default``)."""

    name: str
    label: str
    kind: Literal["textbox", "constant"]
    default: str = ""
    description: str = ""


@dataclass(frozen=True)
class DashboardSpec:
    uid: str
    slug: str
    title: str
    description: str
    panels: tuple[PanelSpec, ...]
    variables: tuple[VariableSpec, ...] = ()
    tags: tuple[str, ...] = ("mcpsift",)

    def panel(self, key: str) -> PanelSpec:
        for p in self.panels:
            if p.key == key:
                return p
        raise KeyError(f"dashboard {self.slug} has no panel {key!r}")

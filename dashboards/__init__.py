"""Grafana dashboards on ClickHouse, built from code (``mcpsift.dashboards``).

* :mod:`.spec` and :mod:`.panels`: every panel as a typed spec (the one source of truth);
* :mod:`.macros`: the ClickHouse plugin's macro and variable expansion;
* :mod:`.build`: the Grafana JSON, with grafana-foundation-sdk, into ``json/``;
* :mod:`.snapshot`: the panels' queries run against a store and drawn as PNGs;
* :mod:`.load`: demo traffic into a store for snapshots and tests;
* ``provisioning/``: Grafana datasource and dashboard provisioning files.

This package imports nothing heavy; the SDK and matplotlib load in the
modules that need them.
"""

from .panels import DASHBOARDS
from .spec import DashboardSpec, Link, PanelSpec, VariableSpec

__all__ = ["DASHBOARDS", "DashboardSpec", "Link", "PanelSpec", "VariableSpec"]

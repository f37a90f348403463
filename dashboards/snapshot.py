"""Dashboards as pictures: every panel's query run against a store, drawn with matplotlib.

One PNG per dashboard, panels laid out on Grafana's 24-column grid as in the
JSON: time series as lines (stacked areas where the panel stacks), bar charts
as horizontal bars, pie charts as donuts, stats as big numbers, tables as text
tables. The SQL is the panel's own, expanded by :mod:`mcpsift.dashboards.macros`
exactly as for the tests: what the picture shows is what Grafana would show.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from .macros import ALL, QueryContext, expand, interval_for
from .panels import DASHBOARDS
from .spec import DashboardSpec, PanelSpec

__all__ = ["PanelResult", "run_panel", "query_context", "snapshot", "data_extent", "render", "most_alerted_principal"]

_UTC = _dt.timezone.utc
#: Grafana's grid row height in pixels and the width of the picture
_ROW_PX = 30
_WIDTH_PX = 2000
_DPI = 100
_BG, _PANEL, _TEXT, _MUTED, _GRID = "#111217", "#181b1f", "#ccccdc", "#8e8e9e", "#2c3235"
_PALETTE = ("#73bf69", "#f2cc0c", "#5794f2", "#ff9830", "#f2495c", "#b877d9", "#8ab8ff", "#ffcb7d", "#96d98d",
            "#ff7383", "#ca95e5", "#fade2a")
_SEVERITY_COLOURS = {"critical": "#c4162a", "high": "#f2495c", "medium": "#ff9830", "low": "#5794f2"}
_MAX_SERIES = 8


@dataclass
class PanelResult:
    panel: PanelSpec
    columns: list[str] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    error: Optional[str] = None


def data_extent(store: Any) -> Optional[tuple[_dt.datetime, _dt.datetime]]:
    """(first, last) event time in the store, or None when it holds no events."""
    rows = store.query_rows(f"SELECT min(time), max(time), count() FROM {store.database}.events")
    if not rows or not int(rows[0][2]):
        return None
    first, last = (t.replace(tzinfo=_UTC) if t.tzinfo is None else t for t in rows[0][:2])
    return first, last


def query_context(store: Any, start: _dt.datetime, end: _dt.datetime, *, tenants: Sequence[str] = (),
                  servers: Sequence[str] = (), entity: Optional[dict[str, str]] = None,
                  max_data_points: int = 300) -> QueryContext:
    """The variables as a dashboard would have them: ``tenants``/``servers`` selected
    (empty: All), the Investigation entity (principal/session/token; empty: any)."""
    db = store.database
    options = {
        "tenant": [r[0] for r in store.query_rows(f"SELECT DISTINCT tenant FROM {db}.events ORDER BY tenant")],
        "server": [r[0] for r in store.query_rows(
            f"SELECT DISTINCT server_resource FROM {db}.events WHERE server_resource != '' ORDER BY server_resource")],
    }
    variables: dict[str, Any] = {
        "database": db,
        "tenant": list(tenants) or ALL,
        "server": list(servers) or ALL,
        "principal": "", "session": "", "token": "",
        "api_base_url": "",
    }
    variables.update(entity or {})
    return QueryContext(start, end, interval_for(start, end, max_data_points), variables, options)


def run_panel(store: Any, panel: PanelSpec, ctx: QueryContext) -> PanelResult:
    """Run one panel's query; an error is kept in the result, not raised."""
    try:
        result = store.client.query(expand(panel.sql, ctx))
    except Exception as exc:  # a picture with the error in it beats no picture
        return PanelResult(panel, error=str(exc).strip().splitlines()[0][:300])
    return PanelResult(panel, list(result.column_names), list(result.result_rows))


# ---------------------------------------------------------------------------
# drawing


def _fmt(value: Any, unit: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, _dt.datetime):
        return value.strftime("%m-%d %H:%M:%S")
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if unit == "percentunit":
        return f"{value * 100:.1f}%"
    if unit == "s":
        return f"{value:.2f} s" if value < 100 else f"{value:,.0f} s"
    if unit == "ms":
        return f"{value:,.0f} ms"
    suffix = {"cpm": "/min", "cps": "/s"}.get(unit, "")
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}{suffix}"
    return f"{int(value):,}{suffix}"


def _colour(label: str, i: int) -> str:
    return _SEVERITY_COLOURS.get(label, _PALETTE[i % len(_PALETTE)])


def _style(ax: Any, title: str) -> None:
    ax.set_facecolor(_PANEL)
    ax.set_title(title, loc="left", color=_TEXT, fontsize=11, fontweight="bold", pad=6)
    for spine in ax.spines.values():
        spine.set_color(_GRID)
    ax.tick_params(colors=_MUTED, labelsize=8)


def _message(ax: Any, text: str, colour: str = _MUTED) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(0.5, 0.5, text, ha="center", va="center", color=colour, fontsize=10, wrap=True, transform=ax.transAxes)


def _aware(t: _dt.datetime) -> _dt.datetime:
    return t.replace(tzinfo=_UTC) if t.tzinfo is None else t


def _series(res: PanelResult, ctx: QueryContext) -> tuple[list[_dt.datetime], dict[str, list[float]]]:
    """Long rows (t, labels..., values...) as one list per series, on the time axis
    of every bucket in the range (a bucket without rows counts 0)."""
    p = res.panel
    idx = {c: i for i, c in enumerate(res.columns)}
    step = _dt.timedelta(seconds=ctx.interval_s)
    epoch = _dt.datetime(1970, 1, 1, tzinfo=_UTC)
    first = epoch + ((_aware(ctx.start) - epoch) // step) * step
    times = [first + i * step for i in range(int((_aware(ctx.end) - first) / step) + 1)]
    times = sorted(set(times) | {_aware(row[idx[p.time_column]]) for row in res.rows})
    where = {t: i for i, t in enumerate(times)}
    series: dict[str, list[float]] = {}
    for row in res.rows:
        label = " ".join(str(row[idx[c]]) for c in p.label_columns)
        for value_column in p.value_columns:
            name = label if (label and len(p.value_columns) == 1) else " ".join(x for x in (label, value_column) if x)
            values = series.setdefault(name, [0.0] * len(times))
            values[where[_aware(row[idx[p.time_column]])]] += float(row[idx[value_column]] or 0)
    if len(series) > _MAX_SERIES:
        ranked = sorted(series, key=lambda n: -sum(series[n]))
        keep, rest = ranked[:_MAX_SERIES - 1], ranked[_MAX_SERIES - 1:]
        other = [sum(series[n][i] for n in rest) for i in range(len(times))]
        series = {n: series[n] for n in keep}
        series[f"{len(rest)} others"] = other
    return times, series


def _draw_timeseries(ax: Any, res: PanelResult, ctx: QueryContext) -> None:
    import matplotlib.dates as mdates

    times, series = _series(res, ctx)
    names = list(series)
    colours = [_colour(n, i) for i, n in enumerate(names)]
    if res.panel.stacked and len(names) > 1:
        ax.stackplot(times, *[series[n] for n in names], labels=names, colors=colours, alpha=0.75, linewidth=0)
    else:
        for name, colour in zip(names, colours):
            ax.plot(times, series[name], label=name, color=colour, linewidth=1.4)
            ax.fill_between(times, series[name], color=colour, alpha=0.12)
    ax.grid(True, color=_GRID, linewidth=0.5)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=_UTC))
    ax.yaxis.set_major_formatter(_tick_formatter(res.panel.unit))
    ax.set_xlim(times[0], times[-1])
    if len(names) > 1 or res.panel.label_columns:
        ax.legend(loc="upper left", fontsize=7, ncol=min(4, len(names)), frameon=False, labelcolor=_TEXT)


def _tick_formatter(unit: str) -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _: _fmt(v, unit) if unit in ("percentunit", "s", "ms") else f"{v:,.0f}"
                         if abs(v) >= 10 or float(v).is_integer() else f"{v:,.1f}")


def _draw_barchart(ax: Any, res: PanelResult) -> None:
    p = res.panel
    idx = {c: i for i, c in enumerate(res.columns)}
    rows = list(reversed(res.rows))  # the first row on top
    labels = [str(row[idx[p.label_columns[0]]]) for row in rows]
    left = [0.0] * len(rows)
    for i, column in enumerate(p.value_columns):
        values = [float(row[idx[column]] or 0) for row in rows]
        if not any(values) and len(p.value_columns) > 1:
            continue
        ax.barh(labels, values, left=left if p.stacked else None, color=_colour(column, i), label=column, height=0.7)
        if p.stacked:
            left = [a + b for a, b in zip(left, values)]
    totals = left if p.stacked else [float(row[idx[p.value_columns[0]]] or 0) for row in rows]
    for y, total in enumerate(totals):
        ax.text(total, y, " " + _fmt(total, p.unit), va="center", color=_TEXT, fontsize=7)
    ax.set_xlim(0, max(totals or [1]) * 1.15 or 1)
    per_bar_px = ax.get_window_extent().height / max(1, len(rows))
    ax.tick_params(axis="y", labelsize=max(5.0, min(8.0, per_bar_px * 0.6)), colors=_TEXT)
    ax.grid(True, axis="x", color=_GRID, linewidth=0.5)
    if len(p.value_columns) > 1:
        ax.legend(loc="lower right", fontsize=7, frameon=False, labelcolor=_TEXT)


def _draw_piechart(ax: Any, res: PanelResult) -> None:
    p = res.panel
    idx = {c: i for i, c in enumerate(res.columns)}
    labels = [str(row[idx[p.label_columns[0]]]) for row in res.rows]
    values = [float(row[idx[p.value_columns[0]]] or 0) for row in res.rows]
    ax.pie(values, labels=[f"{l} ({_fmt(v, p.unit)})" for l, v in zip(labels, values)],
           colors=[_colour(l, i) for i, l in enumerate(labels)], startangle=90, counterclock=False,
           wedgeprops={"width": 0.42, "edgecolor": _PANEL}, textprops={"color": _TEXT, "fontsize": 8})
    ax.set_aspect("equal")


def _draw_stat(ax: Any, res: PanelResult) -> None:
    p = res.panel
    ax.set_xticks([])
    ax.set_yticks([])
    row = res.rows[0]
    n = len(res.columns)
    for i, (column, value) in enumerate(zip(res.columns, row)):
        x = (i + 0.5) / n
        ax.text(x, 0.42, _fmt(value, p.column_units.get(column, p.unit)), ha="center", va="center",
                color=_PALETTE[0] if i == 0 else _PALETTE[2 + i % 6], fontsize=26 if n == 1 else 20, fontweight="bold",
                transform=ax.transAxes)
        if n > 1:
            ax.text(x, 0.1, column.replace("_", " "), ha="center", va="center", color=_MUTED, fontsize=8,
                    transform=ax.transAxes)


def _draw_table(ax: Any, res: PanelResult, height_px: float) -> None:
    p = res.panel
    ax.set_xticks([])
    ax.set_yticks([])
    ax.axis("off")
    fits = max(1, int(height_px / 19) - 2)
    shown = res.rows[:fits]
    width = max(8, int(180 / max(1, len(res.columns))))  # characters per cell, by column count

    def cell(value: Any, column: str) -> str:
        text = _fmt(value, p.column_units.get(column, "short" if not isinstance(value, float) else p.unit))
        return text if len(text) <= width else text[: width - 1] + "…"

    body = [[cell(v, c) for v, c in zip(row, res.columns)] for row in shown]
    tab = ax.table(cellText=body, colLabels=res.columns, loc="upper left", cellLoc="left", colLoc="left",
                   bbox=[0, max(0.0, 1 - (len(shown) + 1) / (fits + 1)), 1, min(1.0, (len(shown) + 1) / (fits + 1))])
    tab.auto_set_font_size(False)
    tab.set_fontsize(7)
    for (r, _), c in tab.get_celld().items():
        c.set_edgecolor(_GRID)
        c.set_facecolor(_PANEL if r else "#22252b")
        c.get_text().set_color(_TEXT if r else _PALETTE[2])
    if len(res.rows) > len(shown):
        ax.text(1, -0.02, f"{len(shown)} of {len(res.rows):,} rows", ha="right", va="top", color=_MUTED, fontsize=7,
                transform=ax.transAxes)


def _label_px(res: PanelResult) -> int:
    """Room the category labels of a bar chart need left of its bars."""
    if res.panel.kind != "barchart" or not res.rows or res.error:
        return 0
    i = res.columns.index(res.panel.label_columns[0]) if res.panel.label_columns[0] in res.columns else 0
    return 12 + 6 * max(len(str(row[i])) for row in res.rows)


def render(spec: DashboardSpec, results: Sequence[PanelResult], path: Path, subtitle: str, ctx: QueryContext) -> Path:
    """Draw one dashboard's panel results into the PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(p.grid[1] + p.grid[3] for p in spec.panels)
    header_px = 60
    height_px = rows * _ROW_PX + header_px
    fig = plt.figure(figsize=(_WIDTH_PX / _DPI, height_px / _DPI), dpi=_DPI, facecolor=_BG)
    fig.text(0.01, 1 - 22 / height_px, spec.title, color=_TEXT, fontsize=16, fontweight="bold", va="center")
    fig.text(0.01, 1 - 46 / height_px, subtitle, color=_MUTED, fontsize=9, va="center")
    pad_x, pad_top, pad_bottom = 0.006, 30, 22  # px: titles sit above the axes, tick labels below
    for res in results:
        x, y, w, h = res.panel.grid
        top_px = header_px + y * _ROW_PX + pad_top
        box_h = h * _ROW_PX - pad_top - pad_bottom
        inset = (_label_px(res) or (40 if res.panel.kind == "timeseries" else 0)) / _WIDTH_PX
        left = x / 24 + pad_x + inset
        width = w / 24 - 2 * pad_x - inset
        ax = fig.add_axes([left, 1 - (top_px + box_h) / height_px, width, box_h / height_px])
        _style(ax, res.panel.title)
        if res.error:
            _message(ax, f"query failed: {res.error}", "#f2495c")
        elif not res.rows:
            _message(ax, "No data")
        elif res.panel.kind == "timeseries":
            _draw_timeseries(ax, res, ctx)
        elif res.panel.kind == "barchart":
            _draw_barchart(ax, res)
        elif res.panel.kind == "piechart":
            _draw_piechart(ax, res)
        elif res.panel.kind == "stat":
            _draw_stat(ax, res)
        else:
            _draw_table(ax, res, box_h)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI, facecolor=_BG)
    plt.close(fig)
    _shrink(path)
    return path


def _shrink(path: Path) -> None:
    """256 colours are plenty for flat charts and make the file about a third as big."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow comes with matplotlib
        return
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, optimize=True)


def most_alerted_principal(store: Any) -> Optional[str]:
    """The principal with the most critical/high alerts (then alerts): what to investigate first."""
    rows = store.query_rows(
        f"SELECT principal_subject FROM {store.database}.alerts FINAL WHERE principal_subject != '' "
        "GROUP BY principal_subject ORDER BY countIf(severity IN ('critical', 'high')) DESC, count() DESC, "
        "principal_subject LIMIT 1"
    )
    return rows[0][0] if rows else None


def snapshot(
    store: Any,
    out_dir: Path,
    start: _dt.datetime,
    end: _dt.datetime,
    *,
    dashboards: Sequence[DashboardSpec] = DASHBOARDS,
    tenants: Sequence[str] = (),
    entity: Optional[dict[str, str]] = None,
    on_panel: Optional[Callable[[DashboardSpec, PanelSpec], None]] = None,
) -> list[Path]:
    """Run every panel of ``dashboards`` for ``[start, end]`` and write one PNG per
    dashboard into ``out_dir``; ``on_panel`` is called after each panel's query."""
    ctx = query_context(store, start, end, tenants=tenants, entity=entity)
    scope = ", ".join(tenants) if tenants else "all tenants"
    subtitle = (f"{start.astimezone(_UTC):%Y-%m-%d %H:%M} to {end.astimezone(_UTC):%Y-%m-%d %H:%M} UTC · {scope} · "
                f"interval {ctx.interval_s} s · rendered by `mcpsift dashboards snapshot` from the panels' own queries")
    written = []
    for spec in dashboards:
        results = []
        for panel in spec.panels:
            results.append(run_panel(store, panel, ctx))
            if on_panel is not None:
                on_panel(spec, panel)
        chosen = [f"{k} {v}" for k, v in sorted((entity or {}).items()) if v and k in {x.name for x in spec.variables}]
        note = subtitle + "".join(f" · {c}" for c in chosen)
        written.append(render(spec, results, Path(out_dir) / f"{spec.slug}.png", note, ctx))
    return written

"""``mcpsift verify``: recompute the event log's hash chain and report the first break per tenant.

Exit codes: 0 the chain holds (unchained rows from a crash window are listed,
not a break), 1 a break (rows altered, deleted or inserted, or the chain
itself rewritten), 2 usage or store errors. Needs the store: with an
embedded ``mcpsift serve`` running, stop it first (it holds the data dir).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

__all__ = ["verify", "print_report"]

out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)


def verify(
    since: Optional[str] = typer.Option(None, "--from", help="check chain entries written at or after this time (RFC 3339 or a date, UTC)"),
    until: Optional[str] = typer.Option(None, "--to", help="check chain entries written before this time"),
    tenant: Optional[str] = typer.Option(None, "--tenant", help="only this tenant's chain"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="where data lives [default ./.mcpsift]"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config file (keys as in docs/operations.md)"),
) -> None:
    """Recompute the hash chain over the stored events and report the first break per tenant
    (which rows were altered, deleted or inserted). Exit code 1 on a break."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from mcpsift.cli import _fail, _load, _need, _when
    from mcpsift.store import StoreError, open_store
    from mcpsift.store.chain import verify_chain

    _need(("clickhouse_connect", "chdb"), "mcpsift verify")
    start = _when(since, "--from") if since else None
    end = _when(until, "--to") if until else None
    if start is not None and end is not None and start >= end:
        raise _fail(f"--from ({start.isoformat()}) must be before --to ({end.isoformat()})")
    settings = _load(config, data_dir=data_dir)
    try:
        store = open_store(settings)
    except StoreError as exc:
        raise _fail(str(exc))
    try:
        db = store.database
        where, params = ("WHERE tenant = {t:String}", {"t": tenant}) if tenant else ("", {})
        total = int(store.query_rows(f"SELECT count() FROM {db}.chain {where}", params)[0][0])
        progress = Progress(
            TextColumn("verify"), BarColumn(), MofNCompleteColumn(), TextColumn("chain entries"), TimeRemainingColumn(),
            console=err, disable=not err.is_terminal, transient=True,
        )
        with progress:
            task = progress.add_task("verify", total=total)
            report = verify_chain(
                store, tenant=tenant, since=start, until=end, retention_days=settings.retention_days,
                on_progress=lambda n: progress.update(task, completed=n),
            )
    except StoreError as exc:
        raise _fail(str(exc))
    finally:
        store.close()
    if as_json:
        out.print(json.dumps(report.as_dict(), indent=2, default=str), markup=False)
    else:
        print_report(report)
    if not report.ok:
        raise typer.Exit(1)


def _ids(items: list[dict[str, Any]]) -> str:
    shown = ", ".join(f"{i['event_id']} (ingest_seq {i['ingest_seq']})" for i in items[:10])
    return shown + (f", ... ({len(items)} listed)" if len(items) > 10 else "")


def print_report(report: Any) -> None:
    if not report.tenants:
        out.print("no events and no chain entries: nothing to verify")
        return
    for name, t in sorted(report.tenants.items()):
        status = "[green]ok[/]" if t.ok else "[bold red]BROKEN[/]"
        out.print(
            f"tenant {name}: {status}  {t.entries_checked:,} chain entries, {t.rows_checked:,} rows checked; "
            f"head entry {t.head_seq} {t.head_hash[:16]}…"
        )
        if not t.ok:
            out.print(f"  first break at chain entry {t.break_at_entry}: {t.break_reason}")
        if t.altered:
            out.print(f"  altered rows: {_ids(t.altered)}", markup=False)
        if t.deleted:
            out.print(f"  deleted rows: {_ids(t.deleted)}", markup=False)
        if t.inserted:
            out.print(f"  inserted rows: {_ids(t.inserted)}", markup=False)
        for problem in t.chain_problems:
            out.print(f"  chain: {problem}", markup=False)
        if t.unchained:
            out.print(
                f"  [yellow]unchained rows: {t.unchained:,}[/] stored after the chain's end (a crash between the events "
                f"write and the chain write): start `mcpsift serve` once to chain them, then verify again; "
                f"first: {_ids(t.unchained_examples)}"
            )
        if t.recovered_entries:
            rows = sum(e["rows"] for e in t.recovered_entries)
            out.print(f"  note: {len(t.recovered_entries)} entries ({rows:,} rows) were chained at start-up by recovery")
        if t.deduplicated_by_merge:
            out.print(f"  note: {t.deduplicated_by_merge:,} redelivered rows were deduplicated by a merge (not tampering)")
        if t.expired_by_retention:
            out.print(f"  note: {t.expired_by_retention:,} rows expired by retention_days (TTL)")
    rows = report.rows_checked
    verdict = "chain verified" if report.ok else "chain BROKEN"
    out.print(f"{verdict}: {len(report.tenants)} tenants, {rows:,} rows")

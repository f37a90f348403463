"""``mcpsift demo``: generate labelled traffic, score the detectors on it, stream it into a server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["app"]

app = typer.Typer(
    help="Labelled demo traffic: generate it, score the detectors on it, stream it into `mcpsift serve`.",
    no_args_is_help=True,
    add_completion=False,
)
out = Console(soft_wrap=True)
if not out.is_terminal:  # a pipe or a file: wide enough that rule ids are never cut
    out = Console(soft_wrap=True, width=132)
err = Console(stderr=True, soft_wrap=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


@app.command()
def generate(
    out_dir: Path = typer.Option(..., "--out", "-o", help="directory to write events.jsonl, labels.json, config.yaml, README.md into"),
    seed: int = typer.Option(1, help="random seed: the same seed and options give byte-identical files"),
    hours: float = typer.Option(8.0, help="hours of traffic"),
    tenants: int = typer.Option(4, help="number of tenants (3 to 8)"),
    start: str = typer.Option("2026-11-02T08:00:00Z", help="time of the first event (RFC 3339)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar and no summary"),
) -> None:
    """Write a day of realistic, labelled MCP auth and tool-call traffic with injected attacks."""
    from .generate import generate as run_generate

    if hours <= 0 or hours > 72:
        raise _fail("--hours must be between 0 and 72")
    if not 3 <= tenants <= 8:
        raise _fail("--tenants must be between 3 and 8")
    try:
        summary = run_generate(out_dir, seed=seed, hours=hours, tenants=tenants, start=start,
                               progress=False if quiet else err.is_terminal)
    except OSError as exc:
        raise _fail(f"cannot write {out_dir}: {exc.strerror or exc}")
    except ValueError as exc:
        raise _fail(str(exc))
    if quiet:
        return
    attacks = sum(summary.attacks.values())
    err.print(
        f"wrote {summary.events:,} events ({summary.bytes / 1e6:.1f} MB) in {summary.sessions:,} sessions over {hours:g} h, "
        f"{attacks:,} labelled attack instances of {len(summary.attacks)} rules and "
        f"{sum(summary.benign.values()):,} benign edge cases, to {out_dir} in {summary.seconds:.1f} s",
        highlight=False,
    )
    err.print(f"next: mcpsift demo evaluate {out_dir}", highlight=False)


def _pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.0%}" if value in (0.0, 1.0) else f"{value:.1%}"


@app.command()
def evaluate(
    directory: Path = typer.Argument(..., help="a directory written by `mcpsift demo generate`"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="settings to use instead of DIR/config.yaml"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="list every false positive and every missed attack"),
    min_recall: float = typer.Option(0.95, help="the gate: every rule's recall at least this"),
    min_precision: float = typer.Option(0.98, help="the gate: overall precision at least this"),
    single_process: bool = typer.Option(False, "--single-process", help="read and detect in one process"),
) -> None:
    """Run the detectors over demo traffic and score their alerts against its labels.

    Exit code 1 when a rule's recall is below --min-recall, overall precision is
    below --min-precision, or any alert fires on a must-not-fire case.
    """
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from mcpsift.detectors import UnknownDetector
    from mcpsift.settings import ConfigError

    from .evaluate import evaluate as run_evaluate

    show = err.is_terminal and not as_json
    progress = Progress(TextColumn("detect"), BarColumn(), DownloadColumn(), TimeRemainingColumn(), console=err,
                        disable=not show, transient=True)
    try:
        with progress:
            task = progress.add_task("detect", total=None)
            report = run_evaluate(
                directory, config=config, min_recall=min_recall, min_precision=min_precision,
                processes=1 if single_process else None,
                on_progress=(lambda done, total: progress.update(task, completed=done, total=total)) if show else None,
            )
    except FileNotFoundError as exc:
        raise _fail(str(exc))
    except (ConfigError, UnknownDetector, ValueError) as exc:
        raise _fail(str(exc))
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
        raise typer.Exit(0 if report.passed else 1)
    for note in report.ignored_settings:
        err.print(f"[yellow]note:[/] {note}", highlight=False)
    table = Table(title=f"mcpsift demo evaluate {directory}", title_justify="left")
    for column, justify in (("rule", "left"), ("attacks", "right"), ("detected", "right"), ("recall", "right"),
                            ("alerts", "right"), ("false pos.", "right"), ("on must-not-fire", "right"), ("benign cases", "right")):
        table.add_column(column, justify=justify, no_wrap=column == "rule")  # type: ignore[arg-type]
    for r in report.rules:
        recall_ok = r.recall is None or r.recall >= min_recall
        name = r.rule_id if r.implemented else f"{r.rule_id} [dim](not implemented)[/]"
        table.add_row(
            name, str(r.attacks), str(r.detected),
            _pct(r.recall) if recall_ok else f"[red]{_pct(r.recall)}[/]",
            str(r.alerts), str(r.false_positives) if not r.false_positives else f"[yellow]{r.false_positives}[/]",
            str(r.benign_alerts) if not r.benign_alerts else f"[red]{r.benign_alerts}[/]",
            str(r.benign_cases),
        )
    table.add_section()
    table.add_row("all rules", str(report.attacks), str(report.detected), _pct(report.recall), str(report.alerts),
                  str(report.alerts - report.true_positives), str(report.benign_alerts), "")
    out.print(table)
    out.print(
        f"{report.events:,} events -> {report.alerts:,} alerts in {report.seconds:.1f} s; "
        f"precision {_pct(report.precision)} (gate {min_precision:.0%}), recall {_pct(report.recall)} "
        f"(gate per rule {min_recall:.0%})",
        highlight=False,
    )
    if verbose:
        for fp in report.false_positives:
            where = f" [must not fire: {fp.clause}]" if fp.clause else ""
            out.print(f"false positive {fp.rule_id}{where}: events {', '.join(fp.event_ids[:4])}"
                      f"{' …' if len(fp.event_ids) > 4 else ''}: {fp.description}", highlight=False, markup=False)
        for rule, notes in report.missed.items():
            for note in notes:
                out.print(f"missed {rule}: {note}", highlight=False, markup=False)
    failures = report.failures()
    if failures:
        out.print("[bold red]quality gate failed:[/] " + "; ".join(failures[:12]) + (" …" if len(failures) > 12 else ""), highlight=False)
        raise typer.Exit(1)
    out.print("[bold green]quality gate passed[/]")


@app.command()
def run(
    url: str = typer.Option("http://127.0.0.1:8765", help="where `mcpsift serve` listens"),
    directory: Optional[Path] = typer.Option(None, "--dir", help="send this generated directory instead of generating traffic"),
    seed: int = typer.Option(1, help="seed of the generated traffic (without --dir)"),
    hours: float = typer.Option(8.0, help="hours of generated traffic (without --dir)"),
    tenants: int = typer.Option(4, help="tenants of the generated traffic (without --dir)"),
    live: bool = typer.Option(False, "--live", help="move the traffic to start now and send it as its time comes"),
    speed: float = typer.Option(60.0, help="with --live: how many times faster than real time"),
    batch: int = typer.Option(500, help="events per HTTP request"),
    api_key: Optional[str] = typer.Option(
        None, "--api-key", envvar="MCPSIFT_API_KEY", help="an ingest key (serve prints one on its first start) [env MCPSIFT_API_KEY]"
    ),
) -> None:
    """Stream demo traffic into a running `mcpsift serve` over HTTP (POST /v1/events)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .run import RunReport, ServerUnreachable
    from .run import run as run_stream

    progress = Progress(TextColumn("sending"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[counts]}"),
                        TimeElapsedColumn(), console=err, disable=not err.is_terminal, transient=True)
    task = None

    def on_progress(report: RunReport) -> None:
        nonlocal task
        if task is None:
            task = progress.add_task("send", total=report.events, counts="")
        codes = " ".join(f"{code}:{n}" for code, n in sorted(report.statuses.items()))
        progress.update(task, completed=report.sent,
                        counts=f"accepted {report.accepted:,} rejected {report.rejected:,} (HTTP {codes})")

    if directory is None:
        err.print(f"generating {hours:g} h of demo traffic (seed {seed}) …", highlight=False)
    try:
        with progress:
            report = run_stream(url, directory=directory, seed=seed, hours=hours, tenants=tenants, live=live, speed=speed,
                                batch=batch, on_progress=on_progress, api_key=api_key)
    except ServerUnreachable as exc:
        raise _fail(str(exc))
    except (FileNotFoundError, ValueError) as exc:
        raise _fail(str(exc))
    codes = ", ".join(f"{n} × HTTP {code}" for code, n in sorted(report.statuses.items()))
    err.print(
        f"sent {report.sent:,} events in {report.batches:,} batches ({codes}) in {report.seconds:.1f} s: "
        f"{report.accepted:,} accepted, {report.rejected:,} rejected",
        highlight=False,
    )
    for reason in report.reasons[:5]:
        err.print(f"  rejected: {reason}", highlight=False, markup=False)
    base = report.url
    err.print(
        "events are detected in event-time order once they are older than the allowed lateness (30 s by default).\n"
        f"look at the alerts:  curl -s -H \"Authorization: Bearer $MCPSIFT_KEY\" '{base}/v1/alerts?limit=50'   (an admin or viewer key; filter: ?rule_id=session.hijack&tenant=acme)\n"
        f"                     mcpsift alerts --limit 50   (once serve has stopped; it holds the embedded store)\n"
        f"pipeline progress:   curl -s {base}/healthz\n"
        f"SIEM deliveries:     curl -s -H \"Authorization: Bearer $MCPSIFT_KEY\" {base}/v1/outputs   (outputs configured under `outputs:` in the config)\n"
        "dashboards:          Grafana (docker compose) has Overview, Identity & tokens, Tools and Investigation;\n"
        "                     without Grafana: stop serve, then  mcpsift dashboards snapshot --data-dir .mcpsift --out png/\n"
        "the traffic assumes the settings `mcpsift demo generate` writes to DIR/config.yaml (an approved-server registry, "
        "the toxic-flow label map): start serve with `--config DIR/config.yaml` for server.unapproved and every flow.",
        highlight=False,
        markup=False,
    )
    if report.rejected and not report.accepted:
        raise typer.Exit(1)

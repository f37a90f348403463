"""``mcpsift apikey``: create (the key is shown once), list, revoke.

While ``mcpsift serve`` runs it holds the embedded store, so these commands ask
it over HTTP (``/v1/apikeys``, with an admin key: ``--api-key`` or
``MCPSIFT_API_KEY``); when it does not run they open the store themselves.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, add_completion=False)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config file (keys as in docs/operations.md)")
DataDirOpt = typer.Option(None, "--data-dir", help="where data lives [default ./.mcpsift]")
ApiKeyOpt = typer.Option(
    None, "--api-key", envvar="MCPSIFT_API_KEY", help="an admin key, to ask a running serve [env MCPSIFT_API_KEY]"
)


def _settings(config: Optional[Path], data_dir: Optional[Path]) -> Any:
    from mcpsift.cli import _load

    return _load(config, data_dir=data_dir)


def _via_serve(settings: Any, api_key: Optional[str], method: str, path: str, body: Any = None) -> Optional[Any]:
    """The JSON answer of a running ``mcpsift serve``; None when none is listening."""
    import httpx

    from mcpsift.cli import _fail, _local_url

    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.request(method, _local_url(settings) + path, json=body, headers=headers, timeout=10)
    except httpx.TransportError:
        return None
    if response.status_code == 401:
        hint = "pass an admin key with --api-key or MCPSIFT_API_KEY" if not api_key else "that key is unknown or revoked"
        raise _fail(f"mcpsift serve is running and refused the request (401): {hint}")
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise _fail(f"mcpsift serve answered {response.status_code}: {detail}")
    return response.json()


def _with_store(settings: Any, work: Callable[[Any], Any]) -> Any:
    from mcpsift.cli import _fail, _need_all
    from mcpsift.store import StoreError, open_store
    from mcpsift.store.keys import ApiKeys

    _need_all("mcpsift apikey")
    try:
        store = open_store(settings)
    except StoreError as exc:
        raise _fail(str(exc))
    try:
        return work(ApiKeys(store))
    finally:
        store.close()


@app.command()
def create(
    role: str = typer.Option(..., "--role", help="ingest | viewer | analyst | admin"),
    tenant: Optional[list[str]] = typer.Option(None, "--tenant", help="a tenant the key may see (repeat for more)"),
    all_tenants: bool = typer.Option(False, "--all-tenants", help="the key sees every tenant (say it explicitly)"),
    name: str = typer.Option("", "--name", help="what the key is for, e.g. grafana"),
    as_json: bool = typer.Option(False, "--json", help="print the key and its record as JSON"),
    api_key: Optional[str] = ApiKeyOpt,
    data_dir: Optional[Path] = DataDirOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Make an API key. It is printed once, now; only its hash is stored."""
    from mcpsift.api.security import ROLES
    from mcpsift.cli import _fail

    if role not in ROLES:
        raise _fail(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    tenants = list(tenant or [])
    if all_tenants == bool(tenants):
        raise _fail("give --tenant T (repeatable) or --all-tenants, exactly one of them")
    settings = _settings(config, data_dir)
    body = {"role": role, "tenants": tenants, "all_tenants": all_tenants, "name": name}
    answer = _via_serve(settings, api_key, "POST", "/v1/apikeys", body)
    if answer is None:
        def make(keys: Any) -> dict[str, Any]:
            record, key = keys.create([role], None if all_tenants else tenants, name, created_by="cli")
            return {**record.public(), "key": key}

        answer = _with_store(settings, make)
    if as_json:
        print(json.dumps(answer, indent=2))
        return
    scope = "all tenants" if answer["all_tenants"] else ", ".join(answer["tenants"])
    err.print(
        f"API key {answer['key_id']} ({', '.join(answer['roles'])}; {scope}). It is shown only now; "
        "store it safely (only its hash is kept):",
        highlight=False,
        markup=False,
    )
    print(answer["key"])


@app.command("list")
def list_keys(
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
    api_key: Optional[str] = ApiKeyOpt,
    data_dir: Optional[Path] = DataDirOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Every key: id, name, roles, tenants, created, revoked (never a secret)."""
    settings = _settings(config, data_dir)
    rows = _via_serve(settings, api_key, "GET", "/v1/apikeys")
    if rows is None:
        rows = _with_store(settings, lambda keys: [k.public() for k in keys.list()])
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="API keys")
    for column in ("key id", "name", "roles", "tenants", "created", "revoked"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            row["key_id"], row["name"] or "-", ", ".join(row["roles"]),
            "all" if row["all_tenants"] else ", ".join(row["tenants"]),
            row["created_at"][:19], (row["revoked_at"] or "-")[:19],
        )
    out.print(table)


@app.command()
def revoke(
    key_id: str = typer.Argument(..., help="the key id (`mcpsift apikey list`), or the whole key"),
    api_key: Optional[str] = ApiKeyOpt,
    data_dir: Optional[Path] = DataDirOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Revoke a key, at once and for good."""
    from mcpsift.cli import _fail
    from mcpsift.store.keys import parse_key

    key_id = parse_key(key_id) or key_id
    if not key_id.isalnum():
        raise _fail(f"{key_id!r} is not a key id; `mcpsift apikey list` shows them")
    settings = _settings(config, data_dir)
    answer = _via_serve(settings, api_key, "DELETE", f"/v1/apikeys/{key_id}")
    if answer is None:
        record = _with_store(settings, lambda keys: keys.revoke(key_id))
        if record is None:
            raise _fail(f"no API key {key_id!r}; `mcpsift apikey list` shows them")
        answer = record.public()
    err.print(f"revoked API key {answer['key_id']} at {answer['revoked_at']}", highlight=False, markup=False)

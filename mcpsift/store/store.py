"""The one module that talks to ClickHouse: schema, writes and every query.

All access goes through clickhouse-connect: chDB in-process for ``chdb://``
DSNs, HTTP(S) for a server (``http(s)://user:pass@host:port/db``); the SQL is
the same. chDB opens one data path per process, so tests isolate by
*database* inside one path; the database name is a setting.

Every query, command and insert goes through one retry wrapper
(:class:`RetryPolicy`): transient failures (connection refused or reset,
timeouts, HTTP 429/502/503/504, the ClickHouse error codes in
:data:`TRANSIENT_ERROR_CODES`) are retried with exponential back-off; anything
else fails at once. The password never appears in an error or a log line.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence
from urllib.parse import parse_qsl, unquote, urlsplit

from mcpsift.alerts import Alert

from .schema import (
    API_AUDIT_COLUMNS,
    ALERT_COLUMNS,
    BOOTSTRAP,
    DEAD_LETTER_COLUMNS,
    DELIVERY_COLUMNS,
    EVENT_COLUMNS,
    MIGRATIONS,
    for_cluster,
    valid_cluster_name,
)

if TYPE_CHECKING:  # pragma: no cover
    from mcpsift.settings import ClickHouseSettings

__all__ = [
    "Endpoint",
    "RetriesExhausted",
    "RetryPolicy",
    "Store",
    "StoreError",
    "TRANSIENT_ERROR_CODES",
    "event_row",
    "open_store",
    "parse_dsn",
    "transient_reason",
]

log = logging.getLogger("mcpsift.store")

_UTC = _dt.timezone.utc
_ALERT_READ_COLUMNS = [c for c in ALERT_COLUMNS if c != "created_at"]
_OPTIONAL_ALERT_FIELDS = ("principal_subject", "client_id", "session_id", "token_fingerprint", "server_resource", "detector")
_IDENTIFIER_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


class StoreError(RuntimeError):
    """The store cannot be opened or used; the message says what to do."""


class RetriesExhausted(StoreError):
    """A transient failure outlasted the retries (``reason``, ``attempts``)."""

    def __init__(self, message: str, reason: str, attempts: int):
        super().__init__(message)
        self.reason = reason
        self.attempts = attempts


# -- the server's address ------------------------------------------------------

#: DSN query options passed to clickhouse-connect (``?compress=zstd``)
_COMPRESS_VALUES = {"lz4", "zstd", "gzip", "br", "true", "false"}


@dataclass(frozen=True)
class Endpoint:
    """A parsed ``http(s)://user:pass@host:port/db?compress=...`` DSN."""

    scheme: str
    host: str
    port: int
    username: str = ""
    password: str = field(default="", repr=False)
    database: Optional[str] = None
    compress: Optional[str] = None

    @property
    def url(self) -> str:
        """``scheme://host:port``: what errors and logs name (no user, no password)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def _redact(dsn: str) -> str:
    """``dsn`` without anything before ``@`` in its authority (user and password)."""
    scheme, sep, rest = dsn.partition("://")
    if not sep:
        return "<DSN>"
    authority, slash, path = rest.partition("/")
    return f"{scheme}://{authority.rpartition('@')[2]}{slash}{path.partition('?')[0]}"


def parse_dsn(dsn: str) -> Endpoint:
    """The :class:`Endpoint` of an ``http(s)://`` DSN; :class:`StoreError` naming what is wrong.

    User, password and database are percent-decoded (encode ``@ : / # ?`` in a
    password as ``%40 %3A %2F %23 %3F``). Messages never repeat the password.
    """
    scheme, sep, rest = dsn.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        shown = scheme.lower() if sep else "(none)"
        raise StoreError(f"clickhouse_dsn: scheme must be chdb://, http:// or https:// (got {shown})")
    scheme = scheme.lower()
    authority = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    hostport = authority.rpartition("@")[2]
    shown_dsn = _redact(dsn)
    if hostport.startswith("["):
        host, _, after = hostport[1:].partition("]")
        port_text = after[1:] if after.startswith(":") else ""
        if after and not after.startswith(":"):
            raise StoreError(f"clickhouse_dsn {shown_dsn}: malformed host {hostport!r}")
    else:
        host, _, port_text = hostport.partition(":")
    if not host:
        raise StoreError(f"clickhouse_dsn {shown_dsn}: no host (expected {scheme}://user:password@host:port/database)")
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise StoreError(f"clickhouse_dsn {shown_dsn}: port {port_text!r} is not a number from 1 to 65535")
        port = int(port_text)
    else:
        port = 8443 if scheme == "https" else 8123
    parts = urlsplit(dsn)
    username = unquote(parts.username or "")
    password = unquote(parts.password or "")
    database = None
    path = unquote(parts.path.strip("/"))
    if path:
        if "/" in path or not set(path) <= _IDENTIFIER_OK:
            raise StoreError(
                f"clickhouse_dsn {shown_dsn}: database {path!r} in the path must be letters, digits and underscores"
            )
        database = path
    compress = None
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in ("compress", "compression"):
            if value.lower() not in _COMPRESS_VALUES:
                raise StoreError(
                    f"clickhouse_dsn {shown_dsn}: compress={value!r} must be one of {', '.join(sorted(_COMPRESS_VALUES))}"
                )
            compress = value.lower()
        else:
            raise StoreError(f"clickhouse_dsn {shown_dsn}: unknown option {key!r} (known: compress)")
    return Endpoint(scheme, host, port, username, password, database, compress)


def _password(endpoint: Endpoint, options: "ClickHouseSettings") -> str:
    """The DSN's password, else ``password_env``'s variable, else ``password_file``'s text."""
    if endpoint.password:
        return endpoint.password
    if options.password_env:
        value = os.environ.get(options.password_env)
        if value is None:
            raise StoreError(
                f"clickhouse.password_env: the environment variable {options.password_env} is not set"
            )
        return value
    if options.password_file:
        try:
            return Path(options.password_file).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise StoreError(f"clickhouse.password_file: cannot read {options.password_file}: {exc.strerror}") from None
    return ""


def _http_kwargs(endpoint: Endpoint, options: "ClickHouseSettings") -> dict[str, Any]:
    """clickhouse-connect ``get_client`` arguments for a server (validated)."""
    tls_files = {
        "clickhouse.ca_file": options.ca_file,
        "clickhouse.client_cert_file": options.client_cert_file,
        "clickhouse.client_key_file": options.client_key_file,
    }
    if endpoint.scheme == "http":
        for key, value in [*tls_files.items(), ("clickhouse.server_host_name", options.server_host_name)]:
            if value:
                raise StoreError(f"{key} is set but clickhouse_dsn is http:// (no TLS): use https:// or remove {key}")
    for key, value in tls_files.items():
        if value is not None and not Path(value).is_file():
            raise StoreError(f"{key}: {value} is not a readable file")
    if options.client_key_file and not options.client_cert_file:
        raise StoreError("clickhouse.client_key_file is set without clickhouse.client_cert_file")
    password = _password(endpoint, options)
    kwargs: dict[str, Any] = {
        "interface": endpoint.scheme,
        "host": endpoint.host,
        "port": endpoint.port,
        "username": endpoint.username or ("default" if password else ""),
        "password": password,
        # whole seconds (clickhouse-connect truncates to int): round up, never to 0
        "connect_timeout": max(1, math.ceil(options.connect_timeout_s)),
        "send_receive_timeout": max(1, math.ceil(options.send_receive_timeout_s)),
        # one retry layer (RetryPolicy), not two
        "query_retries": 0,
    }
    if endpoint.scheme == "https":
        kwargs["verify"] = options.verify
        if options.ca_file:
            kwargs["ca_cert"] = str(options.ca_file)
        if options.client_cert_file:
            kwargs["client_cert"] = str(options.client_cert_file)
        if options.client_key_file:
            kwargs["client_cert_key"] = str(options.client_key_file)
        if options.server_host_name:
            kwargs["server_host_name"] = options.server_host_name
    if endpoint.compress is not None:
        kwargs["compress"] = {"true": True, "false": False}.get(endpoint.compress, endpoint.compress)
    return kwargs


# -- what is worth retrying --------------------------------------------------------

#: ClickHouse error codes (src/Common/ErrorCodes.cpp) that say "try again later",
#: not "this query is wrong": overload, network, Keeper and replica trouble.
TRANSIENT_ERROR_CODES: dict[int, str] = {
    159: "TIMEOUT_EXCEEDED",
    198: "DNS_ERROR",
    202: "TOO_MANY_SIMULTANEOUS_QUERIES",
    203: "NO_FREE_CONNECTION",
    209: "SOCKET_TIMEOUT",
    210: "NETWORK_ERROR",
    242: "TABLE_IS_READ_ONLY",
    252: "TOO_MANY_PARTS",
    279: "ALL_CONNECTION_TRIES_FAILED",
    285: "TOO_FEW_LIVE_REPLICAS",
    319: "UNKNOWN_STATUS_OF_INSERT",
    373: "SESSION_IS_LOCKED",
    425: "SYSTEM_ERROR",
    439: "CANNOT_SCHEDULE_TASK",
    999: "KEEPER_EXCEPTION",
}
#: HTTP statuses a proxy or an overloaded server answers when a retry may succeed
TRANSIENT_HTTP_STATUSES = frozenset({429, 502, 503, 504})
_HTTP_STATUS = re.compile(r"HTTP status (\d{3})")


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps (cause, context, urllib3's ``reason``), each once."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if id(e) in seen or len(seen) > 20:
            continue
        seen.add(id(e))
        yield e
        for inner in (getattr(e, "reason", None), e.__cause__, e.__context__):
            if isinstance(inner, BaseException):
                todo.append(inner)


def _is_tls_failure(exc: BaseException) -> bool:
    try:
        from urllib3.exceptions import SSLError as Urllib3SSLError
    except ImportError:  # pragma: no cover
        Urllib3SSLError = ssl.SSLError  # type: ignore[misc,assignment]
    return any(isinstance(e, (ssl.SSLError, ssl.CertificateError, Urllib3SSLError)) for e in _causes(exc))


def _is_certificate_failure(exc: BaseException) -> bool:
    """The server's certificate is not trusted, or not issued for the name we asked for."""
    return any(
        isinstance(e, ssl.SSLCertVerificationError) or type(e).__name__ == "CertificateError"
        for e in _causes(exc)
    )


def transient_reason(exc: BaseException) -> Optional[str]:
    """Why ``exc`` is worth retrying ("connection refused", "HTTP 503", "ClickHouse
    error 202 TOO_MANY_SIMULTANEOUS_QUERIES", ...), or None: fail at once (syntax,
    unknown table, authentication, TLS certificate, anything unknown)."""
    if _is_tls_failure(exc):
        return None  # a certificate will not become valid by waiting
    chain = list(_causes(exc))
    for e in chain:
        code = getattr(e, "code", None)
        if isinstance(code, int) and type(e).__module__.startswith("clickhouse_connect"):
            if code in TRANSIENT_ERROR_CODES:
                return f"ClickHouse error {code} {TRANSIENT_ERROR_CODES[code]}"
            return None  # the server answered with a definite error
    try:
        from urllib3 import exceptions as u3
    except ImportError:  # pragma: no cover
        u3 = None  # type: ignore[assignment]
    # most specific first (urllib3's NewConnectionError is a ConnectTimeoutError)
    kinds: list[tuple[Any, str]] = [
        (ConnectionRefusedError, "connection refused"),
        ((ConnectionResetError, ConnectionAbortedError, BrokenPipeError), "connection reset"),
    ]
    if u3 is not None:
        kinds += [
            (u3.ReadTimeoutError, "timed out waiting for the answer"),
            (u3.NewConnectionError, "cannot open a connection"),
            (u3.ConnectTimeoutError, "timed out connecting"),
            (u3.ProtocolError, "connection broken"),
        ]
    kinds.append(((socket.timeout, TimeoutError), "timed out"))
    for kind, reason in kinds:
        if any(isinstance(e, kind) for e in chain):
            return reason
    for e in chain:
        if type(e).__module__.startswith("clickhouse_connect"):
            status = _HTTP_STATUS.search(str(e))
            if status and int(status.group(1)) in TRANSIENT_HTTP_STATUSES:
                return f"HTTP {status.group(1)}"
    return None


def _scrub(text: str, secret: str) -> str:
    if secret:
        for form in {secret, _quote(secret)}:
            text = text.replace(form, "***")
    return text


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


@dataclass
class RetryPolicy:
    """At most ``retries`` retries of a transient failure, waiting ``backoff_s``,
    then twice that, ... (capped at ``max_backoff_s``); the one place the store retries."""

    retries: int = 0
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    where: str = "ClickHouse"
    secret: str = field(default="", repr=False)
    sleep: Callable[[float], None] = time.sleep

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        return min(self.max_backoff_s, self.backoff_s * (2 ** (attempt - 1)))

    def run(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, retried on transient failures. Exhausted: StoreError."""
        attempt = 0
        while True:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                reason = transient_reason(exc)
                if reason is None:
                    raise
                if attempt >= self.retries:
                    raise RetriesExhausted(
                        f"ClickHouse at {self.where}: {what} failed ({reason}; {_tried(attempt + 1)})",
                        reason,
                        attempt + 1,
                    ) from exc
                attempt += 1
                wait = self.delay(attempt)
                log.warning(
                    "ClickHouse at %s: %s failed (%s); retry %d of %d in %.2f s",
                    self.where, what, _scrub(reason, self.secret), attempt, self.retries, wait,
                )
                self.sleep(wait)


def _tried(attempts: int) -> str:
    return f"gave up after {attempts} attempt{'s' if attempts > 1 else ''}"


class _RetryingClient:
    """A clickhouse-connect client whose query, command, insert and raw_query go
    through a :class:`RetryPolicy`; everything else passes through."""

    __slots__ = ("_client", "_policy")

    def __init__(self, client: Any, policy: RetryPolicy):
        self._client = client
        self._policy = policy

    def query(self, *args: Any, **kwargs: Any) -> Any:
        return self._policy.run("query", self._client.query, *args, **kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Any:
        return self._policy.run("command", self._client.command, *args, **kwargs)

    def insert(self, *args: Any, **kwargs: Any) -> Any:
        return self._policy.run("insert", self._client.insert, *args, **kwargs)

    def raw_query(self, *args: Any, **kwargs: Any) -> Any:
        return self._policy.run("query", self._client.raw_query, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def _import_clickhouse_connect() -> Any:
    try:
        import clickhouse_connect
    except ImportError:  # pragma: no cover - depends on the install
        raise StoreError(
            "the ClickHouse store needs clickhouse-connect and chdb: pip install 'mcpsift[all]'"
        ) from None
    return clickhouse_connect


def _chdb_client(dsn: str) -> Any:
    clickhouse_connect = _import_clickhouse_connect()
    try:
        return clickhouse_connect.get_client(dsn=dsn)
    except Exception as exc:
        text = str(exc)
        if "EmbeddedServer" in text or "Unable to open the chdb engine" in text:
            raise StoreError(
                f"cannot open the embedded ClickHouse at {dsn}: another process (a running "
                f"`mcpsift serve`?) holds it, or this process already opened another data path. "
                f"Stop that process, or query it over HTTP. ({text.strip()[:200]})"
            ) from None
        raise StoreError(f"cannot open the embedded ClickHouse at {dsn}: {text.strip()[:300]}") from None


def _server_client(endpoint: Endpoint, kwargs: dict[str, Any], policy: RetryPolicy) -> Any:
    """A connected HTTP(S) client (clickhouse-connect asks the server its version and
    settings on creation); connection failures retried, then a StoreError naming why."""
    clickhouse_connect = _import_clickhouse_connect()
    try:
        client = policy.run("connect", clickhouse_connect.get_client, **kwargs)
        if hasattr(client, "http_retries"):
            client.http_retries = 0  # urllib3's own retry: RetryPolicy is the one retry layer
        return client
    except RetriesExhausted as exc:
        raise StoreError(
            f"cannot connect to ClickHouse at {endpoint.url} ({exc.reason}; {_tried(exc.attempts)}). "
            "Is the server running, and clickhouse_dsn right?"
        ) from None
    except Exception as exc:
        detail = _scrub(" ".join(str(exc).split())[:300], kwargs.get("password", ""))
        if _is_tls_failure(exc):
            verify = "certificate verification failed" if _is_certificate_failure(exc) else "handshake failed"
            raise StoreError(
                f"cannot connect to ClickHouse at {endpoint.url}: TLS {verify} "
                "(set clickhouse.ca_file to the CA that signed the server's certificate, "
                f"or clickhouse.server_host_name to the name it was issued for) ({detail})"
            ) from None
        code = getattr(exc, "code", None)
        if code == 516:
            raise StoreError(
                f"cannot connect to ClickHouse at {endpoint.url}: authentication failed for user "
                f"{kwargs.get('username') or 'default'!r} (check the DSN's user and password, "
                "clickhouse.password_env or clickhouse.password_file)"
            ) from None
        raise StoreError(f"cannot connect to ClickHouse at {endpoint.url}: {detail}") from None


def _s(value: Optional[str]) -> str:
    return value if value is not None else ""


def event_row(ev: Any, payload: bytes, seq: int, received_at: _dt.datetime) -> tuple[Any, ...]:
    """The ``events`` row of a validated event record (column order: EVENT_COLUMNS)."""
    server = ev.server
    principal = ev.principal
    token = ev.token
    session = ev.session
    network = ev.network
    outcome = ev.outcome
    tool = ev.tool
    return (
        ev.event_id,
        ev.time,
        ev.type,
        ev.tenant,
        ev.source.kind,
        ev.source.name,
        _s(server.name) if server else "",
        _s(server.resource) if server else "",
        _s(principal.subject) if principal else "",
        _s(principal.issuer) if principal else "",
        _s(principal.client_id) if principal else "",
        _s(principal.tenant) if principal else "",
        _s(token.fingerprint) if token else "",
        _s(token.jti) if token else "",
        _s(session.id) if session else "",
        _s(network.client_ip) if network else "",
        _s(network.user_agent) if network else "",
        _s(outcome.status) if outcome else "",
        _s(outcome.reason) if outcome else "",
        tool.name if tool else "",
        payload,
        seq,
        received_at,
    )


def _alert_row(alert: Alert, created_at: _dt.datetime) -> tuple[Any, ...]:
    return (
        alert.alert_id,
        alert.rule_id,
        alert.severity,
        alert.time,
        alert.tenant,
        _s(alert.principal_subject),
        _s(alert.client_id),
        _s(alert.session_id),
        _s(alert.token_fingerprint),
        _s(alert.server_resource),
        list(alert.event_ids),
        alert.title,
        alert.description,
        float(alert.score),
        list(alert.attack),
        _s(alert.detector),
        created_at,
    )


def _aware(value: _dt.datetime) -> _dt.datetime:
    return value.replace(tzinfo=_UTC) if value.tzinfo is None else value


def _alert_of_row(row: Sequence[Any]) -> Alert:
    data = dict(zip(_ALERT_READ_COLUMNS, row))
    data["time"] = _aware(data["time"])
    for key in _OPTIONAL_ALERT_FIELDS:
        data[key] = data[key] or None
    return Alert(**data)


class Store:
    """Schema owner and query layer over one ClickHouse database.

    Thread-safe: one client per thread (chDB allows many clients on its one
    path), created on first use in that thread. ``options`` (the
    ``clickhouse`` settings section) applies to http(s) DSNs: timeouts, TLS,
    password source, retries and the cluster; a database in the DSN's path
    wins over ``database``.
    """

    def __init__(
        self,
        dsn: str,
        database: str = "mcpsift",
        *,
        retention_days: int = 0,
        options: Optional["ClickHouseSettings"] = None,
    ):
        if options is None:
            from mcpsift.settings import ClickHouseSettings

            options = ClickHouseSettings()
        self.dsn = dsn
        self.options = options
        self.endpoint: Optional[Endpoint] = None
        self.cluster: Optional[str] = None
        if dsn.startswith("chdb://"):
            self.url = dsn
            # in-process: nothing transient to wait out, and the hot path stays bare
            self._policy = RetryPolicy(retries=0, where=dsn)
            self._connect_kwargs: dict[str, Any] = {}
        else:
            self.endpoint = parse_dsn(dsn)
            self.url = self.endpoint.url
            database = self.endpoint.database or database
            self._connect_kwargs = _http_kwargs(self.endpoint, options)
            self._policy = RetryPolicy(
                retries=options.retries,
                backoff_s=options.retry_backoff_s,
                where=self.url,
                secret=self._connect_kwargs["password"],
            )
            if options.cluster is not None:
                if not valid_cluster_name(options.cluster):
                    raise StoreError(
                        f"clickhouse.cluster {options.cluster!r} must be a cluster name from the server's "
                        "remote_servers (letters, digits, '_', '.', '-') or a {macro}"
                    )
                self.cluster = options.cluster
        if not database or not set(database) <= _IDENTIFIER_OK:
            raise StoreError(f"database name {database!r} must be letters, digits and underscores")
        self.database = database
        self.retention_days = retention_days
        self._local = threading.local()
        self._version_lock = threading.Lock()
        self._version = 0
        self._client_for_thread()  # fail early, with a clear message

    # -- plumbing ------------------------------------------------------------

    def _client_for_thread(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            if self.endpoint is None:
                raw = _chdb_client(self.dsn)
            else:
                raw = _server_client(self.endpoint, self._connect_kwargs, self._policy)
            client = self._local.client = _RetryingClient(raw, self._policy)
        return client

    @property
    def client(self) -> Any:
        """This thread's client; its query/command/insert/raw_query retry transient failures."""
        return self._client_for_thread()

    def _ddl(self, statement: str) -> Any:
        """Run a DDL statement (``{db}`` filled in), ``ON CLUSTER`` when a cluster is set."""
        sql = statement.format(db=self.database)
        return self.command(for_cluster(sql, self.cluster) if self.cluster else sql)

    @staticmethod
    def _dedup_settings(dedup_token: Optional[str]) -> Optional[dict[str, Any]]:
        if dedup_token is None:
            return None
        if not isinstance(dedup_token, str) or not dedup_token:
            raise StoreError(f"dedup_token must be a non-empty string, not {dedup_token!r}")
        return {"insert_deduplicate": 1, "insert_deduplication_token": dedup_token}

    def _t(self, table: str) -> str:
        return f"{self.database}.{table}"

    def command(self, sql: str, parameters: Optional[dict[str, Any]] = None) -> Any:
        return self.client.command(sql, parameters=parameters)

    def query_rows(self, sql: str, parameters: Optional[dict[str, Any]] = None) -> list[tuple[Any, ...]]:
        return self.client.query(sql, parameters=parameters).result_rows

    # -- schema --------------------------------------------------------------

    def migrate(self) -> list[int]:
        """Create the database and apply pending migrations; returns the versions applied."""
        db = self.database
        for statement in BOOTSTRAP:
            self._ddl(statement)
        done = {r[0] for r in self.query_rows(f"SELECT version FROM {db}.schema_migrations FINAL")}
        applied = []
        for version, description, statements in MIGRATIONS:
            if version in done:
                continue
            for statement in statements:
                self._ddl(statement)
            self.client.insert(
                f"{db}.schema_migrations",
                [(version, description, _dt.datetime.now(_UTC))],
                column_names=["version", "description", "applied_at"],
            )
            applied.append(version)
        self._apply_retention()
        return applied

    def _apply_retention(self) -> None:
        table = self._t("events")
        if self.retention_days > 0:
            self._ddl(
                f"ALTER TABLE {table} MODIFY TTL toDateTime(time) + INTERVAL {int(self.retention_days)} DAY"
            )
        else:
            create = self.command(f"SHOW CREATE TABLE {table}")
            if "TTL" in str(create):
                self._ddl(f"ALTER TABLE {table} REMOVE TTL")

    def drop_database(self) -> None:
        self._ddl(f"DROP DATABASE IF EXISTS {self.database}")

    # -- writes (batched; each call is one INSERT) ---------------------------

    # ``dedup_token``: the same token on a repeated insert (a batch redelivered
    # after a crash, e.g. derived from topic/partition/offsets) makes the server
    # drop the repeat, so the batch is stored physically once (schema migration 7).

    def insert_events(self, rows: Sequence[tuple[Any, ...]], *, dedup_token: Optional[str] = None) -> None:
        if rows:
            self.client.insert(
                self._t("events"), rows, column_names=EVENT_COLUMNS, settings=self._dedup_settings(dedup_token)
            )

    def insert_alerts(self, alerts: Sequence[Alert], *, dedup_token: Optional[str] = None) -> None:
        if alerts:
            now = _dt.datetime.now(_UTC)
            self.client.insert(
                self._t("alerts"),
                [_alert_row(a, now) for a in alerts],
                column_names=ALERT_COLUMNS,
                settings=self._dedup_settings(dedup_token),
            )

    def insert_dead_letters(
        self, rows: Sequence[tuple[str, str, bytes | str, int]], *, dedup_token: Optional[str] = None
    ) -> None:
        """Rows of (source, reason, raw payload, position in its batch/file)."""
        if rows:
            now = _dt.datetime.now(_UTC)
            data = [
                (now, source, reason, payload if isinstance(payload, (bytes, str)) else str(payload), position)
                for source, reason, payload, position in rows
            ]
            self.client.insert(
                self._t("dead_letter"), data, column_names=DEAD_LETTER_COLUMNS, settings=self._dedup_settings(dedup_token)
            )

    def save_checkpoint(self, name: str, seq: int, snapshot: bytes) -> None:
        self.client.insert(
            self._t("checkpoints"),
            [(name, seq, snapshot, _dt.datetime.now(_UTC))],
            column_names=["name", "seq", "snapshot", "updated_at"],
        )

    # -- reads ---------------------------------------------------------------

    def load_checkpoint(self, name: str) -> Optional[tuple[int, bytes]]:
        result = self.client.query(
            f"SELECT seq, snapshot FROM {self._t('checkpoints')} WHERE name = {{name:String}} "
            "ORDER BY seq DESC, updated_at DESC LIMIT 1",
            parameters={"name": name},
            column_formats={"snapshot": "bytes"},
        ).result_rows
        if not result:
            return None
        seq, snapshot = result[0]
        return int(seq), snapshot if isinstance(snapshot, bytes) else snapshot.encode("utf-8")

    def max_ingest_seq(self) -> int:
        rows = self.query_rows(f"SELECT max(ingest_seq) FROM {self._t('events')}")
        return int(rows[0][0] or 0)

    def iter_payloads_after(self, seq: int, batch: int = 5_000) -> Iterator[tuple[int, bytes]]:
        """(ingest_seq, payload) of stored events after ``seq``, in ingest order, in pages."""
        last = seq
        while True:
            rows = self.client.query(
                f"SELECT ingest_seq, payload FROM {self._t('events')} "
                "WHERE ingest_seq > {last:UInt64} ORDER BY ingest_seq LIMIT {batch:UInt32}",
                parameters={"last": last, "batch": batch},
                column_formats={"payload": "bytes"},
            ).result_rows
            if not rows:
                return
            for s, payload in rows:
                yield int(s), payload
            last = int(rows[-1][0])

    def count_events(self, tenant: Optional[str] = None) -> int:
        where, params = ("WHERE tenant = {tenant:String}", {"tenant": tenant}) if tenant else ("", {})
        return int(self.query_rows(f"SELECT count() FROM {self._t('events')} FINAL {where}", params)[0][0])

    def count_events_between(self, since: _dt.datetime, until: _dt.datetime) -> int:
        """Stored events (each once) with ``since <= time < until``."""
        return int(
            self.query_rows(
                f"SELECT count() FROM {self._t('events')} FINAL "
                "WHERE time >= {since:DateTime64(3, 'UTC')} AND time < {until:DateTime64(3, 'UTC')}",
                {"since": since, "until": until},
            )[0][0]
        )

    def iter_payloads_between(
        self, since: _dt.datetime, until: _dt.datetime, batch: int = 5_000
    ) -> Iterator[bytes]:
        """Payloads of stored events (each once) with ``since <= time < until``, in
        event-time order (ties by event_id), in pages: what ``mcpsift train`` replays."""
        table = self._t("events")
        last: Optional[tuple[_dt.datetime, str]] = None
        while True:
            params: dict[str, Any] = {"since": since, "until": until, "batch": batch}
            after = ""
            if last is not None:
                after = (
                    "AND (time > {lt:DateTime64(3, 'UTC')} "
                    "OR (time = {lt:DateTime64(3, 'UTC')} AND event_id > {lid:String})) "
                )
                params.update(lt=last[0], lid=last[1])
            rows = self.client.query(
                f"SELECT time, event_id, payload FROM {table} FINAL "
                "WHERE time >= {since:DateTime64(3, 'UTC')} AND time < {until:DateTime64(3, 'UTC')} "
                f"{after}ORDER BY time, event_id LIMIT {{batch:UInt32}}",
                parameters=params,
                column_formats={"payload": "bytes"},
            ).result_rows
            if not rows:
                return
            for _, _, payload in rows:
                yield payload
            last = (_aware(rows[-1][0]), rows[-1][1])

    def event_id_counts(self) -> dict[str, int]:
        """How many rows each event_id has *as queries see it* (FINAL): 1 each when idempotency holds."""
        rows = self.query_rows(
            f"SELECT event_id, count() FROM {self._t('events')} FINAL GROUP BY event_id"
        )
        return {r[0]: int(r[1]) for r in rows}

    def raw_event_rows(self) -> int:
        """Physical rows before deduplication (for reports; never for answers)."""
        return int(self.query_rows(f"SELECT count() FROM {self._t('events')}")[0][0])

    def list_alerts(
        self,
        *,
        tenant: Optional[str] = None,
        rule_id: Optional[str] = None,
        since: Optional[_dt.datetime] = None,
        until: Optional[_dt.datetime] = None,
        limit: int = 100,
    ) -> list[Alert]:
        conditions = []
        params: dict[str, Any] = {"limit": int(limit)}
        if tenant:
            conditions.append("tenant = {tenant:String}")
            params["tenant"] = tenant
        if rule_id:
            conditions.append("rule_id = {rule_id:String}")
            params["rule_id"] = rule_id
        if since:
            conditions.append("time >= {since:DateTime64(3, 'UTC')}")
            params["since"] = since
        if until:
            conditions.append("time < {until:DateTime64(3, 'UTC')}")
            params["until"] = until
        where = ("WHERE " + " AND ".join(conditions)) if conditions else ""
        rows = self.query_rows(
            f"SELECT {', '.join(_ALERT_READ_COLUMNS)} FROM {self._t('alerts')} FINAL {where} "
            "ORDER BY time DESC, alert_id LIMIT {limit:UInt32}",
            params,
        )
        return [_alert_of_row(row) for row in rows]

    def alerts_by_id(self, alert_ids: Sequence[str]) -> dict[str, Alert]:
        """The stored alerts with these ids (missing ids are absent from the result)."""
        if not alert_ids:
            return {}
        rows = self.query_rows(
            f"SELECT {', '.join(_ALERT_READ_COLUMNS)} FROM {self._t('alerts')} FINAL "
            "WHERE alert_id IN {ids:Array(String)}",
            {"ids": list(alert_ids)},
        )
        return {a.alert_id: a for a in map(_alert_of_row, rows)}

    def count_alerts(self, rule_id: Optional[str] = None) -> int:
        where, params = ("WHERE rule_id = {r:String}", {"r": rule_id}) if rule_id else ("", {})
        return int(self.query_rows(f"SELECT count() FROM {self._t('alerts')} FINAL {where}", params)[0][0])

    def list_dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self.query_rows(
            f"SELECT received_at, source, reason, payload, position FROM {self._t('dead_letter')} "
            "ORDER BY received_at DESC LIMIT {limit:UInt32}",
            {"limit": int(limit)},
        )
        return [
            {
                "received_at": _aware(r[0]).isoformat(),
                "source": r[1],
                "reason": r[2],
                "payload": r[3] if isinstance(r[3], str) else r[3].decode("utf-8", "replace"),
                "position": int(r[4]),
            }
            for r in rows
        ]

    # -- the SIEM outbox (deliveries) ------------------------------------------
    #
    # One row per (output, alert) and state change; the latest version wins
    # (FINAL). Rows are created by :meth:`enqueue_deliveries` when an alert is
    # stored, and moved on only by the dispatcher (or a re-drive).

    def _next_version(self) -> int:
        with self._version_lock:
            self._version = max(self._version + 1, time.time_ns())
            return self._version

    def enqueue_deliveries(self, pairs: Sequence[tuple[str, str]], now: Optional[_dt.datetime] = None) -> int:
        """Make ``(output, alert_id)`` pending, unless that output already knows the
        alert (pending, delivered or dead): a replayed or redelivered alert is
        never sent twice. Returns how many were new."""
        if not pairs:
            return 0
        ids = sorted({alert_id for _, alert_id in pairs})
        known = {
            (r[0], r[1])
            for r in self.query_rows(
                f"SELECT DISTINCT output, alert_id FROM {self._t('deliveries')} WHERE alert_id IN {{ids:Array(String)}}",
                {"ids": ids},
            )
        }
        now = now or _dt.datetime.now(_UTC)
        fresh = []
        for pair in dict.fromkeys(pairs):
            if pair not in known:
                fresh.append((pair[0], pair[1], "pending", 0, now, "", now))
        self.record_deliveries(fresh)
        return len(fresh)

    def record_deliveries(self, rows: Sequence[tuple[str, str, str, int, _dt.datetime, str, _dt.datetime]]) -> None:
        """New states: rows of (output, alert_id, state, attempts, next_attempt_at, last_error, enqueued_at)."""
        if not rows:
            return
        now = _dt.datetime.now(_UTC)
        data = [(*row, now, self._next_version()) for row in rows]
        self.client.insert(self._t("deliveries"), data, column_names=DELIVERY_COLUMNS)

    def due_deliveries(self, output: str, now: _dt.datetime, limit: int) -> list[tuple[str, int, _dt.datetime]]:
        """(alert_id, attempts, enqueued_at) of ``output``'s pending deliveries whose
        next attempt is due, oldest first."""
        rows = self.query_rows(
            f"SELECT alert_id, attempts, enqueued_at FROM {self._t('deliveries')} FINAL "
            "WHERE output = {output:String} AND state = 'pending' "
            "AND next_attempt_at <= {now:DateTime64(3, 'UTC')} "
            "ORDER BY enqueued_at, alert_id LIMIT {limit:UInt32}",
            {"output": output, "now": now, "limit": int(limit)},
        )
        return [(r[0], int(r[1]), _aware(r[2])) for r in rows]

    def next_due_at(self, output: str) -> Optional[_dt.datetime]:
        """When ``output``'s earliest pending delivery is due (None: nothing pending)."""
        rows = self.query_rows(
            f"SELECT min(next_attempt_at), count() FROM {self._t('deliveries')} FINAL "
            "WHERE output = {output:String} AND state = 'pending'",
            {"output": output},
        )
        return _aware(rows[0][0]) if rows and int(rows[0][1]) else None

    def delivery_summary(self) -> dict[str, dict[str, Any]]:
        """Per output: counts by state, the oldest pending enqueue time, the latest error."""
        summary: dict[str, dict[str, Any]] = {}
        table = self._t("deliveries")
        for output, state, count, oldest in self.query_rows(
            f"SELECT output, state, count(), min(enqueued_at) FROM {table} FINAL GROUP BY output, state"
        ):
            entry = summary.setdefault(output, {"pending": 0, "delivered": 0, "dead": 0})
            entry[state] = int(count)
            if state == "pending":
                entry["oldest_pending"] = _aware(oldest)
        for output, error, when in self.query_rows(
            f"SELECT output, argMax(last_error, version), max(updated_at) FROM {table} FINAL "
            "WHERE last_error != '' GROUP BY output"
        ):
            entry = summary.setdefault(output, {"pending": 0, "delivered": 0, "dead": 0})
            entry["last_error"] = error
            entry["last_error_at"] = _aware(when)
        return summary

    def dead_deliveries(self, output: str, limit: int = 100) -> list[tuple[str, int, str]]:
        """(alert_id, attempts, last_error) of ``output``'s dead deliveries."""
        rows = self.query_rows(
            f"SELECT alert_id, attempts, last_error FROM {self._t('deliveries')} FINAL "
            "WHERE output = {output:String} AND state = 'dead' ORDER BY updated_at LIMIT {limit:UInt32}",
            {"output": output, "limit": int(limit)},
        )
        return [(r[0], int(r[1]), r[2]) for r in rows]

    def redrive_deliveries(self, output: str, alert_ids: Optional[Sequence[str]] = None) -> int:
        """Make ``output``'s dead deliveries (all, or these ids) pending again, due now,
        with a fresh retry schedule. Returns how many."""
        where = "AND alert_id IN {ids:Array(String)}" if alert_ids is not None else ""
        rows = self.query_rows(
            f"SELECT alert_id, enqueued_at FROM {self._t('deliveries')} FINAL "
            f"WHERE output = {{output:String}} AND state = 'dead' {where}",
            {"output": output, "ids": list(alert_ids or [])},
        )
        now = _dt.datetime.now(_UTC)
        self.record_deliveries([(output, r[0], "pending", 0, now, "", _aware(r[1])) for r in rows])
        return len(rows)

    def save_output_state(self, output: str, state: dict[str, Any]) -> None:
        """Persist an output's operator-visible state (e.g. disabled after HTTP 410)."""
        self.save_checkpoint(f"output:{output}", 0, json.dumps(state).encode("utf-8"))

    def load_output_states(self) -> dict[str, dict[str, Any]]:
        rows = self.query_rows(
            f"SELECT name, argMax(snapshot, updated_at) FROM {self._t('checkpoints')} "
            "WHERE startsWith(name, 'output:') GROUP BY name"
        )
        states = {}
        for name, blob in rows:
            text = blob.decode("utf-8") if isinstance(blob, bytes) else blob
            try:
                states[name[len("output:"):]] = json.loads(text)
            except ValueError:
                continue
        return states

    # -- the API's own access log -----------------------------------------------

    def insert_api_audit(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Rows in the order of ``mcpsift.api.audit.AUDIT_COLUMNS``."""
        if rows:
            self.client.insert(self._t("api_audit"), list(rows), column_names=API_AUDIT_COLUMNS)

    def list_api_audit(
        self, *, subject: Optional[str] = None, since: Optional[_dt.datetime] = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Newest first."""
        conditions, params = [], {"limit": int(limit)}
        if subject:
            conditions.append("subject = {subject:String}")
            params["subject"] = subject
        if since:
            conditions.append("time >= {since:DateTime64(3, 'UTC')}")
            params["since"] = since
        where = ("WHERE " + " AND ".join(conditions)) if conditions else ""
        rows = self.query_rows(
            f"SELECT {', '.join(API_AUDIT_COLUMNS)} FROM {self._t('api_audit')} {where} ORDER BY time DESC LIMIT {{limit:UInt32}}",
            params,
        )
        return [{**dict(zip(API_AUDIT_COLUMNS, r)), "time": _aware(r[0]).isoformat()} for r in rows]

    def close(self) -> None:
        client = getattr(self._local, "client", None)
        if client is not None:
            try:
                client.close()
            except Exception:
                pass
            self._local.client = None


def open_store(settings: Any, *, migrate: bool = True) -> Store:
    """A store for ``settings`` (DSN, database, retention, the ``clickhouse`` section),
    migrated unless told otherwise."""
    if settings.dsn.startswith("chdb://"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(
        settings.dsn,
        settings.database,
        retention_days=settings.retention_days,
        options=getattr(settings, "clickhouse", None),
    )
    if migrate:
        store.migrate()
    return store

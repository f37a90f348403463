"""The one module that talks to ClickHouse: schema, writes and every query.

All access goes through clickhouse-connect (``get_client(dsn=...)``): chDB
in-process for ``chdb://`` DSNs, HTTP for a server; the SQL is the same.
chDB opens one data path per process, so tests isolate by *database* inside
one path; the database name is a setting.
"""

from __future__ import annotations

import datetime as _dt
import json
import threading
import time
from typing import Any, Iterator, Optional, Sequence

from mcpsift.alerts import Alert

from .schema import API_AUDIT_COLUMNS, ALERT_COLUMNS, DEAD_LETTER_COLUMNS, DELIVERY_COLUMNS, EVENT_COLUMNS, MIGRATIONS

__all__ = ["Store", "StoreError", "event_row", "open_store"]

_UTC = _dt.timezone.utc
_ALERT_READ_COLUMNS = [c for c in ALERT_COLUMNS if c != "created_at"]
_OPTIONAL_ALERT_FIELDS = ("principal_subject", "client_id", "session_id", "token_fingerprint", "server_resource", "detector")
_IDENTIFIER_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


class StoreError(RuntimeError):
    """The store cannot be opened or used; the message says what to do."""


def _client(dsn: str) -> Any:
    try:
        import clickhouse_connect
    except ImportError:  # pragma: no cover - depends on the install
        raise StoreError(
            "the ClickHouse store needs clickhouse-connect and chdb: pip install 'mcpsift[all]'"
        ) from None
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
        raise StoreError(f"cannot connect to ClickHouse at {dsn}: {text.strip()[:300]}") from None


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
    path), created on first use in that thread.
    """

    def __init__(self, dsn: str, database: str = "mcpsift", *, retention_days: int = 0):
        if not database or not set(database) <= _IDENTIFIER_OK:
            raise StoreError(f"database name {database!r} must be letters, digits and underscores")
        self.dsn = dsn
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
            client = self._local.client = _client(self.dsn)
        return client

    @property
    def client(self) -> Any:
        return self._client_for_thread()

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
        self.command(f"CREATE DATABASE IF NOT EXISTS {db}")
        self.command(
            f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations "
            "(version UInt32, description String, applied_at DateTime64(3, 'UTC')) "
            "ENGINE = ReplacingMergeTree ORDER BY version"
        )
        done = {r[0] for r in self.query_rows(f"SELECT version FROM {db}.schema_migrations FINAL")}
        applied = []
        for version, description, statements in MIGRATIONS:
            if version in done:
                continue
            for statement in statements:
                self.command(statement.format(db=db))
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
            self.command(
                f"ALTER TABLE {table} MODIFY TTL toDateTime(time) + INTERVAL {int(self.retention_days)} DAY"
            )
        else:
            create = self.command(f"SHOW CREATE TABLE {table}")
            if "TTL" in str(create):
                self.command(f"ALTER TABLE {table} REMOVE TTL")

    def drop_database(self) -> None:
        self.command(f"DROP DATABASE IF EXISTS {self.database}")

    # -- writes (batched; each call is one INSERT) ---------------------------

    def insert_events(self, rows: Sequence[tuple[Any, ...]]) -> None:
        if rows:
            self.client.insert(self._t("events"), rows, column_names=EVENT_COLUMNS)

    def insert_alerts(self, alerts: Sequence[Alert]) -> None:
        if alerts:
            now = _dt.datetime.now(_UTC)
            self.client.insert(
                self._t("alerts"), [_alert_row(a, now) for a in alerts], column_names=ALERT_COLUMNS
            )

    def insert_dead_letters(self, rows: Sequence[tuple[str, str, bytes | str, int]]) -> None:
        """Rows of (source, reason, raw payload, position in its batch/file)."""
        if rows:
            now = _dt.datetime.now(_UTC)
            data = [
                (now, source, reason, payload if isinstance(payload, (bytes, str)) else str(payload), position)
                for source, reason, payload, position in rows
            ]
            self.client.insert(self._t("dead_letter"), data, column_names=DEAD_LETTER_COLUMNS)

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
    """A store for ``settings`` (DSN, database, retention), migrated unless told otherwise."""
    if settings.dsn.startswith("chdb://"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(settings.dsn, settings.database, retention_days=settings.retention_days)
    if migrate:
        store.migrate()
    return store

"""The store against a ClickHouse *server*: DSN, TLS, timeouts, retries, insert
dedup and the cluster DDL.

No ClickHouse server can run here, so the server side is :class:`ChdbOverHttp`:
a loopback HTTP(S) listener that speaks ClickHouse's HTTP interface by handing
each request (SQL in the body or ``query=``, ``param_*`` binds, settings as
URL parameters, Native insert data) to the real engine, chDB, and answering
with the engine's own bytes, or with its error code in
``X-ClickHouse-Exception-Code`` like a server does. clickhouse-connect's real
HTTP client talks to it unchanged. Faults (503, a ClickHouse error) are queued
answers in the same wire format. Refused connections, TLS and a listener that
never answers are real sockets.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import socket
import tempfile
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator, Optional
from urllib.parse import parse_qsl, urlsplit

import pytest

from mcpsift.alerts import Alert
from mcpsift.settings import ClickHouseSettings, Settings
from mcpsift.store import Store, StoreError, open_store
from mcpsift.store.schema import DEDUP_WINDOW, MIGRATIONS, REPLICA_PATH, all_statements, for_cluster
from mcpsift.store.store import TRANSIENT_ERROR_CODES, RetriesExhausted, RetryPolicy, parse_dsn, transient_reason
from mcpsift.bench.receivers import send_reply
from tests.fixtures.receivers import TlsCerts
from tests.test_store import _rows

SECRET = "s3cr#t:p@ss/word"
SECRET_Q = "s3cr%23t%3Ap%40ss%2Fword"  # percent-encoded for a DSN
FAST = dict(retries=3, retry_backoff_s=0.01)

# -- a ClickHouse HTTP interface over the real engine -------------------------

_TRANSPORT_PARAMS = {
    "query", "query_id", "session_id", "session_timeout", "session_check", "database", "default_format",
    "wait_end_of_query", "compress", "decompress", "enable_http_compression", "send_progress_in_http_headers",
    "http_headers_progress_interval_ms", "user", "password", "quota_key", "buffer_size", "client_protocol_version",
}
_CODE = re.compile(r"Code: (\d+)")
Fault = tuple[int, dict[str, str], bytes]
BUSY: Fault = (503, {}, b"Service Unavailable")


class ChdbOverHttp:
    """ClickHouse's HTTP interface on loopback, answered by chDB at ``chdb_path``.

    ``fail(fault, n, sql_prefix)`` answers the next ``n`` requests whose SQL starts
    with ``sql_prefix`` with ``fault`` instead of executing them; ``requests``
    records each request's URL parameters, headers and SQL.
    """

    def __init__(self, chdb_path: str, tls: Optional[TlsCerts] = None):
        self.conn_str = os.path.realpath(chdb_path)
        self.tls = tls
        self.faults: collections.deque[tuple[str, Fault]] = collections.deque()
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server: Optional[ThreadingHTTPServer] = None
        self.port = 0

    def dsn(self, userinfo: str = "", path: str = "") -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}/{path}"

    def fail(self, fault: Fault, n: int = 1, sql_prefix: str = "") -> None:
        with self._lock:
            self.faults.extend([(sql_prefix, fault)] * n)

    def sql_seen(self) -> list[str]:
        with self._lock:
            return [r["sql"] for r in self.requests]

    def start(self) -> "ChdbOverHttp":
        forwarder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("transfer-encoding", "").lower() == "chunked":
                    out = bytearray()
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            return bytes(out)
                        out += self.rfile.read(size)
                        self.rfile.readline()
                length = int(self.headers.get("content-length") or 0)
                return self.rfile.read(length) if length else b""

            def do_POST(self) -> None:
                body = self._body()
                encoding = self.headers.get("content-encoding", "")
                if encoding == "lz4":
                    import lz4.frame

                    body = lz4.frame.decompress(body)
                elif encoding == "zstd":
                    from backports import zstd

                    body = zstd.decompress(body)
                params = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
                sql, data = forwarder._split(params, body)
                with forwarder._lock:
                    forwarder.requests.append(
                        {"params": params, "headers": {k.lower(): v for k, v in self.headers.items()}, "sql": sql}
                    )
                    fault = None
                    if forwarder.faults and sql.startswith(forwarder.faults[0][0]):
                        fault = forwarder.faults.popleft()[1]
                status, headers, reply = fault if fault is not None else forwarder._execute(params, sql, data)
                send_reply(self, status, headers, reply)

            do_GET = do_POST

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        if self.tls is not None:
            self._server.socket = self.tls.server_context().wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @staticmethod
    def _split(params: dict[str, str], body: bytes) -> tuple[str, bytes]:
        """(SQL, insert data): clickhouse-connect sends an insert as its statement line then Native bytes."""
        if "query" in params:
            return params["query"], body
        if body[:6].upper() == b"INSERT":
            head, _, data = body.partition(b"\n")
            return head.decode(), data
        return body.decode(), b""

    def _execute(self, params: dict[str, str], sql: str, data: bytes) -> Fault:
        import chdb

        binds = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
        settings = {k: v for k, v in params.items() if k not in _TRANSPORT_PARAMS and not k.startswith("param_")}
        conn = chdb.connect(self.conn_str)  # per request: settings never leak between requests
        tmp = None
        try:
            if params.get("database"):
                conn.query(f"USE {params['database']}", "TabSeparated")
            if data:
                target, _, fmt = sql.rpartition(" FORMAT ")
                with tempfile.NamedTemporaryFile(suffix=".native", delete=False) as f:
                    f.write(data)
                    tmp = f.name
                clause = (" SETTINGS " + ", ".join(f"{k} = '{v}'" for k, v in settings.items())) if settings else ""
                result = conn.query(f"{target} FROM INFILE '{tmp}'{clause} FORMAT {fmt.strip()}", "TabSeparated")
            else:
                for k, v in settings.items():
                    conn.query(f"SET {k} = '{v}'", "TabSeparated")
                result = conn.query(sql, params.get("default_format", "TabSeparated"), params=binds)
            return 200, {"X-ClickHouse-Timezone": "UTC"}, result.bytes() or b""
        except Exception as exc:  # the engine's error, as a server reports it
            text = str(exc)
            code = _CODE.search(text)
            return 500, {"X-ClickHouse-Exception-Code": code.group(1) if code else "1001"}, text.encode()
        finally:
            conn.close()
            if tmp:
                os.unlink(tmp)


@pytest.fixture
def server(chdb_path: str) -> Iterator[Callable[..., ChdbOverHttp]]:
    """``server(tls=None)`` -> a started :class:`ChdbOverHttp` over the session's chDB path."""
    made: list[ChdbOverHttp] = []

    def make(tls: Optional[TlsCerts] = None) -> ChdbOverHttp:
        s = ChdbOverHttp(chdb_path, tls).start()
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


@pytest.fixture
def dbname(chdb_path: str) -> Iterator[str]:
    """A fresh database name, dropped afterwards (through chDB directly)."""
    name = f"t_srv_{uuid.uuid4().hex[:10]}"
    yield name
    Store(f"chdb://{chdb_path}", name).drop_database()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _no_secret(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text and SECRET_Q not in text and "s3cr" not in text


# -- DSN ------------------------------------------------------------------------


def test_a_dsn_is_parsed_and_percent_decoded() -> None:
    e = parse_dsn(f"https://ops%40corp:{SECRET_Q}@ch.internal:9443/audit?compress=zstd")
    assert (e.scheme, e.host, e.port, e.username, e.password, e.database, e.compress) == (
        "https", "ch.internal", 9443, "ops@corp", SECRET, "audit", "zstd",
    )
    assert e.url == "https://ch.internal:9443" and SECRET not in repr(e)
    assert (parse_dsn("http://h").port, parse_dsn("https://h/").port, parse_dsn("http://h").database) == (8123, 8443, None)
    assert parse_dsn("http://[::1]:8124").url == "http://[::1]:8124"


@pytest.mark.parametrize(
    "dsn, problem",
    [
        (f"ftp://u:{SECRET_Q}@h:8123/db", "scheme must be chdb://, http:// or https:// (got ftp)"),
        (f"http://u:{SECRET_Q}@:8123/db", "no host"),
        (f"http://u:{SECRET_Q}@h:81x3/db", "port '81x3' is not a number"),
        (f"http://u:{SECRET_Q}@h:70000/db", "port '70000' is not a number from 1 to 65535"),
        (f"http://u:{SECRET_Q}@h:8123/my-db", "database 'my-db' in the path"),
        (f"http://u:{SECRET_Q}@h:8123/db?secure=1", "unknown option 'secure'"),
        (f"http://u:{SECRET_Q}@h:8123/db?compress=snappy", "compress='snappy'"),
    ],
)
def test_a_bad_dsn_names_the_problem_and_never_the_password(dsn: str, problem: str) -> None:
    with pytest.raises(StoreError) as err:
        Store(dsn)
    assert problem in str(err.value)
    _no_secret(str(err.value))


def test_tls_options_on_a_plain_http_dsn_are_refused_by_name(tmp_path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    with pytest.raises(StoreError, match=r"clickhouse.ca_file is set but clickhouse_dsn is http://"):
        Store("http://127.0.0.1:1/", options=ClickHouseSettings(ca_file=ca))
    with pytest.raises(StoreError, match=r"clickhouse.client_cert_file: .*missing.pem is not a readable file"):
        Store("https://127.0.0.1:1/", options=ClickHouseSettings(client_cert_file=tmp_path / "missing.pem"))
    with pytest.raises(StoreError, match=r"clickhouse.password_env: the environment variable MCPSIFT_T_NOPE is not set"):
        Store("http://u@127.0.0.1:1/", options=ClickHouseSettings(password_env="MCPSIFT_T_NOPE"))
    with pytest.raises(StoreError, match=r"clickhouse.cluster 'a b' must be"):
        Store("http://127.0.0.1:1/", options=ClickHouseSettings(cluster="a b"))


# -- a server round trip --------------------------------------------------------


def test_a_server_store_round_trip_with_the_password_from_a_file(server, dbname, tmp_path, chdb_path) -> None:
    ch = server()
    secret_file = tmp_path / "pw"
    secret_file.write_text(SECRET + "\n")
    settings = Settings(
        clickhouse_dsn=ch.dsn("ops%40corp", dbname), database="ignored_by_the_dsn",
        clickhouse=ClickHouseSettings(password_file=secret_file, **FAST),
    )
    store = open_store(settings)
    assert store.database == dbname and store.url == f"http://127.0.0.1:{ch.port}"
    import base64

    auth = ch.requests[0]["headers"]["authorization"]
    assert base64.b64decode(auth.split()[1]).decode() == f"ops@corp:{SECRET}"
    too_many = (503, {"X-ClickHouse-Exception-Code": "202"}, b"Code: 202. DB::Exception: Too many simultaneous "
                b"queries. Maximum: 100. (TOO_MANY_SIMULTANEOUS_QUERIES)")
    ch.fail(too_many, 1, sql_prefix="INSERT")
    before = len(ch.requests)
    rows = _rows(300)
    store.insert_events(rows, dedup_token="mcp.events/0/0-299")  # retried once, on the transient error
    store.insert_events(rows, dedup_token="mcp.events/0/0-299")  # redelivered: dropped by the server
    inserts = [s for s in ch.sql_seen()[before:] if s.startswith("INSERT")]
    assert len(inserts) == 3 and all(r["params"].get("insert_deduplication_token") == "mcp.events/0/0-299"
                                     for r in ch.requests[before:] if r["sql"].startswith("INSERT"))
    assert store.raw_event_rows() == 300 and store.count_events() == 300 and store.max_ingest_seq() == 300
    assert [s for s, _ in store.iter_payloads_after(290)] == list(range(291, 301))
    # what the server stored is in the engine, not in a client-side cache
    direct = Store(f"chdb://{chdb_path}", dbname)
    assert direct.raw_event_rows() == 300
    assert store.migrate() == []  # versions recorded on the server


def test_https_needs_the_ca_and_the_right_name(server, dbname, tls_certs: TlsCerts, caplog) -> None:
    ch = server(tls=tls_certs)
    caplog.set_level(logging.WARNING, logger="mcpsift.store")
    with pytest.raises(StoreError) as err:
        Store(ch.dsn(f"u:{SECRET_Q}", dbname), options=ClickHouseSettings(**FAST))
    text = str(err.value)
    assert f"cannot connect to ClickHouse at https://127.0.0.1:{ch.port}: TLS certificate verification failed" in text
    assert "clickhouse.ca_file" in text
    assert not [r for r in caplog.records if r.name == "mcpsift.store"], "a certificate failure is not retried"
    with pytest.raises(StoreError, match="TLS certificate verification failed"):
        Store(ch.dsn("u", dbname), options=ClickHouseSettings(ca_file=tls_certs.ca_file, server_host_name="ch.example"))
    store = Store(ch.dsn(f"u:{SECRET_Q}", dbname), options=ClickHouseSettings(ca_file=tls_certs.ca_file, server_host_name="localhost"))
    assert store.query_rows("SELECT 40 + 2") == [(42,)]
    _no_secret(text, caplog.text)


# -- failures: what is retried, what is not -------------------------------------


def test_nothing_listening_is_retried_then_named_without_the_password(caplog) -> None:
    port = _free_port()
    caplog.set_level(logging.WARNING, logger="mcpsift.store")
    with pytest.raises(StoreError) as err:
        Store(f"http://ops:{SECRET_Q}@127.0.0.1:{port}/db", options=ClickHouseSettings(retries=2, retry_backoff_s=0.01))
    assert str(err.value).startswith(
        f"cannot connect to ClickHouse at http://127.0.0.1:{port} (connection refused; gave up after 3 attempts)"
    )
    retries = [r.getMessage() for r in caplog.records if r.name == "mcpsift.store"]
    assert len(retries) == 2 and all("connection refused" in m and "retry" in m for m in retries)
    _no_secret(str(err.value), caplog.text)


def test_a_listener_that_never_answers_times_out_after_send_receive_timeout() -> None:
    with socket.socket() as silent:  # the kernel accepts connections; nobody ever answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        with pytest.raises(StoreError) as err:
            Store(f"http://u:{SECRET_Q}@127.0.0.1:{port}", options=ClickHouseSettings(send_receive_timeout_s=1, retries=0))
    assert "timed out waiting for the answer; gave up after 1 attempt" in str(err.value)
    _no_secret(str(err.value))


def test_503_twice_then_an_answer_connects_after_two_logged_retries(server, dbname, caplog) -> None:
    ch = server()
    ch.fail(BUSY, 2)
    caplog.set_level(logging.WARNING, logger="mcpsift.store")
    store = Store(ch.dsn(f"u:{SECRET_Q}", dbname), options=ClickHouseSettings(**FAST))
    assert store.query_rows("SELECT 40 + 2") == [(42,)]
    assert [m.getMessage().split(": ", 1)[1] for m in caplog.records if m.name == "mcpsift.store"] == [
        "connect failed (HTTP 503); retry 1 of 3 in 0.01 s",
        "connect failed (HTTP 503); retry 2 of 3 in 0.02 s",
    ]
    assert ch.sql_seen()[:3] == ["SELECT version(), timezone()"] * 3
    ch.fail(BUSY, 4)
    with pytest.raises(StoreError, match=r"query failed \(HTTP 503; gave up after 4 attempts\)"):
        store.query_rows("SELECT 1")
    _no_secret(caplog.text)


def test_definite_errors_fail_at_once(server, dbname, caplog) -> None:
    ch = server()
    store = Store(ch.dsn("", dbname), options=ClickHouseSettings(**FAST))
    caplog.set_level(logging.WARNING, logger="mcpsift.store")
    before = len(ch.requests)
    with pytest.raises(Exception) as unknown:
        store.query_rows("SELECT count() FROM system.no_such_table")
    assert getattr(unknown.value, "code", None) == 60 and len(ch.requests) == before + 1
    with pytest.raises(Exception) as syntax:
        store.command("SELEC 1")
    assert getattr(syntax.value, "code", None) == 62 and transient_reason(syntax.value) is None
    ch.fail(
        (516, {"X-ClickHouse-Exception-Code": "516"}, b"Code: 516. DB::Exception: ops: Authentication failed: "
         b"password is incorrect, or there is no user with such name. (AUTHENTICATION_FAILED)")
    )
    with pytest.raises(StoreError) as auth:
        Store(ch.dsn(f"ops:{SECRET_Q}", dbname), options=ClickHouseSettings(**FAST))
    assert "authentication failed for user 'ops'" in str(auth.value)
    assert not [r for r in caplog.records if r.name == "mcpsift.store"]
    _no_secret(str(auth.value), caplog.text)


def test_retry_policy_backs_off_exponentially_and_only_on_transient_errors() -> None:
    waits: list[float] = []
    policy = RetryPolicy(retries=5, backoff_s=0.5, max_backoff_s=3.0, sleep=waits.append)
    calls = []

    def refused() -> None:
        calls.append(1)
        raise ConnectionRefusedError(111, "Connection refused")

    with pytest.raises(RetriesExhausted) as err:
        policy.run("insert", refused)
    assert waits == [0.5, 1.0, 2.0, 3.0, 3.0] and len(calls) == 6
    assert err.value.reason == "connection refused" and err.value.attempts == 6
    calls.clear()

    def wrong() -> None:
        calls.append(1)
        raise ValueError("not transient")

    with pytest.raises(ValueError):
        policy.run("query", wrong)
    assert len(calls) == 1


def test_transient_codes_are_the_engines_own_names(store) -> None:
    codes = sorted(TRANSIENT_ERROR_CODES)
    rows = store.query_rows("SELECT arrayJoin({c:Array(UInt32)}) AS code, errorCodeToName(code)", {"c": codes})
    assert {int(c): n for c, n in rows} == TRANSIENT_ERROR_CODES
    assert 516 not in TRANSIENT_ERROR_CODES and 60 not in TRANSIENT_ERROR_CODES


# -- insert dedup (chDB, plain MergeTree) -----------------------------------------


def _alert(i: int) -> Alert:
    import datetime as dt

    return Alert(
        alert_id=f"a-{i}", rule_id="MCP-T-001", severity="high", time=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
        tenant="default", event_ids=[f"e-{i}"], title="t", description="d", score=1.0, attack=[],
    )


def test_a_redelivered_batch_with_its_token_is_stored_physically_once(store) -> None:
    db = store.database
    for table in ("events", "alerts", "dead_letter"):
        assert f"non_replicated_deduplication_window = {DEDUP_WINDOW}" in store.command(f"SHOW CREATE TABLE {db}.{table}")

    def physical(table: str) -> int:
        return int(store.query_rows(f"SELECT count() FROM {db}.{table}")[0][0])

    rows = _rows(2_000)
    store.insert_events(rows, dedup_token="mcp.events/0/0-1999")
    store.insert_events(rows, dedup_token="mcp.events/0/0-1999")
    assert physical("events") == 2_000
    store.insert_events(rows, dedup_token="mcp.events/1/0-1999")  # another token: a different batch
    assert physical("events") == 4_000

    alerts = [_alert(i) for i in range(3)]
    store.insert_alerts(alerts, dedup_token="mcp.alerts/0/7")
    store.insert_alerts(alerts, dedup_token="mcp.alerts/0/7")  # created_at differs: only the token dedups
    assert physical("alerts") == 3
    store.insert_alerts(alerts, dedup_token="mcp.alerts/0/8")
    assert physical("alerts") == 6

    letters = [("kafka", "not JSON", b"{oops", 0)]
    store.insert_dead_letters(letters, dedup_token="mcp.events/2/41")
    store.insert_dead_letters(letters, dedup_token="mcp.events/2/41")
    assert physical("dead_letter") == 1
    store.insert_dead_letters(letters)
    assert physical("dead_letter") == 2

    with pytest.raises(StoreError, match="dedup_token must be a non-empty string"):
        store.insert_events(rows, dedup_token="")


def test_a_byte_identical_retry_without_token_is_dropped_too(store) -> None:
    rows = _rows(500)
    store.insert_events(rows)
    store.insert_events(rows)  # e.g. a retry after a timeout whose first attempt landed
    assert store.raw_event_rows() == 500


# -- the schema a server accepts ------------------------------------------------------

_ENGINE = re.compile(r"ENGINE\s*=\s*(\w+)")
_SETTING = re.compile(r"MODIFY SETTING\s+(\w+)|SETTINGS\s+(\w+)\s*=")
_CODEC = re.compile(r"CODEC\(([^)]*(?:\([^)]*\))?[^)]*)\)")
_INDEX_TYPE = re.compile(r"TYPE\s+(\w+)")
_COLUMN_TYPE = re.compile(r"(?:^|[(,])\s*[a-z_][a-z0-9_]*\s+([A-Z][A-Za-z0-9]*)", re.MULTILINE)


def test_every_engine_setting_codec_type_and_index_exists_in_the_engine(store) -> None:
    ddl = all_statements(store.database)
    engines = {m for s in ddl for m in _ENGINE.findall(s)}
    settings = {a or b for s in ddl for a, b in _SETTING.findall(s)}
    codecs = {re.sub(r"\(.*", "", c.strip()) for s in ddl for m in _CODEC.findall(s) for c in m.split(",")}
    index_types = {m for s in ddl for m in _INDEX_TYPE.findall(s)}
    types = {m for s in ddl for m in _COLUMN_TYPE.findall(s)} | {"LowCardinality", "Nullable", "Array", "DateTime64"}
    assert {"ReplacingMergeTree", "MergeTree"} <= engines and "non_replicated_deduplication_window" in settings
    assert {"ZSTD", "Delta"} <= codecs and {"bloom_filter", "minmax"} <= index_types

    def names(sql: str, values: set[str]) -> set[str]:
        return {r[0] for r in store.query_rows(sql, {"v": sorted(values)})}

    assert names("SELECT name FROM system.table_engines WHERE name IN {v:Array(String)}", engines) == engines
    assert names("SELECT name FROM system.merge_tree_settings WHERE name IN {v:Array(String)}", settings) == settings
    assert names("SELECT name FROM system.codecs WHERE name IN {v:Array(String)}", codecs) == codecs
    assert names("SELECT name FROM system.data_type_families WHERE name IN {v:Array(String)}", types) == types
    # the replicated engines the cluster variant uses exist too
    replicated = {f"Replicated{e}" for e in engines}
    assert names("SELECT name FROM system.table_engines WHERE name IN {v:Array(String)}", replicated) == replicated
    # no system table lists index types: the ones the engine built from this DDL are exactly those it names
    created = store.query_rows(
        "SELECT DISTINCT type FROM system.data_skipping_indices WHERE database = {db:String}", {"db": store.database}
    )
    assert {r[0] for r in created} == index_types


def test_the_cluster_variant_of_every_statement_parses_and_is_replicated(store) -> None:
    statements = all_statements("audit")
    assert len(statements) == 2 + sum(len(s) for _, _, s in MIGRATIONS)
    for statement in statements:
        clustered = for_cluster(statement, "mcpsift_cluster")
        formatted = store.query_rows("SELECT formatQuery({q:String})", {"q": clustered})[0][0]
        assert "ON CLUSTER mcpsift_cluster" in formatted or "ON CLUSTER 'mcpsift_cluster'" in formatted, formatted
        for engine in _ENGINE.findall(formatted):
            assert engine.startswith("Replicated") and engine.endswith("MergeTree")
        if "ENGINE" in formatted:
            assert f"'{REPLICA_PATH}', '{{replica}}'" in formatted
    events = for_cluster(statements[2], "c1")
    assert f"ENGINE = ReplicatedReplacingMergeTree('{REPLICA_PATH}', '{{replica}}', ingest_seq)" in events
    assert "ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')" in for_cluster(
        statements[4], "c1"
    )
    with pytest.raises(ValueError, match="not a table or database DDL"):
        for_cluster("INSERT INTO audit.events VALUES", "c1")


def test_a_cluster_store_sends_on_cluster_ddl(server, dbname) -> None:
    ch = server()
    store = Store(ch.dsn("", dbname), options=ClickHouseSettings(cluster="mcpsift_cluster", **FAST))
    with pytest.raises(Exception) as err:  # the engine here has no cluster (and no Keeper): it says so
        store.migrate()
    assert "mcpsift_cluster" in str(err.value)
    assert ch.sql_seen()[-1] == f"CREATE DATABASE IF NOT EXISTS {dbname} ON CLUSTER 'mcpsift_cluster'"

"""The ClickHouse schema, as ordered, versioned migrations.

Each migration is a list of statements with ``{db}`` for the database name.
They are applied in order at start-up by :meth:`mcpsift.store.Store.migrate`,
each recorded in ``schema_migrations``; applying them again is a no-op. The
same SQL runs on chDB and on a ClickHouse server.

Idempotent writes: ``events`` and ``alerts`` are ReplacingMergeTree tables
whose sorting key ends in the natural id, and every read goes through
``FINAL`` (see queries in store.py), so a row written twice is one row to
every query, before and after background merges.

Redelivered batches: the events, alerts and dead_letter tables keep the hashes
of their last ``DEDUP_WINDOW`` inserted blocks (migration 7), so an insert that
repeats a block, or carries an ``insert_deduplication_token`` already seen, is
dropped by the server before it becomes a part (physically one copy).

On a cluster (``clickhouse.cluster``) every statement goes through
:func:`for_cluster`: ``ON CLUSTER '<name>'`` and ``Replicated*MergeTree``
engines with the conventional Keeper path (docs/operations.md).
"""

from __future__ import annotations

import re

__all__ = [
    "MIGRATIONS",
    "BOOTSTRAP",
    "DEDUP_WINDOW",
    "EVENT_COLUMNS",
    "ALERT_COLUMNS",
    "DEAD_LETTER_COLUMNS",
    "DELIVERY_COLUMNS",
    "API_AUDIT_COLUMNS",
    "REPLICA_PATH",
    "REPLICA_NAME",
    "all_statements",
    "for_cluster",
    "valid_cluster_name",
]

#: inserted blocks whose hashes (and dedup tokens) each dedup table remembers
DEDUP_WINDOW = 10_000

#: where Replicated* tables keep their state in Keeper, and the replica's name
#: (macros every replica defines in its server config)
REPLICA_PATH = "/clickhouse/tables/{shard}/{database}/{table}"
REPLICA_NAME = "{replica}"

#: run before any migration: the database and the table that records migrations
BOOTSTRAP: list[str] = [
    "CREATE DATABASE IF NOT EXISTS {db}",
    "CREATE TABLE IF NOT EXISTS {db}.schema_migrations "
    "(version UInt32, description String, applied_at DateTime64(3, 'UTC')) "
    "ENGINE = ReplacingMergeTree ORDER BY version",
]

EVENT_COLUMNS = (
    "event_id",
    "time",
    "type",
    "tenant",
    "source_kind",
    "source_name",
    "server_name",
    "server_resource",
    "principal_subject",
    "principal_issuer",
    "client_id",
    "principal_tenant",
    "token_fingerprint",
    "token_jti",
    "session_id",
    "client_ip",
    "user_agent",
    "outcome_status",
    "outcome_reason",
    "tool_name",
    "payload",
    "ingest_seq",
    "received_at",
)

ALERT_COLUMNS = (
    "alert_id",
    "rule_id",
    "severity",
    "time",
    "tenant",
    "principal_subject",
    "client_id",
    "session_id",
    "token_fingerprint",
    "server_resource",
    "event_ids",
    "title",
    "description",
    "score",
    "attack",
    "detector",
    "created_at",
)

DEAD_LETTER_COLUMNS = ("received_at", "source", "reason", "payload", "position")

API_AUDIT_COLUMNS = (
    "time",
    "subject",
    "via",
    "tenants",
    "method",
    "path",
    "query",
    "status",
    "duration_ms",
    "client_ip",
)

DELIVERY_COLUMNS = (
    "output",
    "alert_id",
    "state",
    "attempts",
    "next_attempt_at",
    "last_error",
    "enqueued_at",
    "updated_at",
    "version",
)

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (
        1,
        "events, alerts, dead_letter, checkpoints",
        [
            """
            CREATE TABLE IF NOT EXISTS {db}.events
            (
                event_id String,
                time DateTime64(3, 'UTC'),
                type LowCardinality(String),
                tenant LowCardinality(String),
                source_kind LowCardinality(String),
                source_name String,
                server_name String,
                server_resource String,
                principal_subject String,
                principal_issuer String,
                client_id String,
                principal_tenant String,
                token_fingerprint String,
                token_jti String,
                session_id String,
                client_ip String,
                user_agent String,
                outcome_status LowCardinality(String),
                outcome_reason LowCardinality(String),
                tool_name String,
                payload String CODEC(ZSTD(3)),
                ingest_seq UInt64,
                received_at DateTime64(3, 'UTC'),
                INDEX idx_session session_id TYPE bloom_filter(0.01) GRANULARITY 4,
                INDEX idx_subject principal_subject TYPE bloom_filter(0.01) GRANULARITY 4,
                INDEX idx_token token_fingerprint TYPE bloom_filter(0.01) GRANULARITY 4,
                INDEX idx_client client_id TYPE bloom_filter(0.01) GRANULARITY 4,
                INDEX idx_event event_id TYPE bloom_filter(0.01) GRANULARITY 4,
                INDEX idx_seq ingest_seq TYPE minmax GRANULARITY 1
            )
            ENGINE = ReplacingMergeTree(ingest_seq)
            PARTITION BY toDate(time)
            ORDER BY (tenant, time, event_id)
            """,
            """
            CREATE TABLE IF NOT EXISTS {db}.alerts
            (
                alert_id String,
                rule_id LowCardinality(String),
                severity LowCardinality(String),
                time DateTime64(3, 'UTC'),
                tenant LowCardinality(String),
                principal_subject String,
                client_id String,
                session_id String,
                token_fingerprint String,
                server_resource String,
                event_ids Array(String),
                title String,
                description String,
                score Float64,
                attack Array(String),
                detector LowCardinality(String),
                created_at DateTime64(3, 'UTC')
            )
            ENGINE = ReplacingMergeTree
            PARTITION BY toYYYYMM(time)
            ORDER BY (tenant, alert_id)
            """,
            """
            CREATE TABLE IF NOT EXISTS {db}.dead_letter
            (
                received_at DateTime64(3, 'UTC'),
                source LowCardinality(String),
                reason String,
                payload String CODEC(ZSTD(3)),
                position UInt64
            )
            ENGINE = MergeTree
            PARTITION BY toYYYYMM(received_at)
            ORDER BY received_at
            """,
            """
            CREATE TABLE IF NOT EXISTS {db}.checkpoints
            (
                name String,
                seq UInt64,
                snapshot String CODEC(ZSTD(3)),
                updated_at DateTime64(3, 'UTC')
            )
            ENGINE = ReplacingMergeTree(updated_at)
            ORDER BY name
            """,
        ],
    ),
    (
        2,
        "deliveries: the SIEM outbox, one row per (output, alert) and its state",
        [
            # state: pending (waiting for its next attempt), delivered, dead
            # (retries exhausted or refused for good; re-drivable). Every change
            # is a new row with a higher version; FINAL shows the latest.
            """
            CREATE TABLE IF NOT EXISTS {db}.deliveries
            (
                output LowCardinality(String),
                alert_id String,
                state LowCardinality(String),
                attempts UInt16,
                next_attempt_at DateTime64(3, 'UTC'),
                last_error String,
                enqueued_at DateTime64(3, 'UTC'),
                updated_at DateTime64(3, 'UTC'),
                version UInt64
            )
            ENGINE = ReplacingMergeTree(version)
            ORDER BY (output, alert_id)
            """,
        ],
    ),
    (
        3,
        "chain, chain_checkpoints: the hash chain over stored event batches (tamper evidence)",
        [
            # One row per stored ingest batch per tenant (mcpsift/store/chain.py):
            # the batch's physical rows (ingest_seqs, event_ids, per-row hashes),
            # the batch hash and the running chain hash. Append-only MergeTree:
            # a second row with the same (tenant, seq) is itself a finding.
            """
            CREATE TABLE IF NOT EXISTS {db}.chain
            (
                tenant LowCardinality(String),
                seq UInt64,
                kind LowCardinality(String),
                first_ingest_seq UInt64,
                last_ingest_seq UInt64,
                row_count UInt32,
                min_time DateTime64(3, 'UTC'),
                ingest_seqs Array(UInt64) CODEC(Delta, ZSTD(3)),
                event_ids Array(String) CODEC(ZSTD(3)),
                row_hashes Array(String) CODEC(ZSTD(1)),
                batch_hash String,
                prev_hash String,
                chain_hash String,
                created_at DateTime64(3, 'UTC')
            )
            ENGINE = MergeTree
            ORDER BY (tenant, seq)
            """,
            # every CHECKPOINT_EVERY entries per tenant: the chain hash so far,
            # kept apart so rewriting the chain table alone does not go unseen
            """
            CREATE TABLE IF NOT EXISTS {db}.chain_checkpoints
            (
                tenant LowCardinality(String),
                seq UInt64,
                last_ingest_seq UInt64,
                chain_hash String,
                created_at DateTime64(3, 'UTC')
            )
            ENGINE = MergeTree
            ORDER BY (tenant, seq)
            """,
        ],
    ),
    (
        4,
        "api_keys: API keys for automation, stored as hashes; revocation is a new row",
        [
            # key_hash is sha256 of the whole key; the secret itself is never stored.
            # Every change (revocation) is a new row with a higher version; FINAL shows the latest.
            """
            CREATE TABLE IF NOT EXISTS {db}.api_keys
            (
                key_id String,
                name String,
                key_hash String,
                roles Array(LowCardinality(String)),
                tenants Array(String),
                all_tenants UInt8,
                created_by String,
                created_at DateTime64(3, 'UTC'),
                revoked_at Nullable(DateTime64(3, 'UTC')),
                version UInt64
            )
            ENGINE = ReplacingMergeTree(version)
            ORDER BY key_id
            """,
        ],
    ),
    (
        5,
        "alert_changes: alert triage, event-sourced (one row per change; current state derived)",
        [
            # A NULL field means "not changed by this record"; the current value
            # of a field is its latest non-NULL value (mcpsift/store/triage.py).
            """
            CREATE TABLE IF NOT EXISTS {db}.alert_changes
            (
                alert_id String,
                tenant LowCardinality(String),
                changed_at DateTime64(3, 'UTC'),
                seq UInt64,
                actor String,
                status Nullable(String),
                assignee Nullable(String),
                note Nullable(String)
            )
            ENGINE = MergeTree
            ORDER BY (tenant, alert_id, changed_at, seq)
            """,
        ],
    ),
    (
        6,
        "api_audit: who called the API for what (api/audit.py)",
        [
            """
            CREATE TABLE IF NOT EXISTS {db}.api_audit
            (
                time DateTime64(3, 'UTC'),
                subject String,
                via LowCardinality(String),
                tenants Array(String),
                method LowCardinality(String),
                path String,
                query String,
                status UInt16,
                duration_ms Float64,
                client_ip String
            )
            ENGINE = MergeTree
            PARTITION BY toYYYYMM(time)
            ORDER BY (time, subject)
            """,
        ],
    ),
    (
        7,
        "insert deduplication on plain MergeTree: redelivered batches stored once",
        [
            # Replicated tables deduplicate inserted blocks by default (Keeper keeps
            # replicated_deduplication_window hashes); plain MergeTree only when this
            # window is set. A batch retried after a timeout, or redelivered by Kafka
            # with the same insert_deduplication_token, then lands once.
            f"ALTER TABLE {{db}}.{table} MODIFY SETTING non_replicated_deduplication_window = {DEDUP_WINDOW}"
            for table in ("events", "alerts", "dead_letter")
        ],
    ),
]


def all_statements(db: str) -> list[str]:
    """Every DDL statement the store runs to build ``db`` from nothing, in order."""
    return [s.format(db=db) for s in BOOTSTRAP] + [
        s.format(db=db) for _, _, statements in MIGRATIONS for s in statements
    ]


_CLUSTER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*|\{[A-Za-z0-9_]+\}")
_DDL_TARGET = re.compile(
    r"^(\s*(?:CREATE|ALTER|DROP|TRUNCATE|OPTIMIZE)\s+(?:TABLE|DATABASE)\s+"
    r"(?:IF\s+(?:NOT\s+)?EXISTS\s+)?[A-Za-z0-9_.]+)",
    re.IGNORECASE,
)
_ENGINE = re.compile(
    r"ENGINE\s*=\s*(Replacing|Summing|Aggregating|Collapsing|VersionedCollapsing|Graphite)?MergeTree\b"
    r"(?:\s*\(([^()]*)\))?"
)


def valid_cluster_name(name: str) -> bool:
    """A cluster name from the server's ``remote_servers`` (or a ``{macro}``)."""
    return bool(_CLUSTER_NAME.fullmatch(name))


def for_cluster(statement: str, cluster: str) -> str:
    """``statement`` (formatted with its database) as run on every replica of ``cluster``:
    ``ON CLUSTER '<cluster>'`` after the target, and each ``*MergeTree`` engine
    replaced by its ``Replicated*MergeTree`` form with :data:`REPLICA_PATH` and
    :data:`REPLICA_NAME` (engine arguments kept, after those two).

    Raises ValueError for a statement that is not CREATE/ALTER/DROP/TRUNCATE/
    OPTIMIZE of a table or database, so no DDL reaches one replica only.
    """
    if not valid_cluster_name(cluster):
        raise ValueError(f"cluster name {cluster!r} must be letters, digits, '_', '.', '-' or a {{macro}}")
    if not _DDL_TARGET.match(statement):
        raise ValueError(f"not a table or database DDL statement: {statement.strip()[:80]!r}")
    sql = _DDL_TARGET.sub(lambda m: f"{m.group(1)} ON CLUSTER '{cluster}'", statement, count=1)

    def replicated(m: re.Match[str]) -> str:
        args = [f"'{REPLICA_PATH}'", f"'{REPLICA_NAME}'"]
        if m.group(2) and m.group(2).strip():
            args.append(m.group(2).strip())
        return f"ENGINE = Replicated{m.group(1) or ''}MergeTree({', '.join(args)})"

    return _ENGINE.sub(replicated, sql)

"""Tamper evidence: a hash chain over the stored event log, one chain per tenant.

What is chained
    Every physical row appended to ``events`` (each ingest batch, including a
    redelivered event's second row). A row's hash covers *all* its stored
    columns (:data:`CHAINED_COLUMNS`: the payload bytes, event_id, ingest_seq,
    time, and the columns derived from the payload that queries filter on), in
    a length-prefixed canonical form that Python (at ingest) and ClickHouse
    (at verify, :func:`row_hash_sql`) compute identically. Row hashes are
    SHA-256 truncated to 128 bits.

    One :class:`ChainEntry` per stored ingest batch per tenant keeps the
    batch's ingest_seqs, event_ids and row hashes, the batch hash over them,
    the previous entry's chain hash and its own chain hash. Every
    :data:`CHECKPOINT_EVERY` entries the chain hash is also written to
    ``chain_checkpoints`` (and ``verify`` prints each tenant's head), so a
    rewrite of the chain table alone is seen, and heads can be anchored
    outside the database.

When it is written
    :meth:`Chainer.append` is called by the embedded runner right after a
    batch's INSERT into ``events`` succeeded, under the same ingest lock, so
    chain order is ingest order. Events first, chain second: a crash between
    the two leaves *unchained rows* (never chain entries that point at rows
    that do not exist). :meth:`Chainer.recover`, called at start-up, chains
    every row after the last chained ``ingest_seq`` as ``kind='recovered'``
    entries, which ``verify`` lists so an operator can look at them. A failed
    chain INSERT is kept and retried with the next batch.

What verify checks (:func:`verify_chain`)
    Per tenant, in chain order: entry sequence numbers without gaps, each
    entry's prev_hash linking to the previous entry, its batch and chain
    hashes, checkpoints; then the physical rows (no FINAL) against the entry:
    a row whose hash differs is *altered*, a chained row that is gone is
    *deleted*, a row no entry claims (or a second row at a chained
    ingest_seq) is *inserted*. The first broken entry ends that tenant's
    check. Rows after the last chained ingest_seq are *unchained* (crash
    window), not a break.

    ``events`` is a ReplacingMergeTree: a background merge removes the older
    physical row of a redelivered event. A missing row whose event_id still
    has a physical row with a higher ingest_seq in the same tenant is
    reported as *deduplicated by merge*, not as tampering.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from .schema import EVENT_COLUMNS

__all__ = [
    "CHAINED_COLUMNS",
    "CHAINED_STRING_COLUMNS",
    "CHECKPOINT_EVERY",
    "GENESIS",
    "ChainEntry",
    "Chainer",
    "TenantReport",
    "VerifyReport",
    "row_hash",
    "row_hash_sql",
    "verify_chain",
]

log = logging.getLogger("mcpsift.chain")

#: the prev_hash of a tenant's first entry
GENESIS = "0" * 64
#: a checkpoint row every this many entries per tenant
CHECKPOINT_EVERY = 64
#: the canonical row content, frozen (adding an events column does not change old
#: hashes): these string columns, each as ``<length in characters>:<value>``, then
#: ``<time ms>:<ingest_seq>:<received_at ms>:`` and the payload bytes
CHAINED_STRING_COLUMNS: tuple[str, ...] = (
    "event_id", "type", "tenant", "source_kind", "source_name", "server_name",
    "server_resource", "principal_subject", "principal_issuer", "client_id", "principal_tenant",
    "token_fingerprint", "token_jti", "session_id", "client_ip", "user_agent", "outcome_status",
    "outcome_reason", "tool_name",
)
CHAINED_COLUMNS: tuple[str, ...] = CHAINED_STRING_COLUMNS + ("time", "ingest_seq", "received_at", "payload")
_COL = {name: i for i, name in enumerate(EVENT_COLUMNS)}
_strings = operator.itemgetter(*(_COL[name] for name in CHAINED_STRING_COLUMNS))
_I_TIME, _I_SEQ, _I_RECEIVED, _I_PAYLOAD = (_COL[n] for n in ("time", "ingest_seq", "received_at", "payload"))
_UTC = _dt.timezone.utc
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_UTC)
_MS = _dt.timedelta(milliseconds=1)
_CHAIN_COLUMNS = (
    "tenant", "seq", "kind", "first_ingest_seq", "last_ingest_seq", "row_count", "min_time",
    "ingest_seqs", "event_ids", "row_hashes", "batch_hash", "prev_hash", "chain_hash", "created_at",
)
#: how many examples of one kind of finding a report keeps (counts are exact)
_EXAMPLES = 50


def _ms(value: _dt.datetime) -> int:
    """Milliseconds since the epoch, floored: what a DateTime64(3) column stores."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=_UTC)
    return (value - _EPOCH) // _MS


def row_hash(row: Sequence[Any]) -> str:
    """The 128-bit hex hash of an ``events`` row (column order EVENT_COLUMNS), as stored."""
    text = "".join([f"{len(v)}:{v}" for v in _strings(row)])
    text += f"{_ms(row[_I_TIME])}:{int(row[_I_SEQ])}:{_ms(row[_I_RECEIVED])}:"
    h = hashlib.sha256(text.encode("utf-8"))
    payload = row[_I_PAYLOAD]
    h.update(payload if isinstance(payload, (bytes, bytearray)) else str(payload).encode("utf-8"))
    return h.hexdigest()[:32]


def row_hash_sql() -> str:
    """The same hash computed by ClickHouse over a stored row (fixed identifiers only)."""
    pieces = [f"toString(lengthUTF8({name})), ':', {name}" for name in CHAINED_STRING_COLUMNS]
    pieces.append(
        "toString(toUnixTimestamp64Milli(time)), ':', toString(ingest_seq), ':', "
        "toString(toUnixTimestamp64Milli(received_at)), ':', payload"
    )
    return f"lower(hex(substring(SHA256(concat({', '.join(pieces)})), 1, 16)))"


def _batch_hash(ingest_seqs: Sequence[int], event_ids: Sequence[str], row_hashes: Sequence[str]) -> str:
    h = hashlib.sha256()
    for seq, event_id, rh in zip(ingest_seqs, event_ids, row_hashes):
        eid = event_id.encode("utf-8")
        h.update(b"%d:%d:%s:%s;" % (seq, len(eid), eid, rh.encode()))
    return h.hexdigest()


def _chain_hash(tenant: str, seq: int, kind: str, ingest_seqs: Sequence[int], min_time_ms: int, batch_hash: str, prev_hash: str) -> str:
    t = tenant.encode("utf-8")
    first = ingest_seqs[0] if ingest_seqs else 0
    last = ingest_seqs[-1] if ingest_seqs else 0
    text = b"%d:%s|%d|%s|%d|%d|%d|%d|%s|%s" % (
        len(t), t, seq, kind.encode(), first, last, len(ingest_seqs), min_time_ms, batch_hash.encode(), prev_hash.encode()
    )
    return hashlib.sha256(text).hexdigest()


@dataclass
class ChainEntry:
    tenant: str
    seq: int
    kind: str  # "ingest" | "recovered"
    ingest_seqs: list[int]
    event_ids: list[str]
    row_hashes: list[str]
    min_time_ms: int
    batch_hash: str
    prev_hash: str
    chain_hash: str

    def row(self, created_at: _dt.datetime) -> tuple[Any, ...]:
        return (
            self.tenant, self.seq, self.kind, self.ingest_seqs[0], self.ingest_seqs[-1], len(self.ingest_seqs),
            _EPOCH + self.min_time_ms * _MS, self.ingest_seqs, self.event_ids, self.row_hashes,
            self.batch_hash, self.prev_hash, self.chain_hash, created_at,
        )


class Chainer:
    """Writes the chain for one writer of ``events`` (the embedded runner).

    :meth:`recover` once at start-up (loads the tenants' heads, chains the
    crash window), then :meth:`append` after every stored batch.
    """

    def __init__(self, store: Any):
        self.store = store
        self.heads: dict[str, tuple[int, str]] = {}
        self._pending: list[ChainEntry] = []
        self.recovered_rows = 0
        self.entries_written = 0
        self._loaded = False

    def _t(self, table: str) -> str:
        return f"{self.store.database}.{table}"

    def load_heads(self) -> None:
        rows = self.store.query_rows(
            f"SELECT tenant, max(seq), argMax(chain_hash, seq) FROM {self._t('chain')} GROUP BY tenant"
        )
        self.heads = {r[0]: (int(r[1]), r[2]) for r in rows}
        self._loaded = True

    def chained_through(self) -> int:
        """The highest ingest_seq any entry covers (0: nothing chained yet)."""
        return int(self.store.query_rows(f"SELECT max(last_ingest_seq) FROM {self._t('chain')}")[0][0] or 0)

    def _entries(self, hashed: Sequence[tuple[str, int, str, int, str]], kind: str) -> list[ChainEntry]:
        """Entries for rows given as (tenant, ingest_seq, event_id, time_ms, row_hash) in ingest order."""
        by_tenant: dict[str, list[tuple[str, int, str, int, str]]] = {}
        for item in hashed:
            by_tenant.setdefault(item[0], []).append(item)
        entries = []
        for tenant, items in by_tenant.items():
            items.sort(key=lambda i: i[1])
            seqs = [i[1] for i in items]
            ids = [i[2] for i in items]
            hashes = [i[4] for i in items]
            min_time = min(i[3] for i in items)
            head_seq, head_hash = self.heads.get(tenant, (0, GENESIS))
            batch = _batch_hash(seqs, ids, hashes)
            seq = head_seq + 1
            chain = _chain_hash(tenant, seq, kind, seqs, min_time, batch, head_hash)
            entries.append(ChainEntry(tenant, seq, kind, seqs, ids, hashes, min_time, batch, head_hash, chain))
            self.heads[tenant] = (seq, chain)
        return entries

    def append(self, rows: Sequence[Sequence[Any]]) -> bool:
        """Chain ``events`` rows that were just stored (EVENT_COLUMNS order).

        Returns False when the chain INSERT failed; the entries are kept and
        written with the next batch (or the rows are chained by recovery)."""
        if rows:
            if not self._loaded:  # a runner that skipped recover(): continue the stored chains
                self.load_heads()
            t, s, e, tm = _COL["tenant"], _COL["ingest_seq"], _COL["event_id"], _COL["time"]
            hashed = [(r[t], int(r[s]), r[e], _ms(r[tm]), row_hash(r)) for r in rows]
            self._pending.extend(self._entries(hashed, "ingest"))
        return self.flush()

    def flush(self) -> bool:
        if not self._pending:
            return True
        try:
            self._write(self._pending)
        except Exception as exc:
            log.error("chain write failed (%s: %s); %d entries kept for the next batch", type(exc).__name__, exc, len(self._pending))
            return False
        self._pending = []
        return True

    def _write(self, entries: list[ChainEntry]) -> None:
        now = _dt.datetime.now(_UTC)
        self.store.client.insert(self._t("chain"), [e.row(now) for e in entries], column_names=_CHAIN_COLUMNS)
        self.entries_written += len(entries)
        checkpoints = [(e.tenant, e.seq, e.ingest_seqs[-1], e.chain_hash, now) for e in entries if e.seq % CHECKPOINT_EVERY == 0]
        if checkpoints:
            try:
                self.store.client.insert(
                    self._t("chain_checkpoints"), checkpoints,
                    column_names=["tenant", "seq", "last_ingest_seq", "chain_hash", "created_at"],
                )
            except Exception as exc:  # the chain itself is written; a missed checkpoint is only less evidence
                log.warning("chain checkpoint write failed: %s: %s", type(exc).__name__, exc)

    def recover(self, page: int = 10_000) -> int:
        """Load heads and chain the rows stored after the last chained ingest_seq
        (a crash between the events write and the chain write, or data from
        before tamper evidence was on). Returns how many rows it chained."""
        self._pending = []
        self.load_heads()
        after = self.chained_through()
        chained = 0
        while True:
            rows = self.store.query_rows(
                f"SELECT tenant, ingest_seq, event_id, toUnixTimestamp64Milli(time), {row_hash_sql()} "
                f"FROM {self._t('events')} WHERE ingest_seq > {{after:UInt64}} "
                "ORDER BY ingest_seq LIMIT {page:UInt32}",
                {"after": after, "page": page},
            )
            if not rows:
                break
            hashed = [(r[0], int(r[1]), r[2], int(r[3]), r[4]) for r in rows]
            self._write(self._entries(hashed, "recovered"))
            chained += len(rows)
            after = int(rows[-1][1])
        if chained:
            log.warning(
                "tamper evidence: chained %d rows stored after the last chained batch (kind 'recovered'; "
                "a crash between the events write and the chain write, or rows from before chaining was on). "
                "`mcpsift verify` lists them.", chained,
            )
        self.recovered_rows = chained
        return chained


# -- verify -----------------------------------------------------------------


@dataclass
class TenantReport:
    tenant: str
    ok: bool = True
    entries_checked: int = 0
    rows_checked: int = 0
    #: the first broken entry (its seq), when not ok
    break_at_entry: Optional[int] = None
    break_reason: str = ""
    altered: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[dict[str, Any]] = field(default_factory=list)
    inserted: list[dict[str, Any]] = field(default_factory=list)
    chain_problems: list[str] = field(default_factory=list)
    deduplicated_by_merge: int = 0
    expired_by_retention: int = 0
    unchained: int = 0
    unchained_examples: list[dict[str, Any]] = field(default_factory=list)
    recovered_entries: list[dict[str, Any]] = field(default_factory=list)
    checkpoints_checked: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class VerifyReport:
    tenants: dict[str, TenantReport]
    since: Optional[_dt.datetime] = None
    until: Optional[_dt.datetime] = None

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tenants.values())

    @property
    def rows_checked(self) -> int:
        return sum(t.rows_checked for t in self.tenants.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "from": self.since.isoformat() if self.since else None,
            "to": self.until.isoformat() if self.until else None,
            "rows_checked": self.rows_checked,
            "tenants": {name: t.as_dict() for name, t in sorted(self.tenants.items())},
        }


def _keep(items: list[dict[str, Any]], item: dict[str, Any]) -> None:
    if len(items) < _EXAMPLES:
        items.append(item)


def verify_chain(
    store: Any,
    *,
    tenant: Optional[str] = None,
    since: Optional[_dt.datetime] = None,
    until: Optional[_dt.datetime] = None,
    retention_days: int = 0,
    on_progress: Optional[Callable[[int], None]] = None,
    page_entries: int = 100,
) -> VerifyReport:
    """Recompute the chain from the ``events`` table; the first break per tenant.

    ``since``/``until`` select chain entries by when they were written (ingest
    time); without ``until`` the rows after the chain's end are counted as
    unchained. ``on_progress(entries_done)`` is called after each page."""
    db = store.database
    tenants = {r[0] for r in store.query_rows(f"SELECT DISTINCT tenant FROM {db}.chain")}
    tenants |= {r[0] for r in store.query_rows(f"SELECT DISTINCT tenant FROM {db}.events")}
    if tenant is not None:
        tenants &= {tenant}
    chained_through = int(store.query_rows(f"SELECT max(last_ingest_seq) FROM {db}.chain")[0][0] or 0)
    horizon_ms = None
    if retention_days > 0:
        horizon_ms = _ms(_dt.datetime.now(_UTC) - _dt.timedelta(days=retention_days))
    report = VerifyReport({}, since, until)
    done = [0]
    for name in sorted(tenants):
        report.tenants[name] = _verify_tenant(store, name, since, until, chained_through, horizon_ms, page_entries, on_progress, done)
    return report


def _verify_tenant(
    store: Any, tenant: str, since: Optional[_dt.datetime], until: Optional[_dt.datetime],
    chained_through: int, horizon_ms: Optional[int], page_entries: int,
    on_progress: Optional[Callable[[int], None]], done: list[int],
) -> TenantReport:
    db = store.database
    rep = TenantReport(tenant)
    expected_seq, expected_prev, covered = 1, GENESIS, 0
    if since is not None:
        before = store.query_rows(
            f"SELECT seq, chain_hash, last_ingest_seq FROM {db}.chain WHERE tenant = {{t:String}} "
            "AND created_at < {since:DateTime64(3, 'UTC')} ORDER BY seq DESC LIMIT 1",
            {"t": tenant, "since": since},
        )
        if before:
            expected_seq, expected_prev, covered = int(before[0][0]) + 1, before[0][1], int(before[0][2])
    checkpoints: dict[int, set[str]] = {}
    for seq, chain_hash in store.query_rows(
        f"SELECT seq, chain_hash FROM {db}.chain_checkpoints WHERE tenant = {{t:String}}", {"t": tenant}
    ):
        checkpoints.setdefault(int(seq), set()).add(chain_hash)
    until_sql = "AND created_at < {until:DateTime64(3, 'UTC')} " if until is not None else ""
    last_seen = expected_seq - 1
    row_sql = row_hash_sql()

    def fail(entry_seq: int, reason: str) -> None:
        if rep.ok:
            rep.ok, rep.break_at_entry, rep.break_reason = False, entry_seq, reason

    while rep.ok:
        entries = store.query_rows(
            "SELECT seq, kind, first_ingest_seq, last_ingest_seq, row_count, toUnixTimestamp64Milli(min_time), "
            f"ingest_seqs, event_ids, row_hashes, batch_hash, prev_hash, chain_hash FROM {db}.chain "
            f"WHERE tenant = {{t:String}} AND seq > {{after:UInt64}} {until_sql}"
            "ORDER BY seq LIMIT {n:UInt32}",
            {"t": tenant, "after": last_seen, "until": until, "n": page_entries},
        )
        if not entries:
            break
        hi = max(int(e[3]) for e in entries)
        physical = store.query_rows(
            f"SELECT ingest_seq, event_id, {row_sql} FROM {db}.events "
            "WHERE tenant = {t:String} AND ingest_seq > {lo:UInt64} AND ingest_seq <= {hi:UInt64} ORDER BY ingest_seq",
            {"t": tenant, "lo": covered, "hi": hi},
        )
        at = 0
        for e in entries:
            seq, kind, first, last, count, min_time_ms = int(e[0]), e[1], int(e[2]), int(e[3]), int(e[4]), int(e[5])
            seqs, ids, hashes = [int(s) for s in e[6]], list(e[7]), list(e[8])
            batch_hash, prev_hash, chain_hash = e[9], e[10], e[11]
            # -- the entry itself and its link
            if seq == last_seen:
                rep.chain_problems.append(f"entry {seq} appears twice in the chain table")
                fail(seq, "a chain entry was written twice (forged entry?)")
            elif seq != expected_seq:
                rep.chain_problems.append(f"chain entries {expected_seq}..{seq - 1} are missing")
                fail(seq, "chain entries were deleted")
            if prev_hash != expected_prev:
                rep.chain_problems.append(f"entry {seq}: prev_hash does not match entry {seq - 1}'s chain hash")
                fail(seq, "the chain link is broken (an entry was rewritten)")
            if not seqs or (first, last, count) != (seqs[0], seqs[-1], len(seqs)) or not (len(seqs) == len(ids) == len(hashes)):
                rep.chain_problems.append(f"entry {seq}: its row lists are inconsistent")
                fail(seq, "a chain entry was rewritten")
            elif _batch_hash(seqs, ids, hashes) != batch_hash or _chain_hash(
                tenant, seq, kind, seqs, min_time_ms, batch_hash, prev_hash
            ) != chain_hash:
                rep.chain_problems.append(f"entry {seq}: its hashes do not match its content")
                fail(seq, "a chain entry was rewritten")
            if seq in checkpoints:
                rep.checkpoints_checked += 1
                if checkpoints[seq] != {chain_hash}:
                    rep.chain_problems.append(f"entry {seq}: chain hash differs from its checkpoint")
                    fail(seq, "the chain differs from a checkpoint (the chain table was rewritten)")
            if kind == "recovered":
                _keep(rep.recovered_entries, {"entry": seq, "rows": len(seqs), "first_ingest_seq": seqs[0] if seqs else 0})
            # -- the rows
            present: dict[int, list[tuple[str, str]]] = {}
            while at < len(physical) and int(physical[at][0]) <= last:
                s = int(physical[at][0])
                present.setdefault(s, []).append((physical[at][1], physical[at][2]))
                at += 1
            missing: list[tuple[int, str]] = []
            for s, event_id, rh in zip(seqs, ids, hashes):
                found = present.pop(s, None)
                rep.rows_checked += 1
                if found is None:
                    missing.append((s, event_id))
                    continue
                match = next((i for i, (pid, ph) in enumerate(found) if pid == event_id and ph == rh), None)
                if match is None:
                    now_id = found[0][0]
                    detail = {"ingest_seq": s, "event_id": event_id}
                    if now_id != event_id:
                        detail["stored_event_id"] = now_id
                    _keep(rep.altered, detail)
                    fail(seq, "rows were altered")
                    found = found[1:]
                else:
                    found = found[:match] + found[match + 1 :]
                for pid, _ in found:  # a second row at a chained ingest_seq
                    _keep(rep.inserted, {"ingest_seq": s, "event_id": pid})
                    fail(seq, "rows were inserted")
            for s, rows in sorted(present.items()):  # rows no entry claims, within this entry's range
                for pid, _ in rows:
                    _keep(rep.inserted, {"ingest_seq": s, "event_id": pid})
                    fail(seq, "rows were inserted")
            if missing:
                survivors = dict(
                    (r[0], int(r[1]))
                    for r in store.query_rows(
                        f"SELECT event_id, max(ingest_seq) FROM {db}.events WHERE tenant = {{t:String}} "
                        "AND event_id IN {ids:Array(String)} GROUP BY event_id",
                        {"t": tenant, "ids": sorted({m[1] for m in missing})},
                    )
                )
                for s, event_id in missing:
                    if survivors.get(event_id, 0) > s:
                        rep.deduplicated_by_merge += 1
                    elif horizon_ms is not None and min_time_ms < horizon_ms:
                        rep.expired_by_retention += 1
                    else:
                        _keep(rep.deleted, {"ingest_seq": s, "event_id": event_id})
                        fail(seq, "rows were deleted")
            rep.entries_checked += 1
            done[0] += 1
            last_seen = seq
            expected_seq, expected_prev, covered = seq + 1, chain_hash, max(covered, last)
            rep.head_seq, rep.head_hash = seq, chain_hash
            if not rep.ok:
                break
        if on_progress is not None:
            on_progress(done[0])
    if rep.ok and until is None:
        # rows after this tenant's last entry: forged if an entry of any tenant covers
        # their ingest_seq (the chain moved past them), unchained (crash window) if not
        params = {"t": tenant, "lo": covered, "ct": chained_through, "n": _EXAMPLES}
        forged = store.query_rows(
            f"SELECT ingest_seq, event_id FROM {db}.events WHERE tenant = {{t:String}} "
            "AND ingest_seq > {lo:UInt64} AND ingest_seq <= {ct:UInt64} ORDER BY ingest_seq LIMIT {n:UInt32}",
            params,
        )
        for s, event_id in forged:
            _keep(rep.inserted, {"ingest_seq": int(s), "event_id": event_id})
            fail(rep.head_seq + 1, "rows were inserted after this tenant's last chain entry")
        rep.unchained = int(
            store.query_rows(
                f"SELECT count() FROM {db}.events WHERE tenant = {{t:String}} AND ingest_seq > {{ct:UInt64}} "
                "AND ingest_seq > {lo:UInt64}",
                params,
            )[0][0]
        )
        if rep.unchained:
            rep.unchained_examples = [
                {"ingest_seq": int(s), "event_id": event_id}
                for s, event_id in store.query_rows(
                    f"SELECT ingest_seq, event_id FROM {db}.events WHERE tenant = {{t:String}} "
                    "AND ingest_seq > {ct:UInt64} AND ingest_seq > {lo:UInt64} ORDER BY ingest_seq LIMIT {n:UInt32}",
                    params,
                )
            ]
    return rep

"""Alert triage, event-sourced: every change is a row of ``alert_changes``.

A change names who made it (the API principal's subject), when, and what it
sets: a status, an assignee, a note, or several. NULL in a field means "not
changed by this record". The alert's current state is derived, never stored:
each field's latest non-NULL value (``open`` / no assignee when none). Rows are
never updated or deleted, so the history of an alert is its rows in order.

Like every read of the query API, these functions take the caller's tenant
scope and apply it in SQL: an alert outside the scope does not exist for them.
"""

from __future__ import annotations

import datetime as _dt
import time
from typing import Any, Optional

from .queries import ALERT_STATUSES, QueryError, Where, _check_value

__all__ = ["ALERT_STATUSES", "AlertNotFound", "record_change", "alert_history", "CHANGE_COLUMNS"]

_UTC = _dt.timezone.utc

CHANGE_COLUMNS = ("alert_id", "tenant", "changed_at", "seq", "actor", "status", "assignee", "note")
_MAX_ASSIGNEE = 200
_MAX_NOTE = 4000


class AlertNotFound(LookupError):
    """No such alert in the caller's tenants."""


def record_change(
    store: Any,
    scope: Any,
    alert_id: str,
    *,
    actor: str,
    status: Optional[str] = None,
    assignee: Optional[str] = None,
    note: Optional[str] = None,
) -> dict[str, Any]:
    """Append one change to an alert the caller may see; returns the stored change.

    ``None`` leaves a field as it is; ``assignee=""`` unassigns."""
    if status is None and assignee is None and note is None:
        raise QueryError("a change sets at least one of status, assignee or note")
    if status is not None and status not in ALERT_STATUSES:
        raise QueryError(f"status must be one of {', '.join(ALERT_STATUSES)}")
    if assignee is not None and (len(assignee) > _MAX_ASSIGNEE or any(ord(c) < 32 for c in assignee)):
        raise QueryError(f"assignee must be at most {_MAX_ASSIGNEE} characters, without control characters")
    if note is not None and (not note.strip() or len(note) > _MAX_NOTE or "\x00" in note):
        raise QueryError(f"a note is 1 to {_MAX_NOTE} characters of text")
    alert_id = _check_value("alert_id", alert_id) or ""
    where = Where(scope).add("alert_id = {alert_id:String}", alert_id=alert_id)
    found = store.query_rows(f"SELECT tenant FROM {store.database}.alerts FINAL {where.sql} LIMIT 1", where.params)
    if not found:
        raise AlertNotFound(alert_id)
    change = {
        "alert_id": alert_id,
        "tenant": found[0][0],
        "changed_at": _dt.datetime.now(_UTC),
        "seq": time.time_ns(),
        "actor": actor,
        "status": status,
        "assignee": assignee,
        "note": note,
    }
    store.client.insert(
        f"{store.database}.alert_changes", [tuple(change[c] for c in CHANGE_COLUMNS)], column_names=CHANGE_COLUMNS
    )
    return change


def alert_history(store: Any, scope: Any, alert_id: str) -> list[dict[str, Any]]:
    """Every change of an alert the caller may see, oldest first."""
    where = Where(scope).add("alert_id = {alert_id:String}", alert_id=alert_id)
    rows = store.query_rows(
        f"SELECT {', '.join(CHANGE_COLUMNS)} FROM {store.database}.alert_changes {where.sql} "
        "ORDER BY changed_at, seq LIMIT 10000",
        where.params,
    )
    history = []
    for row in rows:
        change = dict(zip(CHANGE_COLUMNS, row))
        at = change["changed_at"]
        change["changed_at"] = at.replace(tzinfo=_UTC) if at.tzinfo is None else at
        history.append(change)
    return history

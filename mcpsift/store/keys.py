"""API keys for automation: ``msk_<key id>_<secret>``, stored as hashes.

A key is shown once, when it is made (:meth:`ApiKeys.create`); the store keeps
its id, a SHA-256 of the whole key, its roles and tenant scope. The secret is
256 random bits, so a fast hash is enough (nothing to brute-force) and a
leaked ``api_keys`` table leaks no usable key. Revocation writes a new row of
the key with ``revoked_at`` set (ReplacingMergeTree by ``version``; reads go
through ``FINAL``).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from .store import Store

__all__ = ["ApiKey", "ApiKeys", "KEY_PREFIX", "new_key", "parse_key", "hash_key"]

KEY_PREFIX = "msk_"
_KEY_RE = re.compile(r"^msk_([0-9a-f]{12})_([A-Za-z0-9_-]{32,128})$")
_COLUMNS = (
    "key_id", "name", "key_hash", "roles", "tenants", "all_tenants", "created_by", "created_at", "revoked_at", "version"
)
_UTC = _dt.timezone.utc


def new_key() -> tuple[str, str]:
    """A fresh ``(key id, key)``; the key is ``msk_<12 hex>_<43 url-safe chars>``."""
    key_id = secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def parse_key(key: str) -> Optional[str]:
    """The key id of a well-formed key, else None."""
    match = _KEY_RE.match(key)
    return match.group(1) if match else None


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    """One stored key (never its secret)."""

    key_id: str
    name: str
    roles: tuple[str, ...]
    #: None: every tenant (an explicitly multi-tenant key)
    tenants: Optional[tuple[str, ...]]
    created_by: str
    created_at: _dt.datetime
    revoked_at: Optional[_dt.datetime]
    key_hash: str

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def public(self) -> dict[str, Any]:
        """What listings show: everything but the hash."""
        return {
            "key_id": self.key_id,
            "name": self.name,
            "roles": list(self.roles),
            "tenants": list(self.tenants) if self.tenants is not None else None,
            "all_tenants": self.tenants is None,
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


def _now_ms() -> _dt.datetime:
    """Now, to the millisecond the table keeps (so a made record equals its stored row)."""
    now = _dt.datetime.now(_UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _aware(value: Optional[_dt.datetime]) -> Optional[_dt.datetime]:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=_UTC)


def _of_row(row: Sequence[Any]) -> ApiKey:
    key_id, name, key_hash, roles, tenants, all_tenants, created_by, created_at, revoked_at = row
    return ApiKey(
        key_id=key_id,
        name=name,
        roles=tuple(roles),
        tenants=None if all_tenants else tuple(tenants),
        created_by=created_by,
        created_at=_aware(created_at),  # type: ignore[arg-type]
        revoked_at=_aware(revoked_at),
        key_hash=key_hash,
    )


class ApiKeys:
    """The ``api_keys`` table of a :class:`Store`."""

    def __init__(self, store: Store):
        self.store = store
        self._table = f"{store.database}.api_keys"

    def _write(self, key: ApiKey) -> None:
        self.store.client.insert(
            self._table,
            [(
                key.key_id, key.name, key.key_hash, list(key.roles), list(key.tenants or ()),
                1 if key.tenants is None else 0, key.created_by, key.created_at, key.revoked_at, time.time_ns(),
            )],
            column_names=_COLUMNS,
        )

    def create(
        self,
        roles: Sequence[str],
        tenants: Optional[Sequence[str]],
        name: str = "",
        created_by: str = "cli",
    ) -> tuple[ApiKey, str]:
        """A new key with ``roles`` over ``tenants`` (None: every tenant): the stored
        record and the key itself, which is not stored and cannot be shown again."""
        from mcpsift.api.security import ROLES

        unknown = [r for r in roles if r not in ROLES]
        if unknown or not roles:
            raise ValueError(f"unknown role {', '.join(unknown) or '(none given)'}; roles: {', '.join(ROLES)}")
        if tenants is not None and (not tenants or any(not t for t in tenants)):
            raise ValueError("give at least one non-empty tenant, or make the key explicitly all-tenant")
        key_id, key = new_key()
        record = ApiKey(
            key_id=key_id,
            name=name,
            roles=tuple(dict.fromkeys(roles)),
            tenants=tuple(dict.fromkeys(tenants)) if tenants is not None else None,
            created_by=created_by,
            created_at=_now_ms(),
            revoked_at=None,
            key_hash=hash_key(key),
        )
        self._write(record)
        return record, key

    def get(self, key_id: str) -> Optional[ApiKey]:
        rows = self.store.query_rows(
            f"SELECT {', '.join(_COLUMNS[:-1])} FROM {self._table} FINAL WHERE key_id = {{key_id:String}}",
            {"key_id": key_id},
        )
        return _of_row(rows[0]) if rows else None

    def list(self, include_revoked: bool = True) -> list[ApiKey]:
        rows = self.store.query_rows(
            f"SELECT {', '.join(_COLUMNS[:-1])} FROM {self._table} FINAL ORDER BY created_at, key_id"
        )
        keys = [_of_row(r) for r in rows]
        return keys if include_revoked else [k for k in keys if k.active]

    def count_active(self) -> int:
        rows = self.store.query_rows(f"SELECT count() FROM {self._table} FINAL WHERE revoked_at IS NULL")
        return int(rows[0][0])

    def revoke(self, key_id: str) -> Optional[ApiKey]:
        """Revoke a key (idempotent); None when no such key exists."""
        key = self.get(key_id)
        if key is None:
            return None
        if key.revoked_at is not None:
            return key
        revoked = ApiKey(**{**key.__dict__, "revoked_at": _now_ms()})
        self._write(revoked)
        return revoked

    def verify(self, presented: str) -> Optional[ApiKey]:
        """The active key ``presented`` is, or None (malformed, unknown, wrong secret or revoked)."""
        key_id = parse_key(presented)
        if key_id is None:
            return None
        key = self.get(key_id)
        # compare even when the id is unknown, so timing does not tell ids apart
        expected = key.key_hash if key is not None else "sha256:" + "0" * 64
        if not hmac.compare_digest(expected.encode(), hash_key(presented).encode()) or key is None:
            return None
        return key if key.active else None

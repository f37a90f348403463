"""Server detections: ``server.unapproved`` (spec/detections.md, "Servers").

A tenant's approved-server registry is configuration, per tenant::

    detectors:
      tenant_thresholds:
        acme:
          server.unapproved:
            approved: [crm-mcp, "https://mcp.acme.example/billing"]
            registry_file: /etc/mcpsift/acme-registry.json   # or an https:// URL

``approved`` holds server names and resource URIs (an entry containing
``://`` is a resource URI, compared after the same normalisation as
``server.resource``). ``registry_file`` is an MCP registry document in the
format of the official MCP registry (registry.modelcontextprotocol.io): one
``server.json`` object, a list of them, or a registry API list response
``{"servers": [{"server": {...}, "_meta": {...}}, ...]}`` (paged responses
fetched from a URL are followed through ``metadata.nextCursor``). It is read
once, when the detector's thresholds are validated at start-up; a file that
cannot be read or holds no server stops start-up with an error naming it.
Each server of the document approves its ``name`` (e.g.
``io.github.acme/crm``), the last segment of that name (``crm``), the
``identifier`` of each of its ``packages`` and the ``url`` of each of its
``remotes`` (``{variables}`` filled with their defaults). Servers the
registry marks ``deleted`` approve nothing.

A tenant with neither setting (the default) is not checked.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterable, Optional

from pydantic import PrivateAttr, field_validator

from mcpsift.alerts import Alert
from mcpsift.events import EVENT_TYPES
from mcpsift.uris import normalize_resource

from .base import NO_ALERTS, Detector, Params, ts

__all__ = ["DETECTORS", "ServerUnapproved", "ServerUnapprovedParams", "RegistryDocument", "load_registry"]

#: seconds to wait for a registry document fetched over https
FETCH_TIMEOUT_S = 20.0
#: pages followed at most when a registry URL answers with a paged server list
MAX_PAGES = 200

_OFFICIAL_META = "io.modelcontextprotocol.registry/official"
_VARIABLE = re.compile(r"\{([^{}]+)\}")


def _approval_key(entry: str) -> str:
    """How an approved entry (or an event's server name / resource) is compared."""
    entry = entry.strip()
    return normalize_resource(entry) if "://" in entry else entry


class RegistryDocument(str):
    """The ``registry_file`` value once loaded: the path or URL itself (a str, so
    settings show it as written) carrying the approvals read from it."""

    approved: frozenset[str]
    servers: int


def _read_source(source: str) -> list[Any]:
    """The parsed JSON document(s) at ``source`` (a path or an https URL)."""
    if source.startswith(("https://", "http://")):
        if not source.startswith("https://"):
            raise ValueError(f"MCP registry document {source}: only https:// URLs are fetched")
        documents = []
        url: Optional[str] = source
        pages = 0
        while url is not None and pages < MAX_PAGES:
            request = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "mcpsift"})
            try:
                with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_S) as response:  # noqa: S310 (https only)
                    body = response.read()
            except Exception as exc:  # URLError, HTTPError, timeouts, TLS errors
                raise ValueError(f"cannot fetch MCP registry document {url}: {exc}") from None
            document = _parse(body, url)
            documents.append(document)
            pages += 1
            cursor = None
            if isinstance(document, dict) and isinstance(document.get("metadata"), dict):
                meta = document["metadata"]
                cursor = meta.get("nextCursor") or meta.get("next_cursor")
            url = _with_cursor(source, cursor) if isinstance(cursor, str) and cursor else None
        return documents
    path = Path(source).expanduser()
    try:
        body = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read MCP registry document {source}: {exc.strerror or exc}") from None
    return [_parse(body, source)]


def _with_cursor(url: str, cursor: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if k != "cursor"]
    query.append(("cursor", cursor))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _parse(body: bytes, source: str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"MCP registry document {source} is not valid JSON: {exc}") from None


def _server_entries(document: Any) -> Iterable[tuple[dict[str, Any], Any]]:
    """(server.json object, its registry ``_meta`` or None) of every server in ``document``."""
    if isinstance(document, list):
        for item in document:
            yield from _server_entries(item)
        return
    if not isinstance(document, dict):
        return
    if isinstance(document.get("servers"), list):
        yield from _server_entries(document["servers"])
    elif isinstance(document.get("server"), dict):  # a list response's item: {"server": {...}, "_meta": {...}}
        yield document["server"], document.get("_meta")
    elif isinstance(document.get("name"), str):  # a server.json itself
        yield document, document.get("_meta")


def _deleted(server: dict[str, Any], meta: Any) -> bool:
    if server.get("status") == "deleted":
        return True
    for container in (meta, server.get("_meta")):
        if isinstance(container, dict):
            official = container.get(_OFFICIAL_META)
            if isinstance(official, dict) and official.get("status") == "deleted":
                return True
    return False


def _remote_url(remote: dict[str, Any]) -> Optional[str]:
    url = remote.get("url")
    if not isinstance(url, str) or not url:
        return None
    variables = remote.get("variables") if isinstance(remote.get("variables"), dict) else {}

    def fill(match: re.Match[str]) -> str:
        spec = variables.get(match.group(1))
        default = spec.get("default") if isinstance(spec, dict) else None
        if not isinstance(default, str) or not default:
            raise KeyError(match.group(1))
        return default

    try:
        return _VARIABLE.sub(fill, url)
    except KeyError:
        return None  # a template without a default cannot name one server


def load_registry(source: str) -> RegistryDocument:
    """Read an MCP registry document (path or https URL) into the approvals it grants.

    Raises ``ValueError`` naming ``source`` when it cannot be read or holds no server.
    """
    approved: set[str] = set()
    servers = 0
    for document in _read_source(source):
        for server, meta in _server_entries(document):
            if _deleted(server, meta):
                continue
            servers += 1
            name = server.get("name")
            if isinstance(name, str) and name:
                approved.add(name)
                approved.add(name.rsplit("/", 1)[-1])
            for package in server.get("packages") or []:
                if isinstance(package, dict) and isinstance(package.get("identifier"), str):
                    approved.add(package["identifier"])
            for remote in server.get("remotes") or []:
                if isinstance(remote, dict):
                    url = _remote_url(remote)
                    if url:
                        approved.add(_approval_key(url))
    if not servers:
        raise ValueError(
            f"MCP registry document {source} holds no server entries (expected a server.json object, "
            f'a list of them, or a registry response {{"servers": [...]}})'
        )
    loaded = RegistryDocument(source)
    loaded.approved = frozenset(approved)
    loaded.servers = servers
    return loaded


class ServerUnapprovedParams(Params):
    #: approved server names and resource URIs; None (the default) configures no list
    approved: Optional[tuple[str, ...]] = None
    #: path or https URL of an MCP registry document whose servers are approved; read once at start-up
    registry_file: Optional[str] = None
    #: what the event's server is compared with; None when the tenant configured no registry
    _approved: Optional[frozenset[str]] = PrivateAttr(default=None)

    @field_validator("registry_file")
    @classmethod
    def _load(cls, value: Optional[str]) -> Optional[str]:
        if value is None or isinstance(value, RegistryDocument):
            return value
        if not value.strip():
            raise ValueError("must be a path or an https:// URL of an MCP registry document")
        return load_registry(value.strip())

    def model_post_init(self, context: Any) -> None:
        if self.approved is None and self.registry_file is None:
            return
        keys = {_approval_key(e) for e in self.approved or () if e.strip()}
        if isinstance(self.registry_file, RegistryDocument):
            keys |= self.registry_file.approved
        self._approved = frozenset(keys)

    def approves(self, server: Any) -> bool:
        approved = self._approved
        return approved is None or server.name in approved or server.resource in approved


#: an event type no event has: subscribing to it alone means "never called"
_NO_EVENTS = frozenset({"-"})


class ServerUnapproved(Detector):
    """An event names a server that is not in its tenant's approved-server registry.

    State per (tenant, server): the UTC day (days since the epoch) last
    reported, so one unapproved server is one alert per tenant per day. A
    server is identified by its resource when the event has one (the enrich
    stage fills it from ``settings.servers``), else by its name; it is approved
    when its name or its resource is on the tenant's list.
    """

    rule_ids = ("server.unapproved",)
    severities = {"server.unapproved": "medium"}
    event_types = frozenset(EVENT_TYPES)  # any event may name a server
    key_kind = "server"
    Params = ServerUnapprovedParams

    def __init__(self, params: Optional[Params] = None, tenant_params: Optional[dict[str, Params]] = None):
        super().__init__(params, tenant_params)
        # tenant -> what it approves (None: not configured), bound once: key() runs on most events
        self._default_approved: Optional[frozenset[str]] = self.params._approved  # type: ignore[attr-defined]
        self._tenant_approved: dict[str, Optional[frozenset[str]]] = {
            tenant: p._approved for tenant, p in self.tenant_params.items()  # type: ignore[attr-defined]
        }
        if self._default_approved is None and all(a is None for a in self._tenant_approved.values()):
            self.event_types = _NO_EVENTS  # no tenant has a registry: never called

    def key(self, ev: Any) -> Optional[str]:
        server = ev.server
        if server is None:
            return None
        tenant = ev.tenant
        approved = self._tenant_approved.get(tenant, self._default_approved)
        if approved is None:
            return None  # no registry configured for this tenant
        name, resource = server.name, server.resource
        if name in approved or resource in approved:
            return None  # the common case: an approved server
        label = resource or name
        return f"{tenant}|{label}" if label else None

    def state_ttl_s(self) -> float:
        return 2 * 24 * 3600.0

    def initial_state(self) -> Any:
        return None  # the UTC day last reported

    def step(self, state: Any, ev: Any) -> tuple[Any, list[Alert]]:
        day = int(ts(ev.time) // 86400)
        if state == day:
            return state, NO_ALERTS
        server = ev.server
        label = server.resource or server.name
        params = self.params_for(ev.tenant)
        sources = []
        if params.approved is not None:
            sources.append(f"{len(params.approved)} approved entries")
        if params.registry_file is not None:
            sources.append(f"registry document {params.registry_file}")
        date = _dt.date.fromordinal(_dt.date(1970, 1, 1).toordinal() + day).isoformat()
        named = " / ".join(x for x in (f"name '{server.name}'" if server.name else "", f"resource {server.resource}" if server.resource else "") if x)
        principal = ev.principal
        who = f" by {principal.subject}" if principal is not None and principal.subject else ""
        return day, [
            self.alert(
                "server.unapproved",
                ev,
                identity=(label, date),
                title=f"Unapproved MCP server in use: {server.name or label}",
                description=(
                    f"Tenant '{ev.tenant}' used MCP server {named} ({ev.type}{who}), which is not in the tenant's "
                    f"approved-server registry ({' and '.join(sources)}). Reported once per server per UTC day "
                    f"({date})."
                ),
                attack=["T1195"],
            )
        ]


#: this family's detectors, in the order they run (registry.FAMILY_MODULES)
DETECTORS = (ServerUnapproved,)
